"""`dailymix bench --compare OLD.json`: each nightly stage's CPU ms per user now against an accepted run.

A ratio above 1 is a stage that got dearer. The reports must be of the same world (catalog size, users,
backend, compiled scoring); when they are not, the comparison says so, since its ratios then mix two effects.
Ratios of CPU time still move with the machine's load, so each side's load is printed beside them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SLOWER = 1.10  # a stage more than 10% dearer is flagged
LIKE_FOR_LIKE = ("tracks", "users", "dim", "backend", "compile_ranker", "seed")


@dataclass(frozen=True)
class StageRatio:
    stage: str
    old_ms: float
    new_ms: float

    @property
    def ratio(self) -> float:
        return self.new_ms / self.old_ms if self.old_ms > 0 else float("inf")


def read_report(path: Path) -> dict[str, Any]:
    """A bench JSON report; a clear error when the file is not one."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable bench report ({error})") from error
    if "stage_ms_per_user" not in report or "total_ms_per_user" not in report:
        raise ValueError(f"{path}: not a `dailymix bench` report (no stage_ms_per_user / total_ms_per_user)")
    return report


def stage_ratios(old: dict[str, Any], new: dict[str, Any]) -> list[StageRatio]:
    """Every stage either report has (a missing stage counts 0 ms), then the end-to-end total."""
    stages = list(dict.fromkeys([*old["stage_ms_per_user"], *new["stage_ms_per_user"]]))
    rows = [StageRatio(stage, old["stage_ms_per_user"].get(stage, 0.0), new["stage_ms_per_user"].get(stage, 0.0))
            for stage in stages]
    return [*rows, StageRatio("end to end", old["total_ms_per_user"], new["total_ms_per_user"])]


def mismatched_conditions(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The world and scoring settings that differ between the two runs: {setting: (old, new)}."""
    old_config, new_config = old.get("config", {}), new.get("config", {})
    return {key: (old_config.get(key), new_config.get(key)) for key in LIKE_FOR_LIKE
            if old_config.get(key) != new_config.get(key)}


def format_comparison(old: dict[str, Any], new: dict[str, Any], old_name: str = "old") -> str:
    """A table of CPU ms per user per stage, old → new, with the ratio; dearer stages are marked."""
    lines = [f"{'stage':<20} {old_name:>10} {'now':>10} {'ratio':>7}"]
    for row in stage_ratios(old, new):
        flag = "  slower" if row.ratio > SLOWER else ""
        lines.append(f"{row.stage:<20} {row.old_ms:>10.2f} {row.new_ms:>10.2f} {row.ratio:>7.2f}{flag}")
    lines.append(f"recall@1000: {old.get('recall_at_1000', float('nan')):.3f} -> "
                 f"{new.get('recall_at_1000', float('nan')):.3f}")
    lines.append(f"load average: {_load(old)} -> {_load(new)}")
    for key, (was, now) in mismatched_conditions(old, new).items():
        lines.append(f"not like for like: {key} {was} -> {now}")
    return "\n".join(lines)


def _load(report: dict[str, Any]) -> str:
    load = report.get("conditions", {}).get("load_average")
    return "not recorded" if load is None else " / ".join(f"{value:.1f}" for value in load)
