"""Stage 4, the references: what the data allow. Fisher/Cramer-Rao bounds (unbiased estimators;
also per window and per wavelength chunk), the Bayes posterior-mean reference (batched importance
sampling with the simulator) and, for files without a simulator, the bank reference.
"""
