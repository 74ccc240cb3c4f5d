"""The freshness benchmark's pure parts: the open-loop schedule, the event plan and the summary (known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.bench.freshness import BenchConfig, plan_events, planned_send_times, summarise


def test_schedule_sends_each_batch_at_its_slot() -> None:
    config = BenchConfig(rate=100, seconds=0.1, batch=4)
    assert planned_send_times(10, config).tolist() == pytest.approx([0, 0, 0, 0, .04, .04, .04, .04, .08, .08])


def test_plan_spreads_users_and_keeps_each_users_tracks_distinct() -> None:
    events = plan_events(BenchConfig(rate=30, seconds=1, users=3, probe_every=10), np.arange(100, 120))
    assert [u for u, _, _ in events[:6]] == [0, 1, 2, 0, 1, 2]
    tracks_of_user_0 = [t for u, t, _ in events if u == 0]
    assert len(set(tracks_of_user_0[-10:])) == 10  # each one findable in the user's last-10
    assert [i for i, (*_, probe) in enumerate(events) if probe] == [0, 10, 20]


def test_summary_counts_failures_and_unseen_probes_instead_of_hiding_them() -> None:
    config = BenchConfig(rate=10, seconds=0.5)
    results = [
        {"sent": 0.0, "status": 202, "post_ms": 5.0, "accepted": 0.01, "probe": True, "visible_ms": 10.0},
        {"sent": 0.1, "status": 202, "post_ms": 7.0, "accepted": 0.11, "probe": True, "visible_ms": 30.0},
        {"sent": 0.2, "status": 202, "post_ms": 9.0, "accepted": 0.25, "probe": True, "visible_ms": None},
        {"sent": 0.3, "status": 422, "detail": "bad"},
        {"sent": 0.45, "status": "ReadTimeout"},
    ]
    report = summarise(results, elapsed=0.5, config=config)
    assert (report["events"], report["accepted"], report["rejected_or_failed"], report["probed"]) == (5, 3, 2, 3)
    assert report["failures"] == {"422": 1, "ReadTimeout": 1} and report["first_failure"] == "bad"
    assert report["not_visible_within_s"]["count"] == 1
    assert report["visible_ms"] == {"p50": 20.0, "p99": 29.8, "max": 30.0}
    assert report["achieved_events_per_s"] == 12.0  # 3 accepted by t = 0.25 s
    assert report["send_lag_ms_max"] == pytest.approx(50.0)  # the last one left 50 ms after its slot (0.4 s)


@pytest.mark.parametrize("bad", [dict(store="memory"), dict(rate=0), dict(seconds=500), dict(batch=0),
                                 dict(users=3, batch=4), dict(probe_every=0)])
def test_bounds_are_enforced(bad: dict) -> None:
    with pytest.raises(ValueError):
        BenchConfig(**bad)
