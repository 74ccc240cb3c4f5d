"""The layout of a data root. Every output is keyed by date or version, so reruns overwrite."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    home: Path

    # world (synthetic or loaded)
    @property
    def world(self) -> Path:
        return self.home / "world"

    @property
    def catalog(self) -> Path:
        return self.world / "catalog.parquet"

    @property
    def users(self) -> Path:
        return self.world / "users.parquet"

    @property
    def tastes(self) -> Path:
        return self.world / "tastes.parquet"

    def landing(self, day: str) -> Path:
        """Where a day's event file arrives before ingest."""
        return self.home / "landing" / "events" / f"date={day}" / "events.parquet"

    def raw_events(self, day: str) -> Path:
        return self.home / "raw" / "events" / f"date={day}"

    def exploration(self, day: str) -> Path:
        """Explore-policy events of a day, kept apart for off-policy evaluation and unbiased training."""
        return self.home / "raw" / "exploration" / f"date={day}"

    def quarantine(self, day: str) -> Path:
        return self.home / "quarantine" / "events" / f"date={day}"

    @property
    def raw_events_root(self) -> Path:
        return self.home / "raw" / "events"

    @property
    def features(self) -> Path:
        return self.home / "features"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def indexes(self) -> Path:
        return self.home / "indexes"

    @property
    def compiled_rankers(self) -> Path:
        """Node-local cache of rankers compiled to native code, keyed by model content (safe to delete)."""
        return self.home / "cache" / "compiled-rankers"

    def nightly(self, day: str) -> Path:
        return self.home / "nightly" / f"date={day}"

    @property
    def published(self) -> Path:
        return self.home / "published"

    @property
    def monitoring(self) -> Path:
        return self.home / "monitoring"
