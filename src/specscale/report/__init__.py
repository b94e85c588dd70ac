"""Stage 6, the report: figures and the markdown report, from the cube alone."""
