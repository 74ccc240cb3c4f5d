"""Fault drills at the two intake doors: a batch of unencodable text among concurrent good ones (one coalesced
intake pass), and a same-named file ingested over a day's events (empty, missing a column, new rows)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipeline.core import schema as s
from pipeline.core.config import Settings, WorldConfig
from pipeline.core.paths import Layout
from pipeline.data.events import read_raw_events
from pipeline.data.ingest import IngestError, ingest_file
from pipeline.serve.api import create_app
from pipeline.sim.world import generate_world, write_world
from tests.helpers import AUTH, DAY, START, TOKEN, Clock

GOOD_BATCHES = 12


def play(user: int, track: int, minute: int, **extra) -> dict:
    return {"user_id": user, "track_id": track, "ts": f"{DAY}T10:{minute:02d}:00Z", "ms_played": 60_000,
            "skipped": False, **extra}


@pytest.mark.slow  # opens a Feast repository
def test_a_surrogate_batch_among_concurrent_good_ones_fails_nothing_but_its_own_rows(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    write_world(generate_world(WorldConfig(n_users=5, n_tracks=120, n_artists=30, history_days=1)),
                Layout(settings.home))
    app = create_app(settings, TOKEN, clock=Clock(START))
    service = app.state.service
    batches = [[play(20 + k, 1 + k, k)] for k in range(GOOD_BATCHES)]
    hostile = [play(40, 1, 59, mix_id="\ud800", policy="explore\udfff", position=1, propensity=0.5)]
    answers: dict[int, int] = {}
    with TestClient(app) as client:
        def send(k: int) -> None:
            body = json.dumps({"events": hostile if k == GOOD_BATCHES else batches[k]})  # "\\ud800" escapes
            answers[k] = client.post("/v1/events", content=body,
                                     headers={**AUTH, "content-type": "application/json"}).status_code

        threads = [threading.Thread(target=send, args=(k,)) for k in range(GOOD_BATCHES + 1)]
        with service.exclusive():  # hold the data root: every POST queues, then one pass takes them together
            passes = service.intake.flushes
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 300  # a bound on queueing, not a measured time
            while service.intake.waiting < GOOD_BATCHES and time.monotonic() < deadline:
                time.sleep(0.01)
        for thread in threads:
            thread.join(60)
        assert service.intake.flushes - passes <= 2  # the first POST's pass, then all the others in one
    assert answers == {**{k: 202 for k in range(GOOD_BATCHES)}, GOOD_BATCHES: 422}
    raw = read_raw_events(Layout(settings.home), [DAY])
    assert sorted(raw[s.USER_ID]) == list(range(20, 20 + GOOD_BATCHES))


@pytest.fixture
def landed(tmp_path: Path) -> tuple[Layout, pd.DataFrame, Path]:
    """A day's events ingested from landing/events.csv (20 rows)."""
    layout = Layout(tmp_path / "home")
    catalog = pd.DataFrame({s.TRACK_ID: range(1, 21), s.DURATION_MS: 200_000})
    landing = tmp_path / "home" / "landing" / "events.csv"
    landing.parent.mkdir(parents=True)
    landing.write_text("user_id,track_id,ts,ms_played,skipped\n"
                       + "".join(f"{i},{i},{DAY}T10:{i:02d}:00Z,1000,false\n" for i in range(1, 21)))
    ingest_file(landing, DAY, layout, catalog)
    return layout, catalog, landing


@pytest.mark.parametrize("content", ["", "user_id,track_id,ts,ms_played,skipped\n",
                                     "user_id,track_id,ts,ms_played\n1,1,2026-11-01T11:00:00Z,5\n",
                                     "user_id,track_id,ts,ms_played,skipped\n1,1,2026-11-01T11:00:00Z,5,true\n"])
def test_a_same_named_file_from_elsewhere_never_loses_the_days_events(landed, tmp_path: Path, content: str) -> None:
    layout, catalog, landing = landed
    other = tmp_path / "other" / "events.csv"
    other.parent.mkdir()
    other.write_text(content)
    with contextlib.suppress(IngestError):  # refused (a missing column): it touches nothing stored before
        ingest_file(other, DAY, layout, catalog)
    raw = read_raw_events(layout, [DAY])
    assert set(range(1, 21)) <= set(raw[s.USER_ID])  # every landed event is still there
    ingest_file(landing, DAY, layout, catalog)  # the landing file again: idempotent
    assert len(read_raw_events(layout, [DAY])) == len(raw)
