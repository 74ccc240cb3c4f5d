"""The nightly run: plan shards, then per shard compose candidates → scoring → re-ranking."""
