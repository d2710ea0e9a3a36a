"""Comparing finished ``xaikit bench`` runs: ``xaikit compare`` and :func:`xaikit.load_runs`.

- :mod:`~xaikit.compare.runs` reads and checks run directories (never writing to them);
- :mod:`~xaikit.compare.statistics` holds the paired tests (paired bootstrap, exact McNemar) and per-class accuracy;
- :mod:`~xaikit.compare.tables` builds the comparison's tables from the runs;
- :mod:`~xaikit.compare.plots` draws its PNG plots (matplotlib, the ``plot`` extra);
- :mod:`~xaikit.compare.report` renders the tables as Markdown, CSV and a standalone HTML page into a guarded folder;
- :mod:`~xaikit.compare.frame` loads runs into pandas (the ``pandas`` extra).

Nothing here is imported by ``import xaikit`` or by the command line's parser, so listing plugins
and ``--help`` stay free of torch, numpy and pandas. Nothing here imports torch either: a comparison
reads JSON and computes with numpy, so ``xaikit compare`` starts without torch's two seconds of import.
"""
