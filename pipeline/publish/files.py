"""Atomic, idempotent publication of a night's mixes, and reading them back.

Where mixes go is configuration: `settings.scale_out.publish_database_url` selects Postgres
(`pipeline.publish.postgres`, one transaction per publication); empty keeps the files below. Both stores
take the same checked slots and answer the same reads, so callers never know which one serves them.

Files, per date: an immutable, content-addressed `mixes-<hash>.parquet` plus `CURRENT.json`,
the manifest naming that file and the lineage. Publishing writes the new file, then swaps the
manifest with one `os.replace`: readers see the old publication or the new one, never a mix of
both. The same slots always hash to the same file, so a rerun leaves byte-identical mixes. Every
file is fsync'd with its directory entry before the next step, so a publication survives a power cut.

A damaged store (a manifest or `latest.json` empty, truncated or lacking a field readers use or of the wrong
type, `latest.json` naming a day that was never published, a mixes file missing, cut short or without a column
readers use) never stops readers while an older publication reads: a republished day keeps the version it replaced
(`PREVIOUS.json` and its mixes file), a read without a date falls back to the newest day that reads,
each fallback is logged as a warning, and `store_health` names the damage (the API's `/healthz`).
A day with no readable version raises `DamagedPublication`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.core.io import atomic_write_json, atomic_write_parquet, frame_digest, read_json
from pipeline.core.paths import Layout
from pipeline.reranking.rules import rule_violations

log = logging.getLogger(__name__)
MANIFEST = "CURRENT.json"
PREVIOUS = "PREVIOUS.json"  # the manifest CURRENT.json replaced: the fallback while CURRENT does not read
LATEST = "latest.json"
DATE_PREFIX = "date="
UNREADABLE = (OSError, ValueError, KeyError, TypeError, pa.ArrowException)  # what a damaged file raises on reading
MANIFEST_FIELDS: dict[str, type] = {"date": str, "content_hash": str, "users": int, "mixes": int, "slots": int,
                                     "lineage": dict, "mixes_file": str}  # what readers of a manifest use
LINEAGE_FIELDS = ("model_version", "index_version", "feature_version", "run_id")


def _is_text(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


SERVED_COLUMNS = {  # the slot columns readers use, each with the test of its Arrow type
    s.USER_ID: pa.types.is_integer, s.MIX_ID: _is_text, s.MIX_INDEX: pa.types.is_integer, s.MIX_TITLE: _is_text,
    s.POSITION: pa.types.is_integer, s.TRACK_ID: pa.types.is_integer, s.ARTIST_ID: pa.types.is_integer,
    s.GENRE: _is_text, s.MOOD: _is_text, s.DISCOVERY: pa.types.is_boolean, s.POLICY: _is_text,
    s.PROPENSITY: pa.types.is_floating,
}
ABSOLUTE_PATH = re.compile(r"/[^\s'\"]+")  # kept out of messages: the API answers with them


class PublicationError(Exception):
    """The night's mixes break a rule; nothing was published."""


class DamagedPublication(LookupError):
    """No version of a day's publication reads (its manifests or mixes files are damaged)."""


def date_dir(settings: Settings, day: str) -> Path:
    return Layout(settings.home).published / f"date={day}"


def content_hash(slots: pd.DataFrame) -> str:
    """Hash of the values and the schema (names and dtypes), so a schema change is new content."""
    return frame_digest(slots)[:16]


