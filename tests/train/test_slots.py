"""Feedback events take policy and propensity from the slot that placed them."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.publish.files import publish
from pipeline.train.slots import attach_slots, published_slots
from tests.helpers import DAY, EXPLORE_AT, night_slots, write_plan, write_shards

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
    assert counts == {"joined": 2, "corrected": 1, "unmatched": 2, "malformed": 0}
    assert joined[s.PROPENSITY].tolist()[:2] == [0.125, 1.0]
    assert joined[s.PROPENSITY].iloc[2] == 1.0 and joined[s.PROPENSITY].iloc[4] == pytest.approx(0.2)
    assert pd.isna(joined[s.PROPENSITY].iloc[3]) and joined[s.POLICY].iloc[3] == s.POLICY_ORGANIC
    assert len(joined) == len(events) and joined[s.TRACK_ID].tolist() == events[s.TRACK_ID].tolist()


def test_stored_mix_ids_of_another_form_are_counted_and_skipped_never_read_as_paths(tmp_path) -> None:
    """Ids that name a path outside the data root, are too long for a file name, or name no real day join nothing
    and stop nothing; a well-formed id beside them still joins its slot."""
    settings = Settings(home=tmp_path / "home")
    publish(settings, write_plan(settings), write_shards(settings, night_slots()), run_id="run-1")
    outside = tmp_path / "elsewhere"
    (outside / "date=x").mkdir(parents=True)
    (outside / "date=x" / "CURRENT.json").write_text("{not a manifest")  # would raise if it were read
    hostile = [f"{DAY}/../../../elsewhere/date=x:1:0", f"{DAY}:{'1' * 300}:0", "2026-02-30:1:0", "x" * 300]
    explored = EXPLORE_AT[0]  # an exploration slot of user 1's first mix (tracks 100 + position)
    events = _events([(m, 0, 100, s.POLICY_EXPLOIT, 1.0) for m in hostile] + [(f"{DAY}:1:0", explored, 100 + explored,
                                                                               s.POLICY_EXPLORE, 0.5)])
    joined, counts = attach_slots(events, published_slots(settings, events[s.MIX_ID]))
    assert counts == {"joined": 1, "corrected": 1, "unmatched": 4, "malformed": 4}
    assert joined[s.PROPENSITY].tolist() == [1.0, 1.0, 1.0, 1.0, 0.25]  # the slot's propensity, 0.25, only where joined
