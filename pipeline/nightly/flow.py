"""The nightly flow, declared once for its DAG and the simulation: plan → skew gate → score every shard → publish.

The publication store is a sibling layer (`pipeline.publish`, which the nightly layer does not import), so the
flow is built around the publish function its caller passes: the DAG and the simulation both pass
`pipeline.publish.files.publish`.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.core.config import Settings
from pipeline.core.flow import Flow, FlowRun, Step
from pipeline.features.skew import run_gate
from pipeline.nightly.shard import plan, score_shard, shard_count

# publish(settings, plan_path, shard_paths, run_id) -> the publication's manifest
Publish = Callable[[Settings, str, list[str], str], dict]


def plan_shards(run: FlowRun) -> list[dict]:
    """Pin the night's versions and list its shards, one work item each: {"plan_path", "shard"}."""
    plan_path = plan(run.settings, run.day)
    return [{"plan_path": plan_path, "shard": shard} for shard in range(shard_count(plan_path))]


def plan_path(run: FlowRun) -> str:
    """The night's plan, from the `plan` step's work items."""
    return run["plan"][0]["plan_path"]


def nightly_flow(publish: Publish) -> Flow:
    """The nightly steps, publishing with `publish`; `score` maps over the plan's shards."""
    return Flow("dailymix_nightly", (
        Step("plan", plan_shards),
        Step("skew_gate", lambda run: run_gate(run.settings, plan_path(run)), after=("plan",)),
        Step("score", lambda run: score_shard(run.settings, run.item["plan_path"], run.item["shard"]),
             after=("plan", "skew_gate"), over="plan"),
        Step("publish", lambda run: publish(run.settings, plan_path(run), list(run["score"]), run.run_id),
             after=("plan", "score")),
    ))
