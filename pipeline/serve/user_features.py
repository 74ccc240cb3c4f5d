"""A user's current online features as the API answers them: the live last-10 and the latest genre affinity."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.features import store as fs
from pipeline.serve.online import iso_ms
from pipeline.serve.state import ServingState


class UserFeatures:
    """GET /v1/users/{user_id}/features over one data root's online tables, as of the injected clock."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    def __call__(self, user_id: int) -> dict[str, Any]:
        """Last-10 plays younger than the TTL, and the genre affinity of the latest snapshot (None when stale)."""
        now = self.state.now()
        last_ten = self.state.last_ten
        live = last_ten.live(user_id, now)
        return {
            "user_id": user_id,
            "as_of": now.isoformat(),
            "last_interactions": {
                "ttl_seconds": int(last_ten.ttl.total_seconds()),
                "feature_ts": iso_ms(live[-1][0]) if live else None,
                "items": [{"track_id": track, "skipped": skipped, "ts": iso_ms(ms)} for ms, track, skipped in live],
            },
            "genre_affinity": self._genre_affinity(user_id, now),
        }

    def _genre_affinity(self, user_id: int, now: pd.Timestamp) -> dict[str, Any] | None:
        (stamp, values), = self.state.table(fs.USER_PROFILE).read([user_id], ("genre_affinity",))
        vector = values.get("genre_affinity")
        if vector is None or stamp is None or stamp <= now - self.state.ttl(fs.USER_PROFILE):
            return None
        return {"feature_ts": stamp.isoformat(),
                "values": dict(zip(self.state.genres, map(float, vector), strict=False))}
