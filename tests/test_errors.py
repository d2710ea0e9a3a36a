"""The suggestion helper behind every "unknown ..." message."""

from xaikit.errors import XaikitError, suggest


def test_suggest_closest_names():
    assert suggest("vlprt", ["vlpart", "san", "clipseg"]) == "; did you mean 'vlpart'?"
    assert suggest("clip", ["clipseg", "clipsag", "cub"]) in ("; did you mean 'clipseg' or 'clipsag'?", "; did you mean 'clipsag' or 'clipseg'?")
    assert suggest("zzz", ["vlpart"]) == ""
    assert suggest("a", []) == ""


def test_deliberate_errors_exit_with_2():
    assert XaikitError.exit_code == 2
