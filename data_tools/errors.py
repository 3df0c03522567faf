"""The one exception type of data_tools and the CLI wrapper that turns it into a one-line error."""

from __future__ import annotations

import sys
from collections.abc import Callable


class DataToolError(Exception):
    """An expected, user-facing failure (bad input, occupied output directory, ...).

    The message is one sentence; command-line entry points print it without a traceback.
    """


def run_cli(body: Callable[[], int]) -> int:
    """Run a CLI body; print a `DataToolError` as one line on stderr and return exit status 1 (130 on Ctrl-C)."""
    try:
        return body()
    except DataToolError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
