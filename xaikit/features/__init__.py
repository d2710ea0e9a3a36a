"""Feature extraction and caching."""
