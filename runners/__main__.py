"""``python -m runners run|sweep|status``: the command line lives in ``studies.__main__`` (it composes the
runners with the analysis' selection); this module only forwards to it under its documented name."""

import sys

from studies.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
