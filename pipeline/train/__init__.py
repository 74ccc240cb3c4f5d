"""Weekly retraining: point-in-time training data, slot join, off-policy evaluation, promotion."""
