"""`dailymix bench --compare`: per-stage ratios of two reports, known answers, and refusing what is not a report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.bench.compare import format_comparison, mismatched_conditions, read_report, stage_ratios
from pipeline.ops.cli import main


def report(stages: dict[str, float], tracks: int = 1_000_000, load: float = 1.0) -> dict:
    return {"stage_ms_per_user": stages, "total_ms_per_user": sum(stages.values()), "recall_at_1000": 0.96,
            "config": {"tracks": tracks, "users": 20_000, "backend": "annoy"},
            "conditions": {"load_average": [load, load]}}


OLD = report({"retrieval": 12.0, "scoring": 1.0})
NEW = report({"retrieval": 3.0, "scoring": 1.5})


def test_ratios_are_new_over_old_per_stage_and_end_to_end() -> None:
    ratios = {row.stage: row.ratio for row in stage_ratios(OLD, NEW)}
    assert ratios == {"retrieval": 0.25, "scoring": 1.5, "end to end": 4.5 / 13.0}


def test_a_dearer_stage_is_flagged_and_a_cheaper_one_not() -> None:
    lines = {line.split()[0]: line for line in format_comparison(OLD, NEW).splitlines()}
    assert lines["scoring"].endswith("slower") and not lines["retrieval"].endswith("slower")
    assert "load average: 1.0 / 1.0 -> 1.0 / 1.0" in format_comparison(OLD, NEW)


def test_a_stage_only_one_report_has_counts_zero_on_the_other_side() -> None:
    rows = {row.stage: row for row in stage_ratios(OLD, report({"retrieval": 12.0, "scoring": 1.0, "new": 2.0}))}
    assert rows["new"].old_ms == 0.0 and rows["new"].ratio == float("inf")


def test_reports_of_different_worlds_are_named_as_such() -> None:
    assert mismatched_conditions(OLD, report({"retrieval": 1.0}, tracks=100_000)) == {"tracks": (1_000_000, 100_000)}
    assert "not like for like: tracks 1000000 -> 100000" in format_comparison(OLD, report({"x": 1.0}, tracks=100_000))
    assert mismatched_conditions(OLD, NEW) == {}


def test_a_file_that_is_not_a_report_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"users": 3}))
    with pytest.raises(ValueError, match=r"other\.json: not a `dailymix bench` report"):
        read_report(path)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json: not a readable bench report"):
        read_report(tmp_path / "broken.json")


def test_the_command_compares_a_finished_report_without_running(tmp_path: Path, capsys) -> None:
    (tmp_path / "old.json").write_text(json.dumps(OLD))
    (tmp_path / "new.json").write_text(json.dumps(NEW))
    assert main(["bench", "--compare", str(tmp_path / "old.json"), "--report", str(tmp_path / "new.json")]) == 0
    out = capsys.readouterr().out
    assert "retrieval" in out and "0.25" in out and "1.50  slower" in out


def test_the_committed_reference_is_a_report() -> None:
    reference = read_report(Path(__file__).resolve().parents[2] / "docs" / "bench" / "reference.json")
    assert set(reference["stage_ms_per_user"]) >= {"retrieval", "feature_gathering", "scoring", "reranking"}
