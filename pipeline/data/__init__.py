"""Data: the catalog reader, the raw event store (its one owner) and ingest."""
