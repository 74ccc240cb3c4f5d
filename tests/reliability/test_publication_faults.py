"""Fault drills on the file publication store: `kill -9` in the middle of publishing while a reader reads, damaged
manifests and mixes files as the API and the command line meet them, and a full disk (on a tmpfs, where the machine
lets a test mount one). After each fault readers get one whole publication, `/healthz` says what is damaged, and
nothing answers 500."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from pipeline.core.config import Settings
from pipeline.core.io import read_json
from pipeline.ops import cli
from pipeline.publish.files import MANIFEST, FileStore, content_hash, date_dir, store_health
from pipeline.serve.api import create_app
from tests.helpers import AUTH, DAY, START, TOKEN, Clock

PROJECT = Path(__file__).resolve().parents[2]
KILLS = 3


# Two publications of DAY that differ in every score, and their manifests as `publish()` builds them: defined once,
# as a script, for this module and for the subprocesses below (which cannot import a test module).
SCRIPT_HELPERS = textwrap.dedent("""
    from pipeline.publish.files import content_hash
    from tests.helpers import LINEAGE, night_slots

    def manifest_of(slots, run_id):
        return {"date": "2026-11-01", "content_hash": content_hash(slots), "users": 2, "mixes": 3,
                "slots": len(slots), "lineage": {**LINEAGE, "run_id": run_id}}

    def versions():
        first = night_slots()
        return [first, first.assign(score=first["score"] - 0.25)]
""")

_shared: dict = {}
exec(SCRIPT_HELPERS, _shared)
manifest_of, versions = _shared["manifest_of"], _shared["versions"]

PUBLISHER = SCRIPT_HELPERS + textwrap.dedent("""
    import sys
    from pathlib import Path
    from pipeline.core.config import Settings
    from pipeline.publish.files import FileStore

    store, slots = FileStore(Settings(home=Path(sys.argv[1]))), versions()
    print("publishing", flush=True)
    for i in range(10**6):
        store.write(slots[0]["date"].iloc[0], slots[i % 2], manifest_of(slots[i % 2], f"run-{i}"))
