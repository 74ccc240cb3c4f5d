"""The serving API on a hand-built data root: auth, contracts, event intake, online freshness, TTL, refresh, limits."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.core.paths import Layout
from pipeline.data.events import read_exploration_events, read_raw_events
from pipeline.ops import cli
from pipeline.publish.files import date_dir, user_mixes
from pipeline.serve.api import create_app
from tests.helpers import AUTH, START, TOKEN, Clock

DAY = "2026-11-01"
@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock(START)


@pytest.fixture(scope="module")
def client(root: Settings, clock: Clock) -> TestClient:
    return TestClient(create_app(root, TOKEN, clock=clock))


def event(user: int, track: int, at: str, skipped: bool = False, **extra) -> dict:
    return {"user_id": user, "track_id": track, "ts": at, "ms_played": 5_000 if skipped else 60_000,
            "skipped": skipped, **extra}


# --- auth -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}])
@pytest.mark.parametrize("method,url", [("get", "/v1/users/1/mixes"), ("post", "/v1/events"),
                                        ("get", "/v1/users/1/features"), ("post", "/v1/users/1/mixes/refresh")])
def test_every_v1_endpoint_needs_the_token(client: TestClient, method: str, url: str, headers: dict) -> None:
    response = client.request(method, url, headers=headers, json={"events": [event(1, 1, f"{DAY}T10:00:00Z")]})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_healthz_is_open_and_openapi_lists_the_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "latest_published": DAY, "problems": []}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/users/{user_id}/mixes", "/v1/events", "/v1/users/{user_id}/features",
            "/v1/users/{user_id}/mixes/refresh", "/healthz"} <= set(paths)


def test_no_interactive_docs_and_every_answer_is_neither_sniffed_nor_cached(client: TestClient) -> None:
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    answers = [client.get("/healthz"), client.get("/v1/users/1/mixes"), client.get("/v1/users/1/mixes", headers=AUTH),
               client.get("/v1/users/2/mixes", headers=AUTH), client.get("/nowhere"),
               client.post("/v1/events", headers=AUTH, content=b"x" * 30_000)]
    assert [a.status_code for a in answers] == [200, 401, 200, 404, 404, 413]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"


def test_a_404_names_no_path_of_the_server(tmp_path: Path) -> None:
    home = tmp_path / "secret-place"
    empty = TestClient(create_app(Settings(home=home), TOKEN, clock=Clock(START)))
    answer = empty.get("/v1/users/1/mixes", headers=AUTH)
    assert answer.status_code == 404 and "nothing published" in answer.json()["detail"]
    assert "secret-place" not in answer.text and str(tmp_path) not in answer.text


# --- mixes ----------------------------------------------------------------------------------------------------------


def test_mixes_is_the_published_contract(client: TestClient, root: Settings) -> None:
    response = client.get("/v1/users/1/mixes", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == user_mixes(root, 1)
    assert response.json()["mixes"][0]["lineage"]["run_id"] == "run-1"
    assert client.get(f"/v1/users/1/mixes?date={DAY}", headers=AUTH).json() == user_mixes(root, 1, DAY)


@pytest.mark.parametrize("url,code", [("/v1/users/2/mixes", 404), ("/v1/users/1/mixes?date=2026-10-01", 404),
                                      ("/v1/users/1/mixes?date=..%2Fx", 422), ("/v1/users/-1/mixes", 422),
                                      ("/v1/users/99999999999999999999/mixes", 422)])
def test_mixes_bad_requests(client: TestClient, url: str, code: int) -> None:
    assert client.get(url, headers=AUTH).status_code == code


@pytest.mark.parametrize("user", ["1_0", "0_1", "%201", "+1", "1.0", "%EF%BC%91"])  # %EF%BC%91: a fullwidth 1
@pytest.mark.parametrize("endpoint", ["mixes", "features"])
def test_a_user_id_in_a_path_is_digits_only(client: TestClient, user: str, endpoint: str) -> None:
    """Never read as another user ("1_0" as 10, " 1" as 1): 422, whatever is published."""
    assert client.get(f"/v1/users/{user}/{endpoint}", headers=AUTH).status_code == 422


# --- events ---------------------------------------------------------------------------------------------------------


def test_good_batch_is_accepted_and_lands_in_the_raw_log(client: TestClient, root: Settings) -> None:
    batch = [event(4, 10, f"{DAY}T09:00:00Z"), event(4, 11, f"{DAY}T09:05:00Z", skipped=True)]
    response = client.post("/v1/events", headers=AUTH, json={"events": batch})
    assert response.status_code == 202
    assert response.json()["accepted"] == 2 and response.json()["rejected"] == 0
    raw = read_raw_events(Layout(root.home), [DAY])
    mine = raw.loc[raw[s.USER_ID] == 4]
    assert mine[s.TRACK_ID].tolist() == [10, 11] and mine[s.SKIPPED].tolist() == [False, True]
    again = client.post("/v1/events", headers=AUTH, json={"events": batch})  # a retry rewrites its own part
    assert again.status_code == 202
    assert len(read_raw_events(Layout(root.home), [DAY]).query("user_id == 4")) == 2


def test_explore_events_also_reach_the_exploration_partition(client: TestClient, root: Settings) -> None:
    slot = {"mix_id": f"{DAY}:6:0", "position": 5, "propensity": 0.02}
    batch = [event(6, 20, f"{DAY}T09:00:00Z", policy="explore", **slot),
             event(6, 21, f"{DAY}T09:04:00Z", policy="exploit", **{**slot, "position": 6, "propensity": 1.0})]
    response = client.post("/v1/events", headers=AUTH, json={"events": batch})
    assert response.status_code == 202
    explored = read_exploration_events(Layout(root.home), [DAY]).query("user_id == 6")
    assert explored[s.TRACK_ID].tolist() == [20] and explored[s.PROPENSITY].tolist() == [0.02]
    assert read_raw_events(Layout(root.home), [DAY]).query("user_id == 6")[s.TRACK_ID].tolist() == [20, 21]


def test_bad_rows_get_422_with_reasons_while_good_rows_are_kept(client: TestClient, root: Settings) -> None:
    batch = [
        event(5, 12, f"{DAY}T08:00:00Z"),  # good
        event(5, 99_999, f"{DAY}T08:01:00Z"),  # unknown track
        event(5, 13, f"{DAY}T13:00:00Z"),  # after the clock
        {"user_id": "x", "track_id": 14, "ts": "yesterday", "ms_played": -1, "skipped": "maybe"},
        event(5, 12, f"{DAY}T08:00:00Z"),  # duplicate of row 0
        event(5, 15, f"{DAY}T08:02:00Z", policy="explore"),  # no propensity / mix_id
        event(5, 16, "1970-01-02T00:00:00Z"),  # beyond the window: must not create a raw partition for 1970
    ]
    response = client.post("/v1/events", headers=AUTH, json={"events": batch})
    assert response.status_code == 422
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 6)
    reasons = {e["index"]: e["reasons"] for e in body["errors"]}
    assert reasons[1] == ["unknown_track"]
    assert reasons[2] == ["future_timestamp"]
    assert {"bad_type:user_id", "bad_type:ts", "bad_type:skipped", "negative_duration"} <= set(reasons[3])
    assert reasons[4] == ["duplicate"]
    assert set(reasons[5]) == {"bad_propensity", "missing_mix_id"}
    assert reasons[6] == ["outside_day"] and not Layout(root.home).raw_events("1970-01-02").exists()
    raw = read_raw_events(Layout(root.home), [DAY]).query("user_id == 5")
    assert raw[s.TRACK_ID].tolist() == [12]
    quarantine = pd.read_parquet(Layout(root.home).quarantine(DAY) / f"api-{body['batch']}.parquet")
    assert len(quarantine) == 6  # nothing silently dropped: every bad row is kept with its reason


def test_an_event_stored_by_an_earlier_batch_is_a_duplicate(client: TestClient, root: Settings) -> None:
    first = event(11, 20, f"{DAY}T06:00:00Z")
    assert client.post("/v1/events", headers=AUTH, json={"events": [first]}).status_code == 202
    ingested = Layout(root.home).raw_events(DAY) / "ingested-elsewhere.parquet"  # a part another process wrote
    pd.DataFrame({s.USER_ID: [11], s.TRACK_ID: [21], s.TS: [pd.Timestamp(f"{DAY}T06:01:00Z")]}).to_parquet(ingested)
    try:
        later = [first, event(11, 21, f"{DAY}T06:01:00Z"), event(11, 22, f"{DAY}T06:02:00Z")]
        body = client.post("/v1/events", headers=AUTH, json={"events": later}).json()
        assert (body["accepted"], body["rejected"]) == (1, 2)
        assert {e["index"]: e["reasons"] for e in body["errors"]} == {0: ["duplicate"], 1: ["duplicate"]}
    finally:
        ingested.unlink()


@pytest.mark.parametrize("field", s.EVENT_COLUMNS)
def test_a_lone_surrogate_in_any_field_is_a_row_reason_not_a_500(client: TestClient, root: Settings, field: str
                                                                ) -> None:
    user = 100 + s.EVENT_COLUMNS.index(field)  # a user per case: no case's good row is another's duplicate
    good = event(user, 30, f"{DAY}T07:00:00Z", policy="explore", mix_id=f"{DAY}:{user}:0", position=3,
                 propensity=0.5)
    batch = [good, {**good, s.TS: f"{DAY}T07:01:00Z", field: "\ud800"}]
    body = json.dumps({"events": batch})  # "\\ud800" in the JSON text, as a hostile client sends it
    response = client.post("/v1/events", headers={**AUTH, "content-type": "application/json"}, content=body)
    assert response.status_code == 422
    assert response.json()["accepted"] == 1 and response.json()["errors"][0]["index"] == 1
    quarantine = pd.read_parquet(Layout(root.home).quarantine(DAY) / f"api-{response.json()['batch']}.parquet")
    assert quarantine[field].tolist() == ["\\ud800"]  # kept as sent, escaped


def test_an_event_naming_a_key_twice_is_a_malformed_row_as_in_a_file(client: TestClient, root: Settings) -> None:
    """Which of two values an event holds is anyone's guess: that row only is refused (`malformed_line`, as `dailymix
    ingest` quarantines such a JSONL line) and kept in quarantine; a body naming `events` twice is refused whole."""
    good = json.dumps(event(25, 40, f"{DAY}T07:00:00Z"))
    twice = json.dumps(event(25, 41, f"{DAY}T07:01:00Z"))[:-1] + ', "track_id": 42}'
    spaced = json.dumps(event(25, 43, f"{DAY}T07:02:00Z"))[:-1] + ', " track_id ": 44}'
    headers = {**AUTH, "content-type": "application/json"}
    response = client.post("/v1/events", headers=headers, content=f'{{"events": [{good}, {twice}, {spaced}]}}')
    assert response.status_code == 422
    assert (response.json()["accepted"], response.json()["rejected"]) == (1, 2)
    assert {e["index"]: e["reasons"] for e in response.json()["errors"]} == {1: ["malformed_line"],
                                                                             2: ["malformed_line"]}
    assert read_raw_events(Layout(root.home), [DAY]).query("user_id == 25")[s.TRACK_ID].tolist() == [40]
    quarantine = pd.read_parquet(Layout(root.home).quarantine(DAY) / f"api-{response.json()['batch']}.parquet")
    assert quarantine[s.QUARANTINE_REASON].tolist() == ["malformed_line", "malformed_line"]
    last_value_only = json.dumps({"events": [event(25, 42, f"{DAY}T07:01:00Z")]})  # not a retry of the row above
    assert client.post("/v1/events", headers=headers, content=last_value_only).status_code == 202
    whole = client.post("/v1/events", headers=headers, content=f'{{"events": [{good}], "events": [{good}]}}')
    assert whole.status_code == 422 and "'events' more than once" in whole.text


def test_a_hostile_mix_id_is_refused_whatever_its_length(client: TestClient) -> None:
    for mix_id in [f"{DAY}/../../../../tmp/x:1:0", f"{DAY}:{'1' * 260}:0", "m" * 9_000]:
        batch = [event(13, 31, f"{DAY}T07:00:00Z", policy="exploit", mix_id=mix_id, position=0, propensity=1.0)]
        response = client.post("/v1/events", headers=AUTH, json={"events": batch})
        assert response.status_code == 422 and response.json()["errors"][0]["reasons"] == ["bad_type:mix_id"]


def test_future_rows_touch_no_day_but_today(client: TestClient, root: Settings) -> None:
    """Far-future times are judged for the clock's day: one batch cannot create a partition per future day."""
    future = [f"{year}-01-01T00:00:00Z" for year in range(2027, 2040)] + ["9999-12-31T23:59:59Z", "253402300799000"]
    batch = [event(14, 32, at) for at in future] + [event(14, 33, f"{DAY}T11:00:00Z")]
    partitions = Layout(root.home).quarantine(DAY).parent
    before = {p.name for p in partitions.iterdir()} if partitions.exists() else set()  # earlier tests may have run
    response = client.post("/v1/events", headers=AUTH, json={"events": batch})
    assert response.status_code == 422 and response.json()["accepted"] == 1
    reasons = {tuple(e["reasons"]) for e in response.json()["errors"]}
    assert reasons == {("future_timestamp", "outside_day"), ("bad_type:ts",)}  # the last two: past pandas' range
    created = {p.name for p in partitions.iterdir()} - before
    assert created <= {f"date={DAY}"}


def test_one_batch_failing_its_intake_pass_fails_alone(root: Settings) -> None:
    """Batches of one coalesced pass: one that breaks the pass (here rows that are not text) gets its own error;
    the others are judged, stored and answered as if it had not been there."""
    from pipeline.serve.intake import Intake
    from pipeline.serve.models import EventIn
    from pipeline.serve.service import Service

    service = Service(root, Clock(START))
    good = [Intake.of([EventIn(**event(15 + k, 34, f"{DAY}T08:0{k}:00Z"))]) for k in range(3)]
    poisoned = Intake([{s.USER_ID: 5}], "poisoned")  # not text: parsing it raises
    service._ingest_together([good[0], poisoned, good[1], good[2]])
    assert [i.answer().accepted for i in good] == [1, 1, 1]
    with pytest.raises(AttributeError):
        poisoned.answer()
    raw = read_raw_events(Layout(root.home), [DAY]).query("user_id >= 15 and user_id <= 17")
    assert sorted(raw[s.USER_ID]) == [15, 16, 17]


def test_body_limits_give_413(client: TestClient) -> None:
    too_many = [event(6, i, f"{DAY}T07:{i:02d}:00Z") for i in range(51)]
    assert client.post("/v1/events", headers=AUTH, json={"events": too_many}).status_code == 413
    huge = {"events": [event(6, 1, f"{DAY}T07:00:00Z", mix_id="x" * 30_000)]}
    assert client.post("/v1/events", headers=AUTH, json=huge).status_code == 413
    assert client.post("/v1/events", headers=AUTH, json={"events": []}).status_code == 422


# --- features, freshness, TTL ---------------------------------------------------------------------------------------


def test_a_play_is_in_last_ten_at_once_and_gone_after_24h(client: TestClient, clock: Clock) -> None:
    clock.at = START
    started = time.perf_counter()
    posted = client.post("/v1/events", headers=AUTH, json={"events": [event(3, 42, f"{DAY}T11:59:00Z")]})
    features = client.get("/v1/users/3/features", headers=AUTH).json()
    latency = time.perf_counter() - started
    print(f"\npush -> online read (POST + GET round trip): {latency * 1000:.1f} ms")
    assert posted.status_code == 202
    assert [i["track_id"] for i in features["last_interactions"]["items"]] == [42]
    assert features["last_interactions"]["feature_ts"] == "2026-11-01T11:59:00+00:00"
    assert latency < 1.0
    print(f"steady state over 20 plays: {_median_latency_ms(client, clock):.1f} ms median")
    clock.at = START + pd.Timedelta(hours=23)
    assert len(client.get("/v1/users/3/features", headers=AUTH).json()["last_interactions"]["items"]) == 1
    clock.at = START + pd.Timedelta(hours=24, minutes=1)
    assert client.get("/v1/users/3/features", headers=AUTH).json()["last_interactions"]["items"] == []
    clock.at = START


def _median_latency_ms(client: TestClient, clock: Clock) -> float:
    """POST one play, then GET features until it shows: the push -> online visibility time, 20 times."""
    took = []
    for i in range(20):
        started = time.perf_counter()
        client.post("/v1/events", headers=AUTH, json={"events": [event(30, 200 + i, f"{DAY}T11:{i:02d}:00Z")]})
        while 200 + i not in [x["track_id"] for x in
                              client.get("/v1/users/30/features", headers=AUTH).json()["last_interactions"]["items"]]:
            assert time.perf_counter() - started < 1.0
        took.append(time.perf_counter() - started)
    return float(pd.Series(took).median() * 1000)


def test_last_ten_keeps_the_newest_ten_across_batches(client: TestClient, clock: Clock) -> None:
    clock.at = START
    for first in (0, 6):
        batch = [event(7, 100 + i, f"{DAY}T10:{i:02d}:00Z") for i in range(first, first + 6)]
        assert client.post("/v1/events", headers=AUTH, json={"events": batch}).status_code == 202
    items = client.get("/v1/users/7/features", headers=AUTH).json()["last_interactions"]["items"]
    assert [i["track_id"] for i in items] == list(range(102, 112))


def test_features_include_genre_affinity_with_its_timestamp(client: TestClient, root: Settings) -> None:
    from pipeline.features import store as fs
    from pipeline.features.definitions import vocabulary

    genres = vocabulary(pd.read_parquet(Layout(root.home).catalog), s.GENRE)
    vector = [1.0 / len(genres)] * len(genres)
    profile = pd.DataFrame({s.USER_ID: [8], s.EVENT_TIMESTAMP: [pd.Timestamp(f"{DAY}T00:00:00Z")],
                            "genre_affinity": [vector], "mood_affinity": [[0.5, 0.5]], "plays": [3],
                            "skip_rate": [0.1], "completion": [0.9]})
    fs.feature_store(root).write_to_online_store(fs.USER_PROFILE, profile)
    body = client.get("/v1/users/8/features", headers=AUTH).json()
    assert body["genre_affinity"]["feature_ts"] == "2026-11-01T00:00:00+00:00"
    assert set(body["genre_affinity"]["values"]) == set(genres)
    assert client.get("/v1/users/9/features", headers=AUTH).json()["genre_affinity"] is None


class GatedClock(Clock):
    """Once armed, holds the next caller (the first intake pass reads the clock first) until `waiting()` is true."""

    def __init__(self, at: pd.Timestamp) -> None:
        super().__init__(at)
        self.waiting = None

    def __call__(self) -> pd.Timestamp:
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            deadline = time.monotonic() + 30  # a bound on waiting for the other threads, not a measured time
            while not waiting():
                assert time.monotonic() < deadline, "the other batches never queued"
                time.sleep(0.001)
        return self.at


def test_concurrent_batches_share_an_intake_pass_and_lose_no_event(root: Settings) -> None:
    """12 POSTs while a pass is held: all 11 others are handled in one pass, as if each had been sent alone."""
    clock = GatedClock(START)
    app = create_app(root, TOKEN, clock=clock)
    service = app.state.service
    shared = 60  # every batch also plays one track for this user: 12 merges of one last-10 in the same pass
    batches = [[event(40 + k, 10 + j, f"{DAY}T10:{k:02d}:0{j}Z") for j in range(3)]
               + [event(shared, 100 + k, f"{DAY}T10:{k:02d}:30Z")] for k in range(12)]
    batches[11].append(batches[10][-1])  # the same play in two batches of one pass: stored once
    answers: dict[int, tuple[int, dict, list]] = {}
    with TestClient(app) as client:
        client.post("/v1/events", headers=AUTH, json={"events": [event(70, 1, f"{DAY}T09:00:00Z")]})  # opens Feast

        def send(k: int) -> None:
            response = client.post("/v1/events", headers=AUTH, json={"events": batches[k]})
            items = client.get(f"/v1/users/{40 + k}/features", headers=AUTH).json()["last_interactions"]["items"]
            answers[k] = (response.status_code, response.json(), items)

        clock.waiting = lambda: service.intake.waiting == 11
        passes_before = service.intake.flushes
        first = threading.Thread(target=send, args=(0,))
        first.start()
        while clock.waiting is not None and service.intake.waiting == 0 and not answers:
            time.sleep(0.001)  # batch 0's pass is running (held by the clock) before the others are sent
        others = [threading.Thread(target=send, args=(k,)) for k in range(1, 12)]
        for thread in others:
            thread.start()
        for thread in [first, *others]:
            thread.join(60)
        assert service.intake.flushes - passes_before == 2
        for k in range(12):  # each batch's plays were online when its answer came
            assert [(i["track_id"], i["ts"]) for i in answers[k][2]] == [
                (10 + j, f"{DAY}T10:{k:02d}:0{j}+00:00") for j in range(3)]
        statuses = {k: answers[k][0] for k in range(12)}
        late = 11 if statuses[11] == 422 else 10  # whichever of the pair came later in the pass
        assert statuses == {k: 422 if k == late else 202 for k in range(12)}
        assert answers[late][1]["errors"] == [{"index": len(batches[late]) - 1, "reasons": ["duplicate"]}]
        raw = read_raw_events(Layout(root.home), [DAY]).query("user_id >= 40 and user_id <= 60")
        assert len(raw) == 12 * 4 and not raw.duplicated([s.USER_ID, s.TRACK_ID, s.TS]).any()
        items = client.get(f"/v1/users/{shared}/features", headers=AUTH).json()["last_interactions"]["items"]
        assert [i["track_id"] for i in items] == list(range(102, 112))  # the newest 10 of the 12
        clock.at = pd.Timestamp(f"{DAY}T10:11:30Z") + pd.Timedelta(hours=24, seconds=1)  # TTL still applies
        assert client.get(f"/v1/users/{shared}/features", headers=AUTH).json()["last_interactions"]["items"] == []


def test_one_raw_part_per_pass_and_a_retry_is_stored_once(root: Settings) -> None:
    """Batches of one pass share one durable raw part (its metadata names them); a retry of any of them, from this
    process or a fresh one (which reads the parts back), is acknowledged again without storing its rows twice, and
    stores only the rows that were rejected before and pass now."""
    import pyarrow.parquet as pq

    from pipeline.data.events import BATCHES
    from pipeline.serve.intake import Intake, batch_digest, event_text
    from pipeline.serve.models import EventIn
    from pipeline.serve.service import Service

    clock = Clock(START)
    service = Service(root, clock)
    batches = [[EventIn(**event(90 + k, 30 + j, f"{DAY}T11:0{k}:0{j}Z")) for j in range(2)] for k in range(3)]
    batches[2].append(EventIn(**event(92, 39, f"{DAY}T12:30:00Z")))  # after the clock: rejected for now
    intakes = [Intake([event_text(e) for e in b], batch_digest(b)) for b in batches]
    folder = Layout(root.home).raw_events(DAY)
    before = set(folder.iterdir()) if folder.exists() else set()
    service._ingest_together(intakes)
    assert [i.result.accepted for i in intakes] == [2, 2, 2] and intakes[2].result.errors[0].reasons == [
        "future_timestamp"]
    new, = set(folder.iterdir()) - before  # one part for the whole pass
    assert pq.read_schema(new).metadata[BATCHES] == f'[["{intakes[0].digest}", 2], ["{intakes[1].digest}", 2], ' \
        f'["{intakes[2].digest}", 2]]'.encode()

    def stored() -> list[tuple[int, int]]:
        raw = read_raw_events(Layout(root.home), [DAY]).query("user_id >= 90 and user_id <= 92")
        return sorted(zip(raw[s.USER_ID], raw[s.TRACK_ID], strict=True))

    assert stored() == [(90 + k, 30 + j) for k in range(3) for j in range(2)]
    assert service.ingest(batches[1]).accepted == 2  # a retry from this process
    clock.at = START + pd.Timedelta(hours=1)
    fresh = Service(root, clock)  # a retry after a restart: the parts tell which batch stored what
    again = fresh.ingest(batches[2])
    assert (again.accepted, again.rejected, again.batch) == (3, 0, intakes[2].digest)
    assert stored() == sorted([(90 + k, 30 + j) for k in range(3) for j in range(2)] + [(92, 39)])
    other = fresh.ingest([batches[0][0]])  # the same play in another batch is a duplicate, as before
    assert other.errors[0].reasons == ["duplicate"]


def test_two_serving_processes_neither_lose_nor_duplicate_events(root: Settings) -> None:
    """Two apps on one data root stand for `serve --workers 2`: each has its own intake passes, but a pass holds the
    root's intake lock, so no read-merge-write of last-10 overwrites the other's and the duplicate rule sees both."""
    apps = [create_app(root, TOKEN, clock=Clock(START)) for _ in range(2)]
    plays = [event(80, 150 + k, f"{DAY}T10:00:{k:02d}Z") for k in range(10)]
    batches = [[play] for play in plays] + [[plays[0], event(81, 150, f"{DAY}T10:00:00Z")]]  # plays[0] again
    answers: dict[int, int] = {}
    with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
        clients = [first, second]

        def send(k: int) -> None:
            answers[k] = clients[k % 2].post("/v1/events", headers=AUTH, json={"events": batches[k]}).status_code

        threads = [threading.Thread(target=send, args=(k,)) for k in range(len(batches))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for client in clients:  # each process sees every play, in order
            items = client.get("/v1/users/80/features", headers=AUTH).json()["last_interactions"]["items"]
            assert [i["track_id"] for i in items] == list(range(150, 160))
    assert sorted(answers.values()) == [202] * 10 + [422]  # whichever of the two copies of plays[0] came second
    raw = read_raw_events(Layout(root.home), [DAY]).query("user_id == 80 or user_id == 81")
    assert len(raw) == 11 and not raw.duplicated([s.USER_ID, s.TRACK_ID, s.TS]).any()


def test_an_intake_pass_waits_while_another_process_holds_the_data_root(root: Settings) -> None:
    from pipeline.serve.models import EventIn
    from pipeline.serve.service import Service

    holder, other = Service(root, Clock(START)), Service(root, Clock(START))  # separate lock handles, like processes
    other.open()  # the Feast repo: slow once, not what is waited for below
    done = threading.Event()

    def ingest() -> None:
        other.ingest([EventIn(**event(82, 160, f"{DAY}T10:00:00Z"))])
        done.set()

    with holder.exclusive():
        worker = threading.Thread(target=ingest)
        worker.start()
        assert not done.wait(1.0)  # blocked on the lock (a bound, not a measured time)
    worker.join(60)
    assert done.is_set()
    assert read_raw_events(Layout(root.home), [DAY]).query("user_id == 82")[s.TRACK_ID].tolist() == [160]


def test_serve_with_workers_builds_each_workers_app_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from pipeline.serve import api
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    monkeypatch.setenv("DAILYMIX_API_TOKEN", TOKEN)
    monkeypatch.setenv("DAILYMIX_HOME", "/elsewhere")
    monkeypatch.delenv(api.INSECURE_DEV, raising=False)
    assert cli.main(["--home", str(tmp_path), "serve", "--workers", "3"]) == 0
    assert calls == [("pipeline.serve.api:app_from_environment",
                      {"factory": True, "host": "127.0.0.1", "port": 8000, "workers": 3, "access_log": False})]
    worker = TestClient(api.app_from_environment())  # what each worker process runs
    assert worker.app.state.service.settings.home == tmp_path.resolve()
    assert worker.get("/v1/users/1/mixes").status_code == 401
    monkeypatch.delenv("DAILYMIX_API_TOKEN")
    with pytest.raises(RuntimeError, match="DAILYMIX_API_TOKEN"):
        api.app_from_environment()


# --- refresh --------------------------------------------------------------------------------------------------------


def test_refresh_drops_a_just_skipped_track_and_demotes_its_artist(client: TestClient, root: Settings) -> None:
    published = user_mixes(root, 1)
    manifest = date_dir(root, DAY) / "CURRENT.json"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in date_dir(root, DAY).iterdir()}
    tracks = published["mixes"][0]["tracks"]
    skipped, artist = tracks[0]["track_id"], tracks[0]["artist_id"]
    sibling = next(t["track_id"] for t in tracks[1:] if t["artist_id"] == artist)
    assert client.post("/v1/events", headers=AUTH,
                       json={"events": [event(1, skipped, f"{DAY}T11:00:00Z", skipped=True)]}).status_code == 202
    response = client.post("/v1/users/1/mixes/refresh", headers=AUTH)
    assert response.status_code == 200
    mix = response.json()["mixes"][0]
    ids = [t["track_id"] for t in mix["tracks"]]
    assert skipped not in ids and len(ids) == 29
    assert ids[-1] == sibling
    assert [t["position"] for t in mix["tracks"]] == list(range(29))
    assert response.json()["refresh"]["demoted_artist_ids"] == [artist]
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in date_dir(root, DAY).iterdir()} == before
    assert manifest.exists() and user_mixes(root, 1) == published
    assert client.post("/v1/users/2/mixes/refresh", headers=AUTH).status_code == 404


# --- serve ----------------------------------------------------------------------------------------------------------


def test_serve_refuses_without_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, access_log: calls.append((host, port)))
    monkeypatch.delenv("DAILYMIX_API_TOKEN", raising=False)
    assert cli.main(["--home", str(tmp_path), "serve"]) == 2
    assert "DAILYMIX_API_TOKEN" in capsys.readouterr().err and calls == []
    assert cli.main(["--home", str(tmp_path), "serve", "--insecure-dev", "--port", "8123"]) == 0
    monkeypatch.setenv("DAILYMIX_API_TOKEN", "t")
    assert cli.main(["--home", str(tmp_path), "serve"]) == 0
    assert calls == [("127.0.0.1", 8123), ("127.0.0.1", 8000)]


# --- the last-10 merge ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_merge_recent_is_last_interactions_of_stored_plus_new(seed: int) -> None:
    """The intake's plain-Python merge against the pandas definition the daily snapshot uses, on random histories
    with ties, repeats and rows beyond the horizon."""
    import numpy as np

    from pipeline.features.definitions import last_interactions
    from pipeline.serve.online import merge_recent

    rng = np.random.default_rng(seed)
    def plays(n: int) -> list[tuple[int, int, bool]]:
        return [(int(ms), int(t), bool(k)) for ms, t, k in
                zip(rng.integers(0, 40, n) * 1000, rng.integers(1, 6, n), rng.random(n) < 0.3, strict=True)]

    stored, new, horizon_ms = plays(int(rng.integers(0, 11))), plays(int(rng.integers(1, 15))), 8_000
    frame = pd.DataFrame([(1, pd.Timestamp(ms, unit="ms", tz="UTC"), t, k) for ms, t, k in [*stored, *new]],
                         columns=[s.USER_ID, s.TS, s.TRACK_ID, s.SKIPPED])
    frame = frame.drop_duplicates([s.USER_ID, s.TRACK_ID, s.TS])
    expected = last_interactions(frame.loc[frame[s.TS] > pd.Timestamp(horizon_ms, unit="ms", tz="UTC")])
    merged = merge_recent(stored, new, horizon_ms)
    if expected.empty:
        assert merged == []
        return
    row = expected.iloc[0]
    assert [ms for ms, *_ in merged] == row["last_ts"].tolist()
    assert [t for _, t, _ in merged] == row["last_track_ids"].tolist()
    assert [int(k) for *_, k in merged] == row["last_skipped"].tolist()
