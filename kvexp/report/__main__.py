"""`python -m kvexp.report DIR [DIR ...]`: see kvexp.report.cli."""

import sys

from .cli import main

sys.exit(main())
