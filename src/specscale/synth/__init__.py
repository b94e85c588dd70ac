"""Real LTE synthesis for the emulated source (issue 21): pysme on atmosnet model atmospheres with
the Gaia-ESO line list, label draws, chunked and resumable runs, and the emulator fitted to them
(docs/synthesis.md). Sits between ``data`` and ``sim``: it imports ``sim`` (the fixed PFS
stages) and ``core``; pysme, atmosnet and torch are imported inside functions."""
