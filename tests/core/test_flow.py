"""Flows: declared steps are checked when the flow is built; `run_flow` runs them in order, hands each the results
of the steps it follows, maps `over` lists, and skips or replaces steps by name; `Flow.run_step` runs one."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import Settings
from pipeline.core.flow import Flow, FlowRun, Step, run_flow

DAY = "2026-11-01"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path)


def _flow(calls: list[str]) -> Flow:
    def record(name: str, value):
        def run(step_run: FlowRun):
            calls.append(name)
            return value(step_run)
        return run

    return Flow("example", (
        Step("items", record("items", lambda run: [1, 2, 3])),
        Step("check", record("check", lambda run: f"checked {run.day}"), after=("items",)),
        Step("square", record("square", lambda run: run.item * run.item), after=("items", "check"), over="items"),
        Step("total", record("total", lambda run: sum(run["square"]) + run.params.get("bonus", 0)),
             after=("square",)),
    ))


def test_run_flow_runs_every_step_in_order_and_maps_over_lists(settings: Settings) -> None:
    calls: list[str] = []
    results = run_flow(_flow(calls), settings, DAY, params={"bonus": 100})
    assert calls == ["items", "check", "square", "square", "square", "total"]
    assert results == {"items": [1, 2, 3], "check": f"checked {DAY}", "square": [1, 4, 9], "total": 114}


def test_a_step_sees_only_the_steps_it_follows(settings: Settings) -> None:
    flow = Flow("leaky", (Step("first", lambda run: 1), Step("second", lambda run: 2),
                          Step("third", lambda run: run["first"], after=("second",))))
    with pytest.raises(KeyError, match="no result of step 'first'"):
        run_flow(flow, settings, DAY)


def test_skip_and_replace_keep_the_order(settings: Settings) -> None:
    calls: list[str] = []
    results = run_flow(_flow(calls), settings, DAY, skip={"check"}, replace_steps={"total": lambda run: -1})
    assert calls == ["items", "square", "square", "square"]
    assert results == {"items": [1, 2, 3], "square": [1, 4, 9], "total": -1}


def test_unknown_step_names_are_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match=r"no steps \['chekc'\]"):
        run_flow(_flow([]), settings, DAY, skip={"chekc"})
    with pytest.raises(KeyError, match="has no step 'nope'"):
        _flow([]).step("nope")


def test_run_step_runs_one_step_with_the_results_handed_over(settings: Settings) -> None:
    flow = _flow([])
    assert flow.run_step("total", settings, DAY, square=[2, 3]) == 5
    assert flow.run_step("square", settings, DAY, item=7) == 49
    assert flow.step_names == ("items", "check", "square", "total")


@pytest.mark.parametrize(("steps", "message"), [
    ((Step("a", print), Step("a", print)), "two steps are named 'a'"),
    ((Step("a", print, after=("b",)), Step("b", print)), r"follows \['b'\], which do not come before it"),
    ((Step("a", print), Step("b", print, over="a")), "maps over 'a', which it does not follow"),
])
def test_a_flow_that_cannot_run_in_order_is_refused(steps: tuple[Step, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Flow("broken", steps)