def publish(settings: Settings, plan_path: str, shard_paths: list[str], run_id: str) -> dict:
    """Check every mix against the rules, then make the night's mixes current in one swap."""
    night = read_json(Path(plan_path))
    day = night["date"]
    slots = pd.concat([pd.read_parquet(p) for p in sorted(shard_paths)], ignore_index=True)
    slots = slots.sort_values([s.USER_ID, s.MIX_INDEX, s.POSITION], kind="stable").reset_index(drop=True)
    problems = rule_violations(slots, settings.rerank)
    if problems:
        raise PublicationError(f"{len(problems)} rule violations in the mixes of {day}; first: {problems[:5]}")
    digest = content_hash(slots)
    manifest = {
        "date": day,
        "content_hash": digest,
        "users": int(slots[s.USER_ID].nunique()),
        "mixes": int(slots[[s.USER_ID, s.MIX_INDEX]].drop_duplicates().shape[0]),
        "slots": len(slots),
        "lineage": {"model_version": night["model_version"], "index_version": night["index_version"],
                    "feature_version": night["feature_version"], "run_id": run_id},
    }
    manifest = publication_store(settings).write(day, slots, manifest)
    log.info("published %s: %d users, %d mixes (%s)", day, manifest["users"], manifest["mixes"], digest)
    return manifest


class PublicationStore(Protocol):
    def write(self, day: str, slots: pd.DataFrame, manifest: dict) -> dict: ...
    def latest_date(self) -> str | None: ...
    def read(self, day: str | None, user_id: int | None = None) -> tuple[dict, pd.DataFrame]: ...


def publication_store(settings: Settings) -> PublicationStore:
    """The configured store: Postgres when a database URL is set, else files under the data root."""
    if settings.scale_out.publish_database_url:
        from pipeline.publish.postgres import PostgresStore

        return PostgresStore(settings.scale_out.publish_database_url, settings.scale_out.publish_batch_rows)
    return FileStore(settings)


