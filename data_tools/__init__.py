"""data_tools: turn image folders (or zips) into webdataset tar shards, and inspect them.

Command-line entry points (each has ``--help``):

* ``python -m data_tools.shard SRC OUT``: image folder / zip to shards + ``manifest.json``.
* ``python -m data_tools.synthetic OUT``: the embedded, procedurally generated default dataset.
* ``python -m data_tools.inspect SHARDS``: counts, checksum verification and a preview grid.

Nothing happens at import.
"""
