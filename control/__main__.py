"""``python -m control``: the same command line as ``tidewater``."""

import sys

from control.cli import main

sys.exit(main())
