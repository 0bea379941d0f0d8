"""``python -m durable_ext``: the command line (see :mod:`durable_ext.cli`)."""

from __future__ import annotations

import sys

from durable_ext.cli import main

if __name__ == "__main__":
    sys.exit(main())
