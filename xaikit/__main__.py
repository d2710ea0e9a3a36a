"""``python -m xaikit`` runs the command line."""

import sys

from xaikit.cli import main

sys.exit(main())
