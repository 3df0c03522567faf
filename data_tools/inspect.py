"""``python -m data_tools.inspect SHARDS``: a thin alias of `data_tools.inspect_shards` (see there).

The module name mirrors the CLI; the implementation lives in ``inspect_shards.py`` so that nothing in
data_tools shadows the standard library's ``inspect`` for code that imports it.
"""

from __future__ import annotations

from data_tools.inspect_shards import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
