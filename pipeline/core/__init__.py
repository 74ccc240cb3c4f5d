"""Core: column names and dtypes, the mix id format, settings, paths, atomic I/O, alerts, the model registry."""
