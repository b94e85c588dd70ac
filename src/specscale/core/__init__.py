"""The bottom layer: the shared vocabulary (labels, priors, splits, magnitude cells, S/N bins),
configuration, provenance, files and the machine. Imports nothing else of specscale.
"""
