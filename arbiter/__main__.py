"""``python -m arbiter {run,agent} --config FILE``: see :mod:`arbiter._cli`."""

import sys

from arbiter._cli import main

sys.exit(main())
