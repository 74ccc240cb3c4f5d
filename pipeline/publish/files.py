"""Atomic, idempotent publication of a night's mixes, and reading them back.

Where mixes go is configuration: `settings.scale_out.publish_database_url` selects Postgres
(`pipeline.publish.postgres`, one transaction per publication); empty keeps the files below. Both stores
take the same checked slots and answer the same reads, so callers never know which one serves them.

Files, per date: an immutable, content-addressed `mixes-<hash>.parquet` plus `CURRENT.json`,
the manifest naming that file and the lineage. Publishing writes the new file, then swaps the
manifest with one `os.replace`: readers see the old publication or the new one, never a mix of
both. The same slots always hash to the same file, so a rerun leaves byte-identical mixes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import pandas as pd

from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.core.io import atomic_write_json, atomic_write_parquet, frame_digest, read_json
from pipeline.core.paths import Layout
from pipeline.reranking.rules import rule_violations

log = logging.getLogger(__name__)
MANIFEST = "CURRENT.json"
LATEST = "latest.json"


class PublicationError(Exception):
    """The night's mixes break a rule; nothing was published."""


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

    def write(self, day: str, slots: pd.DataFrame, manifest: dict) -> dict:
        directory = date_dir(self.settings, day)
        mixes_file = directory / f"mixes-{manifest['content_hash']}.parquet"
        if not mixes_file.exists():
            atomic_write_parquet(slots, mixes_file)
        manifest = {**manifest, "mixes_file": mixes_file.name}
        previous = read_json(directory / MANIFEST)["mixes_file"] if (directory / MANIFEST).exists() else None
        atomic_write_json(manifest, directory / MANIFEST)
        # Keep the file just replaced: a reader that read the old manifest a moment ago can still open it.
        for stale in directory.glob("mixes-*.parquet"):
            if stale.name not in {mixes_file.name, previous}:
                stale.unlink()
        _advance_latest(self.settings, day)
        return manifest

    def latest_date(self) -> str | None:
        path = Layout(self.settings.home).published / LATEST
        return read_json(path)["date"] if path.exists() else None

    def read(self, day: str | None, user_id: int | None = None) -> tuple[dict, pd.DataFrame]:
        day = day or self.latest_date()
        if day is None:
            raise LookupError(f"nothing published under {self.settings.home}: run the dailymix_nightly DAG")
        manifest_path = date_dir(self.settings, day) / MANIFEST
        if not manifest_path.exists():
            raise LookupError(f"no mixes published for {day}")
        manifest = read_json(manifest_path)
        slots = pd.read_parquet(manifest_path.parent / manifest["mixes_file"])
        if user_id is not None:
            slots = slots.loc[slots[s.USER_ID] == user_id]
        return manifest, slots


def _advance_latest(settings: Settings, day: str) -> None:
    """Point readers without a date at the newest published day; a backfill never moves it back."""
    path = Layout(settings.home).published / LATEST
    if not path.exists() or read_json(path)["date"] <= day:
        atomic_write_json({"date": day}, path)


def latest_date(settings: Settings) -> str | None:
    return publication_store(settings).latest_date()


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
