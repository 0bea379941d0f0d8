"""``python -m durable_ext`` and the ``durable-ext`` script: the command line (see :mod:`durable_ext.cli`).

azure-functions-durable parses ``./host.json`` when it is imported and raises a bare JSON traceback when
the file is broken. :func:`run` checks that file before anything imports azure-functions-durable, so
every command answers a broken host.json with one ``error:`` line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from durable_ext.config import read_host_json
from durable_ext.errors import ConfigError

EXIT_ERROR = 1
"""Exit code of a broken ./host.json, as of every other durable_ext error."""


def run(argv: list[str] | None = None) -> int:
    """Check ``./host.json``, then run the command line with ``argv`` and return the exit code."""
    try:
        read_host_json(Path.cwd())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    # Imported only now: the command line imports azure-functions-durable, which reads ./host.json.
    from durable_ext.cli import main  # noqa: PLC0415

    return main(argv)


if __name__ == "__main__":
    sys.exit(run())
