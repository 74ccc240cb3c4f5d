"""What the handlers of one data root share, opened once on first use: the clock, Feast's online tables, the catalog."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pandas as pd

from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.core.paths import Layout
from pipeline.features import store as fs
from pipeline.features.definitions import vocabulary
from pipeline.serve.online import LastTen
from validation.events import CatalogLookup

Clock = Callable[[], pd.Timestamp]


def utc_now() -> pd.Timestamp:
    """The production clock; everything else receives time from the app's injected clock."""
    return pd.Timestamp.now(tz="UTC")


class ServingState:
    """Settings, the injected clock, and what is slow to open (the Feast store, its online tables, the catalog),
    each opened once, on first use or by `open`."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.layout = Layout(settings.home)
        self.clock = clock
        self._opening = threading.Lock()
        self._store = None
        self._tables: dict[str, fs.OnlineTable] = {}
        self._last_ten: LastTen | None = None
        self._catalog: pd.DataFrame | None = None
        self._lookup: CatalogLookup | None = None
        self._genres: list[str] | None = None

    def now(self) -> pd.Timestamp:
        return pd.Timestamp(self.clock()).tz_convert("UTC")

    def open(self) -> None:
        """Open the Feast repo, the online tables and the catalog now instead of on the first request."""
        for view in (fs.USER_RECENT, fs.USER_PROFILE):
            self.table(view)
        _ = self.lookup, self.genres

    @property
    def store(self):
        """Opening (and applying) the Feast repo takes seconds: do it once, on first use."""
        with self._opening:
            if self._store is None:
                self._store = fs.feature_store(self.settings)
            return self._store

    def table(self, view: str) -> fs.OnlineTable:
        """The direct online access to a user view, built once (a registry lookup rebuilds it from protobuf)."""
        if view not in self._tables:
            self._tables[view] = fs.OnlineTable(self.store, view, s.USER_ID)
        return self._tables[view]

    @property
    def last_ten(self) -> LastTen:
        if self._last_ten is None:
            self._last_ten = LastTen(self.table(fs.USER_RECENT))
        return self._last_ten

    def ttl(self, view: str) -> pd.Timedelta:
        return pd.Timedelta(self.table(view).view.ttl)

    @property
    def catalog(self) -> pd.DataFrame:
        if self._catalog is None:
            self._catalog = pd.read_parquet(self.layout.catalog)
        return self._catalog

    @property
    def lookup(self) -> CatalogLookup:
        """The catalog as the row rules read it (track ids, durations), built once."""
        if self._lookup is None:
            catalog = self.catalog
            self._lookup = CatalogLookup.of(catalog[s.TRACK_ID].to_numpy(), pd.Series(
                catalog[s.DURATION_MS].to_numpy(), index=catalog[s.TRACK_ID].to_numpy()))
        return self._lookup

    @property
    def genres(self) -> list[str]:
        if self._genres is None:
            self._genres = vocabulary(self.catalog, s.GENRE)
        return self._genres
