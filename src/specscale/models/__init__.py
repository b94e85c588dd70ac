"""Stage 3, models: the estimators of log g (ridge, LightGBM, ViT, the simulator-fit oracle), their
registry and the metrics every cell is scored with.
"""
