"""``python -m distlock``: see :mod:`distlock._cli` for the commands and exit codes."""

import sys

from distlock._cli import main

if __name__ == "__main__":
    sys.exit(main())
