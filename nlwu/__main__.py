"""``python -m nlwu``: the same as the ``nlwu`` console command (``nlwu.cli``)."""

import sys

from nlwu.cli import main

sys.exit(main())
