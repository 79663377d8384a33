"""``python -m fastdiv``: the same as the ``fastdiv`` command."""

import sys

from fastdiv.cli import main

sys.exit(main())