""")


@pytest.mark.slow
def test_kill_9_during_publishing_while_a_reader_reads_leaves_one_whole_publication(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    store = FileStore(settings)
    known = {content_hash(v): len(v) for v in versions()}
    store.write(DAY, versions()[0], manifest_of(versions()[0], "run-first"))
    reads: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def read_all_along() -> None:
        while not stop.is_set():
            try:
                manifest, slots = store.read(DAY)
                assert manifest["content_hash"] == content_hash(slots) and len(slots) == known[manifest["content_hash"]]
                reads.append(manifest["lineage"]["run_id"])
            except BaseException as error:  # handed to the test thread
                failures.append(error)
                return

    reader = threading.Thread(target=read_all_along)
    reader.start()
    try:
        for kill in range(KILLS):
            publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(settings.home)], cwd=PROJECT,
                                         stdout=subprocess.PIPE, text=True)
            assert publisher.stdout.readline() == "publishing\n"
            time.sleep(0.2 + 0.15 * kill)  # some publications in, and the kill lands in the middle of another
            publisher.send_signal(signal.SIGKILL)
            publisher.wait()
            manifest, slots = store.read(DAY)
            assert manifest["content_hash"] == content_hash(slots) and manifest["content_hash"] in known
            assert store_health(settings) == (DAY, [])
    finally:
        stop.set()
        reader.join()
    assert not failures, failures
    assert len(set(reads)) >= 2, "the reader never saw a publication change: the drill proved nothing"


DAMAGE = {
    "empty CURRENT.json": lambda folder, mixes: (folder / MANIFEST).write_text(""),
    "truncated CURRENT.json": lambda folder, mixes: (folder / MANIFEST).write_text(
        (folder / MANIFEST).read_text()[:30]),
    "missing mixes file": lambda folder, mixes: mixes.unlink(),
    "truncated mixes file": lambda folder, mixes: mixes.write_bytes(mixes.read_bytes()[:100]),
    "empty latest.json": lambda folder, mixes: (folder.parent / "latest.json").write_text(""),
    "CURRENT.json with a null lineage": lambda folder, mixes: edit_manifest(folder, lineage=None),
    "CURRENT.json without its lineage": lambda folder, mixes: edit_manifest(folder, lineage=DELETE),
    "CURRENT.json with a number for its date": lambda folder, mixes: edit_manifest(folder, date=5),
    "CURRENT.json with a text for its slot count": lambda folder, mixes: edit_manifest(folder, slots="60"),
    "CURRENT.json naming a run id null": lambda folder, mixes: edit_manifest(
        folder, lineage={**read_json(folder / MANIFEST)["lineage"], "run_id": None}),
    "mixes file without a user_id column": lambda folder, mixes: pq.write_table(
        pq.read_table(mixes).rename_columns(["user" if c == "user_id" else c for c in pq.read_schema(mixes).names]),
        mixes),
    "mixes file with text track ids": lambda folder, mixes: pq.write_table(
        pq.read_table(mixes).set_column(pq.read_schema(mixes).get_field_index("track_id"), "track_id",
                                        pq.read_table(mixes)["track_id"].cast("string")), mixes),
    "latest.json naming a day never published": lambda folder, mixes: (folder.parent / "latest.json").write_text(
        json.dumps({"date": "2026-11-09"})),
}
DAMAGED_POINTER = {"empty latest.json", "latest.json naming a day never published"}  # the day itself reads: run-2
DELETE = object()


def edit_manifest(folder: Path, **fields: object) -> None:
    """Rewrites CURRENT.json with `fields` changed (DELETE: removed); the mixes file it names still reads."""
    manifest = read_json(folder / MANIFEST)
    manifest.update(fields)
    (folder / MANIFEST).write_text(json.dumps({k: v for k, v in manifest.items() if v is not DELETE}))


@pytest.fixture
def republished(tmp_path: Path) -> Settings:
    """DAY published twice (run-1, then run-2)."""
    settings = Settings(home=tmp_path / "home")
    store = FileStore(settings)
    for run, slots in enumerate(versions(), start=1):
        store.write(DAY, slots, manifest_of(slots, f"run-{run}"))
    return settings


@pytest.mark.parametrize("what", list(DAMAGE))
def test_a_damaged_store_is_served_from_what_still_reads_and_reported(republished: Settings, what: str, capsys,
                                                                      caplog) -> None:
    folder = date_dir(republished, DAY)
    DAMAGE[what](folder, folder / read_json(folder / MANIFEST)["mixes_file"])
    api = TestClient(create_app(republished, TOKEN, clock=Clock(START)))
    health = api.get("/healthz").json()
    assert health["status"] == "degraded" and len(health["problems"]) == 1
    answer = api.get("/v1/users/1/mixes", headers=AUTH)
    assert answer.status_code == 200 and len(answer.json()["mixes"]) == 2
    expected_run = "run-2" if what in DAMAGED_POINTER else "run-1"  # else: the version CURRENT replaced
    assert answer.json()["mixes"][0]["lineage"]["run_id"] == expected_run
    with caplog.at_level("WARNING"):
        assert cli.main(["--home", str(republished.home), "mixes", "1"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert "does not read" in caplog.text  # the command line's stderr, outside pytest


def test_a_day_with_nothing_readable_is_a_503_and_a_one_line_cli_error(republished: Settings, capsys) -> None:
    folder = date_dir(republished, DAY)
    for name in (MANIFEST, "PREVIOUS.json"):
        (folder / name).write_text("{")
    api = TestClient(create_app(republished, TOKEN, clock=Clock(START)))
    answer = api.get(f"/v1/users/1/mixes?date={DAY}", headers=AUTH)
    assert answer.status_code == 503 and str(republished.home) not in answer.text
    assert api.post("/v1/users/1/mixes/refresh", headers=AUTH).status_code == 503
    assert api.get("/healthz").json()["status"] == "degraded"
    assert cli.main(["--home", str(republished.home), "mixes", "1", "--date", DAY]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: the publication of {DAY} is damaged")


# --- disk full --------------------------------------------------------------------------------------------------

DISK_FULL = SCRIPT_HELPERS + textwrap.dedent("""
    import errno, json, sys
    from pathlib import Path
    import pandas as pd
    from pipeline.core.config import Settings
    from pipeline.publish.files import FileStore, store_health

    home = Path(sys.argv[1])
    store = FileStore(Settings(home=home))
    first, second = versions()
    store.write("2026-11-01", first, manifest_of(first, "run-1"))
    filler = home / "filler"
    with filler.open("wb", buffering=0) as fh:  # fill the disk to the last block
        try:
            while True:
                fh.write(b"\\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    refused = None
    try:
        store.write("2026-11-01", second, manifest_of(second, "run-2"))
    except OSError as error:
        refused = error.errno
    manifest, slots = store.read("2026-11-01")
    left = sorted(p.name for p in (home / "published" / "date=2026-11-01").iterdir())
    filler.unlink()
    store.write("2026-11-01", second, manifest_of(second, "run-2"))
    print(json.dumps({"refused": refused, "served": manifest["lineage"]["run_id"], "rows": len(slots),
                      "health": store_health(Settings(home=home)), "left": left,
                      "after": store.read("2026-11-01")[0]["lineage"]["run_id"]}))
""")


def tmpfs_refusal(mount_point: Path) -> str | None:
    """Why this machine cannot mount a test tmpfs (in a user and mount namespace of its own); None when it can."""
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {mount_point}"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here: {probe.stderr.strip() or probe.returncode}"


@pytest.mark.slow
def test_a_full_disk_refuses_the_new_publication_and_the_previous_one_keeps_serving(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    if (why := tmpfs_refusal(home)) is not None:
        pytest.skip(why)
    script = f"mount -t tmpfs -o size=256k tmpfs {home} && exec {sys.executable} -c \"$0\" {home}"
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, DISK_FULL],
                          cwd=PROJECT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(PROJECT)})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["refused"] is not None  # the disk was full: the write failed loudly
    assert (report["served"], report["rows"]) == ("run-1", len(versions()[0]))
    assert report["health"] == ["2026-11-01", []]  # nothing damaged: the old publication is whole
    assert not [name for name in report["left"] if name.endswith(".tmp")]  # no half-written file left behind
    assert report["after"] == "run-2"  # space again: the next publication goes through
