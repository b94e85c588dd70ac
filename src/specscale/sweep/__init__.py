"""Stage 5, the sweep: the grid from the config, one cell's run, W&B tracking, agents, and the
results cube.
"""
