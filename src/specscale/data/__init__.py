"""Stage 2, datasets: simulated HDF5 stores, the sources every model reads (synthetic or the
study's files), noise drawn on read from counter-based streams, and the loaders.
"""
