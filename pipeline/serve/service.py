"""The API's collaborators for one data root, composed: what each handler calls, and the coalesced event intake."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.core.config import Settings
from pipeline.serve.coalesce import Coalescer
from pipeline.serve.intake import Intake, IntakePass
from pipeline.serve.intake_lock import IntakeLock, hold_intake_lock
from pipeline.serve.models import BatchResult, EventIn
from pipeline.serve.refresh import MixRefresh
from pipeline.serve.state import Clock, ServingState
from pipeline.serve.stored_keys import StoredKeys
from pipeline.serve.user_features import UserFeatures

log = logging.getLogger(__name__)


class Service:
    """Intake (one coalesced pass at a time, under the data root's intake lock), features and refresh of one root."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.state = ServingState(settings, clock)
        self.stored_keys = StoredKeys()
        self.features = UserFeatures(self.state)
        self.refresh = MixRefresh(self.state)
        # One intake pass at a time (its read-merge-write of last-10 must not race another and lose events),
        # taking every batch that queued up meanwhile.
        self.intake: Coalescer[Intake] = Coalescer(self._ingest_together)

    def open(self) -> None:
        """Open the Feast repo, online tables and catalog now (at startup) instead of on the first request; exclusive,
        since workers starting together must not apply the Feast repo at the same time."""
        with self.exclusive():
            self.state.open()

    @contextmanager
    def exclusive(self) -> Iterator[IntakeLock]:
        """The data root's intake lock, held (see `intake_lock`)."""
        with hold_intake_lock(self.settings.home) as lock:
            yield lock

    def ingest(self, events: list[EventIn], malformed: frozenset[int] = frozenset()) -> BatchResult:
        """Validate per day, store good rows durably, quarantine bad ones, push the fresh last-10; returns when done.
        Batches arriving while another is processed are handled together in the next pass. The rows `malformed` names
        (0-based; each named a key twice) are quarantined as `malformed_line`."""
        intake = Intake.of(events, malformed)
        self.intake.submit(intake)
        return intake.answer()

    async def ingest_async(self, events: list[EventIn], malformed: frozenset[int] = frozenset()) -> BatchResult:
        """`ingest` for the event loop: the request waits for its intake pass without holding a thread."""
        intake = Intake.of(events, malformed)
        await self.intake.submit_async(intake)
        return intake.answer()

    def _ingest_together(self, intakes: list[Intake]) -> None:
        """The coalescer's flush: one intake pass over every queued batch, then one merge into last-10, both under
        the intake lock. When that pass fails, each batch gets a pass of its own, so one batch's failure is its own
        answer and never another's."""
        try:
            self._intake_pass(intakes)
        except Exception as error:
            if len(intakes) == 1:
                raise
            log.warning("an intake pass of %d batches failed (%r); each batch again in a pass of its own",
                        len(intakes), error)
            self.stored_keys = StoredKeys()  # what the failed pass noted may not all be on disk: read it back
            for intake in intakes:
                try:
                    self._intake_pass([intake])
                except Exception as alone:  # handed to that batch's request, which fails with it
                    intake.error = alone

    def _intake_pass(self, intakes: list[Intake]) -> None:
        with self.exclusive() as lock:
            state = self.state
            now = state.now()
            accepted = IntakePass(intakes, state.layout, self.stored_keys, state.lookup, now,
                                  self.settings.training.window_days).run(lock)
            if accepted:
                state.last_ten.merge(accepted, now)
