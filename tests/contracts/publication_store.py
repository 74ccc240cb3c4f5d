"""What every `PublicationStore` promises: a read returns one whole publication, latest never moves back, and a
rerun of the same slots changes nothing.

`PublicationStoreContract` holds the tests; each store subclasses it once (`TestFileStore`, `TestPostgresStore`)
and provides two fixtures: `store`, an empty store, and `stored_slot_rows`, a function giving the slot rows the
store holds for a day (what "no duplicate rows" is counted on).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.publish.files import PublicationStore, content_hash
from tests.helpers import DAY, LINEAGE, mix_slots, night_slots

NEXT_DAY, DAY_AFTER = "2026-11-02", "2026-11-03"
NEVER_PUBLISHED = "2026-10-31"
SLOT_KEY = [s.USER_ID, s.MIX_INDEX, s.POSITION]
REWRITES = 10  # publications of one day while a reader reads it; even, so the first version is the last written


def manifest_of(slots: pd.DataFrame, run_id: str = "run-1") -> dict:
    """The manifest `publish()` builds for checked slots of one day."""
    return {
        "date": slots[s.DATE].iloc[0],
        "content_hash": content_hash(slots),
        "users": int(slots[s.USER_ID].nunique()),
        "mixes": int(slots[[s.USER_ID, s.MIX_INDEX]].drop_duplicates().shape[0]),
        "slots": len(slots),
        "lineage": {**LINEAGE, "run_id": run_id},
    }


def replacement_slots(day: str = DAY) -> pd.DataFrame:
    """Another valid publication of `day` sharing no slot with `night_slots(day)`: user 1 keeps one mix (other
    tracks), user 2 drops out, user 3 comes in. 60 slots in publication order."""
    return pd.concat([mix_slots(day, 1, 0, 300), mix_slots(day, 3, 0, 500)], ignore_index=True)


def user_slots(slots: pd.DataFrame, user: int) -> pd.DataFrame:
    return slots.loc[slots[s.USER_ID] == user].reset_index(drop=True)


class PublicationStoreContract:
    """The tests every publication store passes. Subclasses provide `store` and `stored_slot_rows`."""

    @pytest.fixture
    def store(self) -> PublicationStore:
        raise NotImplementedError("a subclass provides an empty store")

    @pytest.fixture
    def stored_slot_rows(self) -> Callable[[str], int]:
        raise NotImplementedError("a subclass provides the count of slot rows the store holds for a day")

    def publish(self, store: PublicationStore, slots: pd.DataFrame, run_id: str = "run-1") -> dict:
        return store.write(slots[s.DATE].iloc[0], slots, manifest_of(slots, run_id))

    # --- reading back -------------------------------------------------------------------------------------------

    def test_read_returns_the_written_slots_and_the_manifest_write_returned(self, store) -> None:
        slots = night_slots()
        given = manifest_of(slots)
        written = store.write(DAY, slots, given)
        assert {key: written[key] for key in given} == given  # every field it was given, unchanged
        manifest, got = store.read(DAY)
        assert manifest == written
        pd.testing.assert_frame_equal(got, slots)  # row for row, same dtypes, NaN scores of explore slots included

    def test_reading_one_user_returns_exactly_that_users_slots_with_the_days_manifest(self, store) -> None:
        slots = night_slots()
        written = self.publish(store, slots)
        for user in (1, 2):
            manifest, mine = store.read(DAY, user)
            assert manifest == written
            pd.testing.assert_frame_equal(mine.reset_index(drop=True), user_slots(slots, user))

    def test_reading_a_user_without_mixes_returns_no_slots_with_the_published_columns(self, store) -> None:
        written = self.publish(store, night_slots())
        manifest, none = store.read(DAY, 3)
        assert manifest == written
        assert none.empty
        assert none.dtypes.to_dict() == s.PUBLISHED_DTYPES and list(none.columns) == list(s.PUBLISHED_COLUMNS)

    def test_reading_without_a_day_reads_the_latest(self, store) -> None:
        self.publish(store, night_slots(DAY))
        later = replacement_slots(NEXT_DAY)
        written = self.publish(store, later)
        manifest, got = store.read(None)
        assert manifest == written and manifest["date"] == NEXT_DAY
        pd.testing.assert_frame_equal(got, later)
        pd.testing.assert_frame_equal(store.read(None, 1)[1].reset_index(drop=True), user_slots(later, 1))

    # --- days that are not there --------------------------------------------------------------------------------

    def test_an_empty_store_has_no_latest_and_every_read_raises_lookup_error(self, store) -> None:
        assert store.latest_date() is None
        for day, user in ((None, None), (DAY, None), (None, 1), (DAY, 1)):
            with pytest.raises(LookupError):
                store.read(day, user)

    def test_reading_a_day_never_published_raises_lookup_error(self, store) -> None:
        self.publish(store, night_slots())
        with pytest.raises(LookupError):
            store.read(NEVER_PUBLISHED)
        with pytest.raises(LookupError):
            store.read(NEVER_PUBLISHED, 1)

    # --- latest -------------------------------------------------------------------------------------------------

    def test_latest_never_moves_back_when_an_older_day_is_published(self, store) -> None:
        self.publish(store, night_slots(NEXT_DAY), run_id="run-next")
        assert store.latest_date() == NEXT_DAY
        backfill = replacement_slots(DAY)
        self.publish(store, backfill, run_id="run-backfill")
        assert store.latest_date() == NEXT_DAY
        assert store.read(None)[0]["date"] == NEXT_DAY
        manifest, got = store.read(DAY)  # the backfill itself is readable by its date
        assert manifest["lineage"]["run_id"] == "run-backfill"
        pd.testing.assert_frame_equal(got, backfill)
        self.publish(store, night_slots(DAY_AFTER))
        assert store.latest_date() == DAY_AFTER

    def test_republishing_the_latest_day_keeps_it_latest(self, store) -> None:
        self.publish(store, night_slots(DAY))
        self.publish(store, night_slots(NEXT_DAY))
        self.publish(store, replacement_slots(NEXT_DAY), run_id="run-2")
        assert store.latest_date() == NEXT_DAY

    # --- reruns and replacements ----------------------------------------------------------------------------------

    def test_writing_the_same_slots_twice_reads_back_the_same_without_duplicate_rows(self, store,
                                                                                     stored_slot_rows) -> None:
        slots = night_slots()
        first = self.publish(store, slots)
        once = store.read(DAY)
        assert self.publish(store, slots) == first
        manifest, twice = store.read(DAY)
        assert manifest == once[0]
        pd.testing.assert_frame_equal(twice, once[1])
        assert not twice.duplicated(SLOT_KEY).any()
        assert stored_slot_rows(DAY) == len(slots)

    def test_republishing_a_day_replaces_its_whole_publication(self, store) -> None:
        self.publish(store, night_slots(), run_id="run-1")
        new = replacement_slots()
        written = self.publish(store, new, run_id="run-2")
        manifest, got = store.read(DAY)
        assert manifest == written and manifest["lineage"]["run_id"] == "run-2"
        pd.testing.assert_frame_equal(got, new)  # user 2 and user 1's second mix are gone, not left behind
        assert store.read(DAY, 2)[1].empty

    def test_readers_during_republishing_see_one_whole_version_never_a_mix_of_both(self, store) -> None:
        old, new = night_slots(), replacement_slots()
        versions = {content_hash(old): len(old), content_hash(new): len(new)}
        self.publish(store, old)
        failures: list[BaseException] = []
        writing = threading.Event()
        done = threading.Event()

        def republish() -> None:
            try:
                writing.set()
                for i in range(REWRITES):
                    self.publish(store, (new, old)[i % 2], run_id=f"run-{i}")
            except BaseException as error:  # handed to the test thread, which fails on it
                failures.append(error)
            finally:
                done.set()

        writer = threading.Thread(target=republish)
        writer.start()
        writing.wait()
        reads = []
        while not done.is_set():
            reads.append(store.read(DAY))
        writer.join()
        assert not failures, failures
        assert len(reads) >= 2, "no read overlapped the publications: the test proved nothing"
        for manifest, slots in reads:
            digest = content_hash(slots)
            assert digest in versions, "slots that are neither publication: a mix of both"
            assert manifest["content_hash"] == digest, "the manifest of one publication with the slots of the other"
            assert len(slots) == versions[digest] and not slots.duplicated(SLOT_KEY).any()
        manifest, last = store.read(DAY)
        assert manifest["content_hash"] == content_hash(old)  # the last write wins
        pd.testing.assert_frame_equal(last, old)
