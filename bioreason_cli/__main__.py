"""`python -m bioreason_cli`: the console command without the installed script."""

import sys

from bioreason_cli import main

sys.exit(main())