class FileStore:
    """Content-addressed Parquet per date plus an atomically swapped manifest (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = Layout(settings.home).published

    def write(self, day: str, slots: pd.DataFrame, manifest: dict) -> dict:
        directory = date_dir(self.settings, day)
        mixes_file = directory / f"mixes-{manifest['content_hash']}.parquet"
        if _parquet_problem(mixes_file) is not None:
            atomic_write_parquet(slots, mixes_file, durable=True)
        manifest = {**manifest, "mixes_file": mixes_file.name}
        previous = _readable_manifest(directory / MANIFEST)
        if previous is not None and previous["mixes_file"] != mixes_file.name:
            atomic_write_json(previous, directory / PREVIOUS, durable=True)
        atomic_write_json(manifest, directory / MANIFEST, durable=True)
        # Keep the file just replaced: a reader that read the old manifest a moment ago can still open it.
        kept = {mixes_file.name, *(m["mixes_file"] for m in [_readable_manifest(directory / PREVIOUS)] if m)}
        for stale in directory.glob("mixes-*.parquet"):
            if stale.name not in kept:
                stale.unlink()
        self._advance_latest(day)
        return manifest

    def latest_date(self) -> str | None:
        """The day readers without a date get: `latest.json`, or while it does not read, the newest day on disk."""
        try:
            return _latest_pointer(self.root / LATEST)
        except UNREADABLE as error:
            newest = next(iter(self.days()), None)
            log.warning("%s does not read (%s); the newest published day is %s", LATEST, _why(error), newest)
            return newest

    def days(self) -> list[str]:
        """The days with a publication folder, newest first."""
        folders = [p for p in self.root.glob(f"{DATE_PREFIX}*") if (p / MANIFEST).exists() or (p / PREVIOUS).exists()]
        return sorted((p.name.removeprefix(DATE_PREFIX) for p in folders), reverse=True)

    def read(self, day: str | None, user_id: int | None = None) -> tuple[dict, pd.DataFrame]:
        if day is not None:
            manifest, slots = self._read_day(day)
        else:
            manifest, slots = self._read_latest()
        if user_id is not None:
            slots = slots.loc[slots[s.USER_ID] == user_id]
        return manifest, slots

    def _read_latest(self) -> tuple[dict, pd.DataFrame]:
        latest = self.latest_date()
        if latest is None:
            raise LookupError("nothing published yet: run the dailymix_nightly DAG")
        damaged = None
        for day in [latest, *(d for d in self.days() if d < latest)]:
            try:
                return self._read_day(day)
            except DamagedPublication as error:
                damaged = damaged or error
                log.warning("%s; readers without a date fall back to an older day", error)
        raise damaged or LookupError(f"no mixes published for {latest}")

    def _read_day(self, day: str) -> tuple[dict, pd.DataFrame]:
        """The current version of `day`, or the one it replaced while the current one does not read."""
        directory = date_dir(self.settings, day)
        if not (directory / MANIFEST).exists() and not (directory / PREVIOUS).exists():
            raise LookupError(f"no mixes published for {day}")
        problems = []
        for name in (MANIFEST, PREVIOUS):
            try:
                version = _read_version(directory, name)
            except UNREADABLE as error:
                problems.append(f"{name}: {_why(error)}")
                continue
            if problems:
                log.warning("the publication of %s does not read (%s); serving the version it replaced", day,
                            problems[0])
            return version
        raise DamagedPublication(f"the publication of {day} is damaged ({'; '.join(problems)})")

    def problems(self) -> list[str]:
        """What is damaged in what readers without a date get (cheap: manifests and Parquet footers only)."""
        problems = []
        try:
            latest = _latest_pointer(self.root / LATEST)
        except UNREADABLE as error:
            latest = next(iter(self.days()), None)
            problems.append(f"{LATEST}: {_why(error)}")
        if latest is None:
            return problems
        problem = _version_problem(date_dir(self.settings, latest), MANIFEST)
        if problem is not None:
            problems.append(f"date={latest}/{problem}")
        return problems

    def _advance_latest(self, day: str) -> None:
        """Point readers without a date at the newest published day; a backfill never moves it back (a pointer
        that does not read is replaced by the newest day on disk)."""
        path = self.root / LATEST
        try:
            pointed, damaged = _latest_pointer(path), False
        except UNREADABLE:
            pointed, damaged = next(iter(self.days()), None), True
        if damaged or pointed is None or pointed <= day:
            atomic_write_json({"date": max(day, pointed or day)}, path, durable=True)


def _latest_pointer(path: Path) -> str | None:
    """The day `latest.json` names; None when there is none; raises what a damaged one raises (a pointer to a day
    without a publication folder is damaged too)."""
    if not path.exists():
        return None
    day = read_json(path)["date"]
    if s.calendar_day(day) is None:
        raise ValueError(f"not a day: {day!r}")
    folder = path.parent / f"{DATE_PREFIX}{day}"
    if not (folder / MANIFEST).exists() and not (folder / PREVIOUS).exists():
        raise ValueError(f"names {day}, which has no publication")
    return day


def _read_version(directory: Path, name: str) -> tuple[dict, pd.DataFrame]:
    """A manifest and the slots it names, checked against each other; raises what a damaged one raises."""
    manifest = _checked_manifest(read_json(directory / name), directory)
    mixes_file = manifest["mixes_file"]
    table = pq.read_table(directory / mixes_file)
    _check_columns(table.schema, mixes_file)
    slots = table.to_pandas()
    if len(slots) != manifest["slots"]:
        raise ValueError(f"{mixes_file} holds {len(slots)} slots, the manifest {manifest['slots']}")
    return manifest, slots


def _checked_manifest(manifest: object, directory: Path) -> dict:
    """`manifest` when every field readers use is there with its type (the date the folder's, the mixes file one of
    the folder's, the lineage four texts); raises ValueError or TypeError, as a damaged file does, otherwise."""
    if not isinstance(manifest, dict):
        raise TypeError(f"not a JSON object: {type(manifest).__name__}")
    for field, kind in MANIFEST_FIELDS.items():
        if field not in manifest:
            raise ValueError(f"no {field!r}")
        value = manifest[field]
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise TypeError(f"{field!r} is {value!r}, not a {'count' if kind is int else kind.__name__}")
    if manifest["date"] != directory.name.removeprefix(DATE_PREFIX):
        raise ValueError(f"'date' {manifest['date']!r} is not the day of its folder")
    mixes_file = manifest["mixes_file"]
    if Path(mixes_file).name != mixes_file or not mixes_file.startswith("mixes-"):
        raise ValueError(f"names no mixes file of its folder: {mixes_file!r}")
    lineage = manifest["lineage"]
    for field in LINEAGE_FIELDS:
        if not isinstance(lineage.get(field), str):
            raise TypeError(f"'lineage' {field!r} is {lineage.get(field)!r}, not a text")
    return manifest


def _check_columns(schema: pa.Schema, mixes_file: str) -> None:
    """Raises ValueError unless `schema` holds every column readers use, each of its kind (integer, boolean, ...)."""
    for column, is_kind in SERVED_COLUMNS.items():
        index = schema.get_field_index(column)
        if index < 0:
            raise ValueError(f"{mixes_file} has no column {column!r}")
        if not is_kind(schema.field(index).type):
            raise ValueError(f"{mixes_file} column {column!r} is {schema.field(index).type}")


def _readable_manifest(path: Path) -> dict | None:
    try:
        return _checked_manifest(read_json(path), path.parent)
    except UNREADABLE:
        return None


def _version_problem(directory: Path, name: str) -> str | None:
    """Why a version would not read (its manifest, or its mixes file's footer or columns); None when they read.
    Cheap: the slots themselves are not read."""
    try:
        manifest = _checked_manifest(read_json(directory / name), directory)
    except UNREADABLE as error:
        return f"{name}: {_why(error)}"
    try:
        _check_columns(pq.read_schema(directory / manifest["mixes_file"]), manifest["mixes_file"])
    except UNREADABLE as error:
        return f"{manifest['mixes_file']}: {_why(error)}"
    return None


def _parquet_problem(path: Path) -> str | None:
    """Why a Parquet file would not read (missing, or its footer cut off); None when its footer reads."""
    try:
        pq.read_metadata(path)
    except UNREADABLE as error:
        return _why(error)
    return None


def _why(error: BaseException) -> str:
    """One line, without the data root's path."""
    if isinstance(error, FileNotFoundError):
        return "missing"
    if isinstance(error, json.JSONDecodeError):
        return "not JSON (empty or cut short)"
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {ABSOLUTE_PATH.sub('<path>', first_line)}".rstrip(": ")


def latest_date(settings: Settings) -> str | None:
    return publication_store(settings).latest_date()


def store_health(settings: Settings) -> tuple[str | None, list[str]]:
    """The day readers without a date get, and what is damaged in the publication store, one line each (none:
    healthy). The database store's writes are transactions: its only problem is not answering."""
    store = publication_store(settings)
    try:
        latest = store.latest_date()
    except Exception as error:  # reported, not raised: this is the health check
        return None, [f"publication store: {type(error).__name__}"]
    return latest, store.problems() if isinstance(store, FileStore) else []


def read_publication(settings: Settings, day: str | None = None) -> tuple[dict, pd.DataFrame]:
    """(manifest, slots) of a date's current publication (default: the latest)."""
    return publication_store(settings).read(day)


def user_mixes(settings: Settings, user_id: int, day: str | None = None) -> dict:
    """The stable JSON contract of `dailymix mixes USER --json`."""
    manifest, mine = publication_store(settings).read(day, user_id)
    lineage = manifest["lineage"]
    mixes = []
    for (mix_id, title), tracks in mine.groupby([s.MIX_ID, s.MIX_TITLE], sort=False):
        mixes.append({
            "mix_id": mix_id,
            "title": title,
            "lineage": dict(lineage),
            "tracks": [
                {"track_id": int(t.track_id), "artist_id": int(t.artist_id), "genre": t.genre, "mood": t.mood,
                 "discovery": bool(t.discovery), "policy": t.policy, "propensity": float(t.propensity),
                 "position": int(t.position)}
                for t in tracks.sort_values(s.POSITION).itertuples()
            ],
        })
    return {"user_id": int(user_id), "date": manifest["date"], "mixes": mixes}
