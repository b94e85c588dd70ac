"""Stage 1, simulation: the PFS MR instrument, the synthetic stellar atmosphere and the observation
(noise) model.
"""
