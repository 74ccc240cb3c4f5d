"""The API's request and response bodies: what a client may send and what it gets back, validated by pydantic."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

Scalar = bool | int | float | str | None


class EventIn(BaseModel):
    """One play event. Fields are loosely typed on purpose: the ingest rules judge them, per row."""

    model_config = ConfigDict(extra="ignore")
    user_id: Scalar = None
    track_id: Scalar = None
    ts: Scalar = Field(None, description="ISO-8601 with a UTC offset, or epoch milliseconds")
    ms_played: Scalar = None
    skipped: Scalar = None
    mix_id: Scalar = None
    position: Scalar = None
    policy: Scalar = None
    propensity: Scalar = None


class EventBatch(BaseModel):
    events: list[EventIn] = Field(min_length=1)


class RowError(BaseModel):
    index: int = Field(description="0-based position of the row in `events`")
    reasons: list[str] = Field(description="every rule the row failed (see validation.events.RULES)")


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    errors: list[RowError]
    batch: str = Field(description="content hash of the batch: names its quarantine part; a retry of the same batch "
                       "is acknowledged again and stored once")

    @classmethod
    def of(cls, reasons: list[str], digest: str) -> BatchResult:
        """One batch's answer from its rows' reasons ("" for a kept row), in row order."""
        errors = [RowError(index=i, reasons=why.split(";")) for i, why in enumerate(reasons) if why]
        return cls(accepted=len(reasons) - len(errors), rejected=len(errors), errors=errors, batch=digest)
