"""Publication: atomic, content-addressed, idempotent, guarded by the rules, and read back through a stable contract."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.core.io import read_json
from pipeline.publish.files import (
    MANIFEST,
    PublicationError,
    date_dir,
    latest_date,
    publish,
    read_publication,
    user_mixes,
)
from tests.helpers import DAY, DISCOVERY_AT, EXPLORE_AT, LINEAGE, mixes_files, night_slots, write_plan, write_shards


@pytest.fixture
def published(settings: Settings) -> dict:
    return publish(settings, write_plan(settings), write_shards(settings, night_slots()), run_id="airflow-run-1")


def test_read_publication_returns_sorted_slots_and_manifest_with_lineage(settings, published) -> None:
    manifest, slots = read_publication(settings, DAY)
    assert manifest == published
    assert manifest["date"] == DAY
    assert (manifest["users"], manifest["mixes"], manifest["slots"]) == (2, 3, 90)
    assert manifest["lineage"] == {**LINEAGE, "run_id": "airflow-run-1"}
    assert manifest["mixes_file"] == f"mixes-{manifest['content_hash']}.parquet"
    pd.testing.assert_frame_equal(slots, night_slots())  # sorted by user, mix, position
    assert [p.name for p in mixes_files(settings)] == [manifest["mixes_file"]]
    assert sorted(p.name for p in date_dir(settings, DAY).iterdir()) == sorted([MANIFEST, manifest["mixes_file"]])


def test_read_publication_defaults_to_latest_and_refuses_missing_days(settings, published) -> None:
    assert read_publication(settings)[0] == published
    with pytest.raises(LookupError):
        read_publication(settings, "2026-10-31")


def test_nothing_published_yet(settings) -> None:
    assert latest_date(settings) is None
    with pytest.raises(LookupError):
        read_publication(settings)


def test_republishing_the_same_shards_is_byte_identical(settings, published) -> None:
    (first,) = mixes_files(settings)
    before = first.read_bytes()
    again = publish(settings, write_plan(settings), write_shards(settings, night_slots()), run_id="airflow-run-1")
    assert again == published
    assert mixes_files(settings) == [first]
    assert first.read_bytes() == before


def test_same_slots_in_other_shards_and_a_fresh_rewrite_give_the_same_file(settings, published) -> None:
    (first,) = mixes_files(settings)
    before = first.read_bytes()
    one_shard = settings.home / "nightly" / "one.parquet"
    night_slots().iloc[::-1].to_parquet(one_shard, index=False)
    for path in date_dir(settings, DAY).iterdir():  # a rerun from scratch must write the very same bytes
        path.unlink()
    manifest = publish(settings, write_plan(settings), [str(one_shard)], run_id="airflow-run-1")
    assert manifest["content_hash"] == published["content_hash"]
    assert mixes_files(settings) == [first]
    assert first.read_bytes() == before


def test_new_content_replaces_the_pointer_keeping_only_the_file_just_replaced(settings, published) -> None:
    (first,) = mixes_files(settings)
    changed = night_slots()
    changed.loc[changed[s.USER_ID] == 2, s.SCORE] -= 0.5
    manifest = publish(settings, write_plan(settings), write_shards(settings, changed, "b"), run_id="airflow-run-2")
    assert manifest["content_hash"] != published["content_hash"]
    # A reader holding the old manifest can still open the file it names.
    assert sorted(p.name for p in mixes_files(settings)) == sorted([first.name, manifest["mixes_file"]])
    current, slots = read_publication(settings, DAY)
    assert current == manifest and current["lineage"]["run_id"] == "airflow-run-2"
    pd.testing.assert_frame_equal(slots, changed)

    changed_again = changed.assign(**{s.SCORE: changed[s.SCORE] - 0.1})
    third = publish(settings, write_plan(settings), write_shards(settings, changed_again, "c"), run_id="run-3")
    assert not first.exists()
    assert sorted(p.name for p in mixes_files(settings)) == sorted([manifest["mixes_file"], third["mixes_file"]])


def test_a_schema_change_is_new_content(settings, published) -> None:
    renamed = night_slots().rename(columns={s.SCORE: "ranker_score"})
    manifest = publish(settings, write_plan(settings), write_shards(settings, renamed, "renamed"), run_id="r2")
    assert manifest["content_hash"] != published["content_hash"]
    assert "ranker_score" in read_publication(settings, DAY)[1].columns


def test_user_mixes_json_contract(settings, published) -> None:
    payload = user_mixes(settings, 1, DAY)
    assert json.loads(json.dumps(payload)) == payload  # plain JSON types only
    assert list(payload) == ["user_id", "date", "mixes"]
    assert payload["user_id"] == 1 and type(payload["user_id"]) is int
    assert payload["date"] == DAY
    assert [m["mix_id"] for m in payload["mixes"]] == [f"{DAY}:1:0", f"{DAY}:1:1"]
    for index, mix in enumerate(payload["mixes"]):
        assert list(mix) == ["mix_id", "title", "lineage", "tracks"]
        assert mix["title"] == f"Rock · calm {index}"
        assert mix["lineage"] == {**LINEAGE, "run_id": "airflow-run-1"}
        assert [t["position"] for t in mix["tracks"]] == list(range(30))
        first_track = 100 * (index + 1)
        for track in mix["tracks"]:
            position = track["position"]
            explore = position in EXPLORE_AT
            assert track == {
                "track_id": first_track + position,
                "artist_id": 10 * (first_track + position),
                "genre": "jazz" if explore else "rock",
                "mood": "calm",
                "discovery": position in DISCOVERY_AT,
                "policy": s.POLICY_EXPLORE if explore else s.POLICY_EXPLOIT,
                "propensity": 0.25 if explore else 1.0,
                "position": position,
            }
            types = {key: type(value) for key, value in track.items()}
            assert types == {"track_id": int, "artist_id": int, "genre": str, "mood": str, "discovery": bool,
                             "policy": str, "propensity": float, "position": int}


def test_user_mixes_of_a_user_without_mixes(settings, published) -> None:
    assert user_mixes(settings, 3) == {"user_id": 3, "date": DAY, "mixes": []}


def test_a_rule_violation_publishes_nothing(settings, published) -> None:
    (current,) = mixes_files(settings)
    broken = night_slots()
    broken.loc[(broken[s.USER_ID] == 2) & broken[s.POSITION].isin([0, 1, 2]), s.ARTIST_ID] = 7  # 3 by one artist
    with pytest.raises(PublicationError, match="user 2 mix 0: more than 2 tracks by one artist"):
        publish(settings, write_plan(settings), write_shards(settings, broken, "bad"), run_id="airflow-run-2")
    assert read_json(date_dir(settings, DAY) / MANIFEST) == published
    assert mixes_files(settings) == [current]
    pd.testing.assert_frame_equal(read_publication(settings, DAY)[1], night_slots())

    later = "2026-11-02"
    with pytest.raises(PublicationError):
        publish(settings, write_plan(settings, later), write_shards(settings, broken.assign(**{s.DATE: later}), "c"),
                run_id="airflow-run-3")
    assert latest_date(settings) == DAY
    with pytest.raises(LookupError):
        read_publication(settings, later)


def test_latest_never_moves_back_on_a_backfill(settings) -> None:
    def publish_day(day: str) -> dict:
        return publish(settings, write_plan(settings, day), write_shards(settings, night_slots(day), day),
                       run_id=f"run-{day}")

    publish_day("2026-11-02")
    assert latest_date(settings) == "2026-11-02"
    publish_day("2026-11-01")  # backfill
    assert latest_date(settings) == "2026-11-02"
    assert read_publication(settings)[0]["date"] == "2026-11-02"
    assert read_publication(settings, "2026-11-01")[0]["lineage"]["run_id"] == "run-2026-11-01"
    publish_day("2026-11-03")
    assert latest_date(settings) == "2026-11-03"
    assert user_mixes(settings, 2)["date"] == "2026-11-03"


# --- durability and damage ----------------------------------------------------------------------------------------


def test_every_file_of_a_publication_and_its_folder_are_synced_to_disk(settings, monkeypatch) -> None:
    import os

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    manifest = publish(settings, write_plan(settings), write_shards(settings, night_slots()), run_id="run-1")
    files = {Path(p).name[1:].rsplit(".", 2)[0] for p in synced if p.endswith(".tmp")}  # .<name>.<random>.tmp
    assert {manifest["mixes_file"], MANIFEST, "latest.json"} <= files  # each synced before its rename
    folder = date_dir(settings, DAY)
    assert {str(folder), str(folder.parent)} <= set(synced)  # and the directory entries the renames wrote


def republished(settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """DAY published twice: (the first slots, now PREVIOUS; the second, now CURRENT)."""
    first, second = night_slots(), night_slots()
    second.loc[second[s.USER_ID] == 2, s.SCORE] -= 0.5
    publish(settings, write_plan(settings), write_shards(settings, first, "a"), run_id="run-1")
    publish(settings, write_plan(settings), write_shards(settings, second, "b"), run_id="run-2")
    return first, second


def damage(settings, what: str) -> None:
    folder = date_dir(settings, DAY)
    current = folder / read_json(folder / MANIFEST)["mixes_file"]
    if what == "empty manifest":
        (folder / MANIFEST).write_text("")
    elif what == "truncated manifest":
        (folder / MANIFEST).write_text((folder / MANIFEST).read_text()[:40])
    elif what == "missing mixes file":
        current.unlink()
    elif what == "truncated mixes file":
        current.write_bytes(current.read_bytes()[: current.stat().st_size // 2])


DAMAGE = ["empty manifest", "truncated manifest", "missing mixes file", "truncated mixes file"]


@pytest.mark.parametrize("what", DAMAGE)
def test_a_damaged_current_version_falls_back_to_the_one_it_replaced(settings, what: str, caplog) -> None:
    from pipeline.publish.files import store_health

    first, _ = republished(settings)
    damage(settings, what)
    with caplog.at_level("WARNING", logger="pipeline.publish.files"):
        manifest, slots = read_publication(settings, DAY)
    assert manifest["lineage"]["run_id"] == "run-1"
    pd.testing.assert_frame_equal(slots, first)
    assert f"the publication of {DAY} does not read" in caplog.text
    assert user_mixes(settings, 2, DAY)["mixes"][0]["tracks"][0]["track_id"] == 100
    latest, problems = store_health(settings)
    assert latest == DAY and len(problems) == 1 and problems[0].startswith(f"date={DAY}/")
    assert str(settings.home) not in problems[0]


@pytest.mark.parametrize("what", DAMAGE)
def test_a_day_without_a_readable_version_is_damaged_and_dateless_readers_get_the_day_before(settings, what: str
                                                                                             ) -> None:
    from pipeline.publish.files import DamagedPublication

    before = "2026-10-31"
    publish(settings, write_plan(settings, before), write_shards(settings, night_slots(before), before), run_id="r0")
    publish(settings, write_plan(settings), write_shards(settings, night_slots()), run_id="run-1")
    damage(settings, what)
    with pytest.raises(DamagedPublication, match=f"the publication of {DAY} is damaged") as raised:
        read_publication(settings, DAY)
    assert str(settings.home) not in str(raised.value)
    assert read_publication(settings)[0]["date"] == before
    assert latest_date(settings) == DAY  # the pointer is not moved back: the next good night repairs the day


@pytest.mark.parametrize("content", ["", '{"date": ', '{"date": "../../etc"}', "[]"])
def test_a_damaged_latest_pointer_falls_back_to_the_newest_day_on_disk_and_the_next_publication_repairs_it(
        settings, content: str) -> None:
    from pipeline.core.paths import Layout
    from pipeline.publish.files import LATEST, store_health

    publish(settings, write_plan(settings), write_shards(settings, night_slots()), run_id="run-1")
    pointer = Layout(settings.home).published / LATEST
    pointer.write_text(content)
    assert latest_date(settings) == DAY and read_publication(settings)[0]["date"] == DAY
    assert store_health(settings)[1][0].startswith(f"{LATEST}: ")
    earlier = "2026-10-31"
    publish(settings, write_plan(settings, earlier), write_shards(settings, night_slots(earlier), earlier), "r0")
    assert read_json(pointer) == {"date": DAY} and store_health(settings) == (DAY, [])
