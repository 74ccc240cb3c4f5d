"""Flows written once: each flow names its steps, in order, once; its DAG and the closed-loop simulation both run them.

A `Step` is a name (the task id of the DAG task that runs it), the function it runs and the earlier steps it follows
(that task's upstream tasks). A step reads what it needs from its `FlowRun`: the settings, the run's day, id and
params, and the results of the steps it follows. A DAG task runs one step with `Flow.run_step`, handing over its
upstream results by step name; `run_flow` runs every step in order in one process. A mapped step (`over`) runs once
per item of an earlier step's list result: a mapped task per item in Airflow, a loop in `run_flow`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.core.config import Settings


@dataclass(frozen=True)
class FlowRun:
    """What a step sees: the run's settings, day, id and params, the results of the steps it follows, its item."""

    settings: Settings
    day: str
    run_id: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    results: Mapping[str, Any] = field(default_factory=dict)
    item: Any = None

    def __getitem__(self, step: str) -> Any:
        """The result of an earlier step this one follows."""
        if step not in self.results:
            raise KeyError(f"no result of step {step!r} in this run (it has {sorted(self.results)})")
        return self.results[step]


@dataclass(frozen=True)
class Step:
    """One step: its name (the DAG's task id), what it runs, the steps it follows, and the list it maps over."""

    name: str
    run: Callable[[FlowRun], Any]
    after: tuple[str, ...] = ()
    over: str | None = None  # an earlier step in `after` whose result is a list: `run` is called once per item


@dataclass(frozen=True)
class Flow:
    """A flow's steps in the order they run; `name` is the DAG that runs it."""

    name: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        earlier: set[str] = set()
        for step in self.steps:
            if step.name in earlier:
                raise ValueError(f"{self.name}: two steps are named {step.name!r}")
            later = [name for name in step.after if name not in earlier]
            if later:
                raise ValueError(f"{self.name}.{step.name} follows {later}, which do not come before it")
            if step.over is not None and step.over not in step.after:
                raise ValueError(f"{self.name}.{step.name} maps over {step.over!r}, which it does not follow")
            earlier.add(step.name)

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps)

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"{self.name} has no step {name!r}; its steps: {list(self.step_names)}")

    def run_step(self, name: str, settings: Settings, day: str, *, run_id: str = "",
                 params: Mapping[str, Any] | None = None, item: Any = None, **results: Any) -> Any:
        """Run one step (one item of it, if mapped) with the results of the steps it follows, by step name."""
        return self.step(name).run(FlowRun(settings, day, run_id, dict(params or {}), results, item))


def run_flow(flow: Flow, settings: Settings, day: str, *, run_id: str = "", params: Mapping[str, Any] | None = None,
             skip: Collection[str] = (), replace_steps: Mapping[str, Callable[[FlowRun], Any]] | None = None
             ) -> dict[str, Any]:
    """Run every step of `flow` in order, in this process; returns each step's result by step name.

    `skip` leaves steps out (a step following a skipped one does not get its result); `replace_steps` runs another
    function in a step's place, which keeps its name, position and inputs.
    """
    replacements = dict(replace_steps or {})
    unknown = sorted((set(skip) | set(replacements)) - set(flow.step_names))
    if unknown:
        raise ValueError(f"{flow.name} has no steps {unknown}; its steps: {list(flow.step_names)}")
    results: dict[str, Any] = {}
    for step in flow.steps:
        if step.name in skip:
            continue
        function = replacements.get(step.name, step.run)
        run = FlowRun(settings, day, run_id, dict(params or {}),
                      {name: results[name] for name in step.after if name in results})
        results[step.name] = (function(run) if step.over is None
                              else [function(replace(run, item=item)) for item in run[step.over]])
    return results
