"""Mix refresh: the published mixes re-ranked by the user's live skips; the published files are never modified."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.publish.files import DamagedPublication, user_mixes
from pipeline.serve.state import ServingState


class MixRefresh:
    """POST /v1/users/{user_id}/mixes/refresh over one data root, as of the injected clock."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    def __call__(self, user_id: int, day: str | None) -> dict[str, Any]:
        """The published mixes minus tracks skipped in the live last-10, with those tracks' artists last."""
        state = self.state
        payload = published_mixes(state.settings, user_id, day)
        skipped = {track for _, track, was_skipped in state.last_ten.live(user_id, state.now()) if was_skipped}
        artists = set(state.catalog.loc[state.catalog[s.TRACK_ID].isin(skipped), s.ARTIST_ID].tolist())
        for mix in payload["mixes"]:
            mix["tracks"] = rerank_tracks(mix["tracks"], skipped, artists)
        payload["refresh"] = {"as_of": state.now().isoformat(), "dropped_track_ids": sorted(skipped),
                              "demoted_artist_ids": sorted(artists)}
        return payload


def rerank_tracks(tracks: list[dict], skipped: set[int], artists: set[int]) -> list[dict]:
    """Drop skipped tracks; keep order otherwise, but move the skipped tracks' artists to the end."""
    kept = [t for t in tracks if t["track_id"] not in skipped]
    ordered = [t for t in kept if t["artist_id"] not in artists] + [t for t in kept if t["artist_id"] in artists]
    return [{**t, "published_position": t["position"], "position": i} for i, t in enumerate(ordered)]


def published_mixes(settings: Settings, user_id: int, day: str | None) -> dict[str, Any]:
    """`publish.user_mixes`, with "nothing published for this user" as a 404 and a day whose every version is
    damaged as a 503 (the store's messages name no path)."""
    try:
        payload = user_mixes(settings, user_id, day)
    except DamagedPublication as error:
        raise HTTPException(503, str(error)) from error
    except LookupError as error:
        raise HTTPException(404, str(error)) from error
    if not payload["mixes"]:
        raise HTTPException(404, f"no mixes published for user {user_id} on {payload['date']}")
    return payload
