"""Model evaluation: metrics that tell the truth (numpy, pandas and scikit-learn; no torch)."""
