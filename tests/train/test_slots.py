"""Feedback events take policy and propensity from the slot that placed them."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.train.slots import attach_slots

SLOTS = pd.DataFrame({
    s.MIX_ID: ["2026-11-01:7:0"] * 3,
    s.POSITION: [0, 1, 5],
    s.TRACK_ID: [10, 11, 12],
    s.POLICY: [s.POLICY_EXPLOIT, s.POLICY_EXPLOIT, s.POLICY_EXPLORE],
    s.PROPENSITY: [1.0, 1.0, 0.125],
})


def _events(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[s.MIX_ID, s.POSITION, s.TRACK_ID, s.POLICY, s.PROPENSITY])
    return frame.astype({s.MIX_ID: "string", s.POSITION: "Int64", s.POLICY: "string", s.PROPENSITY: "float64"})


def test_slot_values_win_and_every_case_is_counted() -> None:
    events = _events([
        ("2026-11-01:7:0", 5, 12, s.POLICY_EXPLORE, 0.5),     # client reported a wrong propensity
        ("2026-11-01:7:0", 0, 10, s.POLICY_EXPLOIT, 1.0),     # agrees with its slot
        ("2026-11-01:7:0", 1, 99, s.POLICY_EXPLOIT, 1.0),     # another track at that slot: no join
        (None, None, 40, s.POLICY_ORGANIC, None),             # organic: nothing to join
        ("2026-11-02:7:0", 3, 13, s.POLICY_EXPLORE, 0.2),     # mix not published here
    ])
    joined, counts = attach_slots(events, SLOTS)
    assert counts == {"joined": 2, "corrected": 1, "unmatched": 2}
    assert joined[s.PROPENSITY].tolist()[:2] == [0.125, 1.0]
    assert joined[s.PROPENSITY].iloc[2] == 1.0 and joined[s.PROPENSITY].iloc[4] == pytest.approx(0.2)
    assert pd.isna(joined[s.PROPENSITY].iloc[3]) and joined[s.POLICY].iloc[3] == s.POLICY_ORGANIC
    assert len(joined) == len(events) and joined[s.TRACK_ID].tolist() == events[s.TRACK_ID].tolist()
