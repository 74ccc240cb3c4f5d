"""Join feedback events back to the published slot that placed them, so every mix-driven play carries the
policy and propensity the re-ranker actually computed (the slot is the source of truth, not the client).

A mix id is `<date>:<user>:<mix index>` (`nightly`), so the publication to join is named by the id itself, as
`schema.mix_day` reads it: no path is built from event text. An event whose stored mix id has another form (written
before intake checked the form, or by hand) is counted as `malformed` and keeps its own values; it never stops a run.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.publish.files import read_publication

log = logging.getLogger(__name__)
SLOT_KEY = [s.MIX_ID, s.POSITION]


def published_slots(settings: Settings, mix_ids: pd.Series) -> pd.DataFrame:
    """(mix_id, position, track_id, policy, propensity) of every publication the well-formed mix ids name."""
    days = s.mix_days(mix_ids.dropna().unique())
    frames = []
    for day in days:
        try:
            _, slots = read_publication(settings, day)
        except LookupError:
            continue  # mixes not published by this installation (or pruned): events keep their own values
        frames.append(slots[[*SLOT_KEY, s.TRACK_ID, s.POLICY, s.PROPENSITY]])
    if not frames:
        return pd.DataFrame({s.MIX_ID: pd.Series(dtype="string"), s.POSITION: pd.Series(dtype="Int64"),
                             s.TRACK_ID: pd.Series(dtype="int64"), s.POLICY: pd.Series(dtype="string"),
                             s.PROPENSITY: pd.Series(dtype="float64")})
    return pd.concat(frames, ignore_index=True)


def attach_slots(events: pd.DataFrame, slots: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Events with policy and propensity taken from their slot where (mix_id, position, track) matches.

    Returns the events (same rows, same order) and counts: `joined` (slot found), `corrected` (the event
    reported another policy or propensity than its slot), `unmatched` (a mix-driven event without a slot),
    `malformed` (a mix id `schema.mix_day` does not read: never joined).
    """
    keyed = slots.astype({s.MIX_ID: "string", s.POSITION: "Int64"}).rename(
        columns={s.POLICY: "_slot_policy", s.PROPENSITY: "_slot_propensity", s.TRACK_ID: "_slot_track"})
    merged = events.merge(keyed.drop_duplicates(SLOT_KEY), on=SLOT_KEY, how="left")
    malformed = malformed_mix_ids(events[s.MIX_ID])
    found = merged["_slot_track"].notna() & (merged["_slot_track"] == merged[s.TRACK_ID])
    found = found.fillna(False).to_numpy(dtype=bool) & ~malformed
    differs = found & ((merged[s.POLICY] != merged["_slot_policy"]).fillna(True).to_numpy(dtype=bool)
                       | ~((merged[s.PROPENSITY] - merged["_slot_propensity"]).abs() < 1e-9).fillna(False)
                       .to_numpy(dtype=bool))
    out = events.copy()
    out.loc[found, s.POLICY] = merged.loc[found, "_slot_policy"].to_numpy()
    out.loc[found, s.PROPENSITY] = merged.loc[found, "_slot_propensity"].to_numpy()
    mix_driven = (events[s.POLICY] != s.POLICY_ORGANIC).fillna(False).to_numpy(dtype=bool)
    counts = {"joined": int(found.sum()), "corrected": int(differs.sum()),
              "unmatched": int((mix_driven & ~found).sum()), "malformed": int(malformed.sum())}
    if counts["corrected"] or counts["unmatched"] or counts["malformed"]:
        log.warning("slot join: %s", counts)
    return out, counts


def malformed_mix_ids(mix_ids: pd.Series) -> np.ndarray:
    """Which of the ids are present but not of the one mix id form (`schema.mix_day`)."""
    bad = [m for m in mix_ids.dropna().unique() if s.mix_day(m) is None]
    return mix_ids.isin(bad).fillna(False).to_numpy(dtype=bool)
