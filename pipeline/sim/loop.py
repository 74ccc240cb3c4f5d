"""Closed-loop simulation: the real pipeline, week by week, with simulated listeners closing the loop.

Each simulated week runs the flows the DAGs run (`FLOW` of each flow's module, `run_flow`), without Airflow:

  retrain (training data → fit and register → promote) → index (embeddings → build → recall gate → publish)
  → nightly (plan → score every shard → publish) → 7 days of simulated listening to that publication, the
  days landed and then passed through the features flow (ingest and offline features for each, the online
  store for the last) → monitor (the week's health row → drift check against the trailing weekly baseline).

To stay fast on a laptop the nightly publishes once per simulated week (its first night) and listeners
replay that week's mixes for 7 days; the skew gate (Great Expectations, seconds per night) is skipped, as the
simulator's features come from the same code path it guards, and so are the contract checks of the files it
lands and the monitor's MLflow logging. The monitor's health row covers the week's listening. The default world
is smaller than the demo's (`SIMULATION_WORLD`). Ground truth (`true_satisfaction`, the listeners' expressed
affinity for what was published) comes from the listeners' moving tastes, which the platform itself never reads.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.candidates import index
from pipeline.core.config import ListenerConfig, Settings, WorldConfig, save_settings
from pipeline.core.flow import FlowRun, run_flow
from pipeline.core.io import atomic_write_json
from pipeline.core.paths import Layout
from pipeline.core.progress import progress
from pipeline.features import daily as features
from pipeline.monitor import health as monitor
from pipeline.nightly.flow import nightly_flow
from pipeline.publish.files import publish, read_publication
from pipeline.sim.listeners import Listeners
from pipeline.sim.world import World, generate_world, history_days, write_world
from pipeline.train import retrain

log = logging.getLogger(__name__)
DAYS_PER_WEEK = 7
# The simulator's default world: big enough for taste clusters and genre drift, small enough for 8 weeks × seeds.
SIMULATION_WORLD = WorldConfig(n_users=80, n_tracks=1500, n_artists=150, history_days=14)
# Effort knobs scaled to that world (the behaviour under test does not depend on them): a 1,500-track catalog
# needs fewer ANN candidates per cluster and fewer recall queries than the 5,000-track demo world.
SIMULATION_RETRIEVAL = {"candidates_per_cluster": 300, "recall_sample": 50}
SIMULATION_TRAINING = {"max_iter": 100, "importance_rows": 0}  # no importance plot: nobody opens it here
REPORT_METRICS = (
    "global_genre_entropy", "mean_mix_genre_entropy", "user_genre_entropy", "coverage", "exposure_gini",
    "discovery_share", "skip_rate", "skip_rate_explore", "skip_rate_exploit", "skip_rate_discovery",
    "skip_rate_familiar", "true_satisfaction", "completed_plays_per_user", "genres_with_mix_per_user",
)


def simulation_world(users: int | None = None, tracks: int | None = None) -> WorldConfig:
    """The simulation world, optionally resized (artists scale with tracks: one per 10)."""
    overrides = {"n_users": users} if users else {}
    if tracks:
        overrides |= {"n_tracks": tracks, "n_artists": max(1, tracks // 10)}
    return WorldConfig.model_validate({**SIMULATION_WORLD.model_dump(), **overrides})


def simulation_settings(home: Path, *, epsilon: float | None = None, use_ips: bool = True, seed: int = 7,
                        world: WorldConfig | None = None, base: Settings | None = None) -> Settings:
    """Settings of one simulation run: its own data root, the world seeded by `seed`, the chosen ε and IPS switch."""
    base = base or Settings(home=home)
    world = world or SIMULATION_WORLD
    rerank = base.rerank if epsilon is None else base.rerank.model_copy(update={"exploration_rate": epsilon})
    return base.model_copy(update={
        "home": home,
        "seed": seed,
        "n_shards": 1,
        "world": world.model_copy(update={"seed": seed}),
        "rerank": rerank,
        "training": base.training.model_copy(update={**SIMULATION_TRAINING, "use_ips": use_ips}),
        "retrieval": base.retrieval.model_copy(update=SIMULATION_RETRIEVAL),
        "mlflow_tracking_uri": "",
    })


def run_simulation(settings: Settings, weeks: int, out: Path, listener: ListenerConfig | None = None,
                   skip_shift: dict[int, float] | None = None) -> dict:
    """Run the loop for `weeks` and write out/report.json and the plots; returns the report.

    `skip_shift` maps a week number to extra skip probability for that week's listening (drills and tests).
    """
    if weeks < 1:
        raise ValueError(f"weeks must be at least 1, got {weeks}")
    save_settings(settings)
    layout = Layout(settings.home)
    listeners = Listeners(generate_world(settings.world), listener or ListenerConfig(), settings.seed)
    write_world(listeners.world, layout)
    history = history_days(settings.world)
    _features(settings, history)
    publication_day = history[-1]
    rows: list[dict] = []
    report: dict = {}
    for week in progress(range(1, weeks + 1), total=weeks, desc="simulated weeks"):
        clock = _Stopwatch(week)
        _retrain_and_index(settings, publication_day)
        clock.lap("retrain + index")
        _nightly(settings, publication_day)
        _, slots = read_publication(settings, publication_day)
        truth = ground_truth(listeners, slots)
        clock.lap("nightly")
        days = _following_days(publication_day)
        for day in days:
            events = listeners.listen(slots, day, (skip_shift or {}).get(week, 0.0))
            path = layout.landing(day)
            path.parent.mkdir(parents=True, exist_ok=True)
            events.to_parquet(path, index=False)
        listeners.end_week()
        _features(settings, days)
        clock.lap("listening + features")
        rows.append(_monitor_week(settings, week, publication_day, slots, days, listeners.world, truth))
        clock.lap("monitor")
        publication_day = days[-1]
        report = {"config": report_config(settings, weeks, listener or ListenerConfig()), "weeks": rows}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(report, out / "report.json")  # after every week: a long run cut short keeps its weeks
    write_plots(report, out)
    return report


class _Stopwatch:
    """Logs how long each stage of a simulated week took (INFO; `dailymix -v simulate` shows them)."""

    def __init__(self, week: int) -> None:
        self.week, self.started = week, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        log.info("week %d: %s %.1f s", self.week, stage, now - self.started)
        self.started = now


def _features(settings: Settings, days: list[str]) -> None:
    """The features flow over landed days, as one run for the last of them (the online store serves that day)."""
    run_flow(features.FLOW, settings, days[-1], params={"from_date": days[0], "contracts": False})


def _retrain_and_index(settings: Settings, day: str) -> None:
    """The retrain flow, then the index flow, as their DAGs chain."""
    run_flow(retrain.FLOW, settings, day)
    run_flow(index.FLOW, settings, day)


def _nightly(settings: Settings, day: str) -> dict:
    """The nightly flow without its skew gate: plan → every shard → publish."""
    return run_flow(nightly_flow(publish), settings, day, run_id=f"simulate__{day}", skip={"skew_gate"})["publish"]


def _following_days(day: str) -> list[str]:
    start = date.fromisoformat(day)
    return [(start + timedelta(days=i)).isoformat() for i in range(1, DAYS_PER_WEEK + 1)]


def ground_truth(listeners: Listeners, slots: pd.DataFrame) -> float | None:
    """Mean expressed affinity of the listeners for the published slots (None when nothing was published)."""
    if slots.empty:
        return None
    return float(listeners.expressed_affinity(slots["user_id"].to_numpy(), slots["track_id"].to_numpy()).mean())


def completed_plays_per_user(events: pd.DataFrame, n_users: int) -> float:
    """Completed (not skipped) starts of the period, organic ones included, per user of the world."""
    return float((~events["skipped"].astype(bool)).sum() / max(n_users, 1))


def genres_with_mix_per_user(slots: pd.DataFrame, n_users: int) -> float:
    """Distinct genres that are the most frequent genre of one of a user's mixes, per user of the world (a user
    without mixes counts 0)."""
    if slots.empty:
        return 0.0
    mix_genre = slots.groupby(["user_id", "mix_index"])["genre"].agg(lambda genres: genres.value_counts().index[0])
    return float(mix_genre.groupby(level=0).nunique().sum() / max(n_users, 1))


def _monitor_week(settings: Settings, week: int, day: str, slots: pd.DataFrame, days: list[str], world: World,
                  truth: float | None) -> dict:
    """The monitor flow for the week (keyed by its publication day): its health row over the week's listening,
    with ground truth, in place of the day's row; the drift check; no MLflow logging."""
    from pipeline.data.events import read_raw_events

    def week_row(run: FlowRun) -> dict:
        events = read_raw_events(Layout(run.settings.home), days)
        row = monitor.health_row(run.day, slots, events, len(world.catalog))
        row["true_satisfaction"] = truth
        row["completed_plays_per_user"] = completed_plays_per_user(events, len(world.users))
        row["genres_with_mix_per_user"] = genres_with_mix_per_user(slots, len(world.users))
        monitor.store_metrics(run.settings, run.day, row)
        return row

    results = run_flow(monitor.FLOW, settings, day, skip={"to_mlflow"}, replace_steps={"metrics": week_row})
    row = results["metrics"]
    return {"week": week, "date": day, **{k: row.get(k) for k in REPORT_METRICS}, "alerts": results["drift"]}


def report_config(settings: Settings, weeks: int, listener: ListenerConfig) -> dict:
    """What report.json records of the run's settings: enough to tell two runs' inputs apart."""
    return {"weeks": weeks, "epsilon": settings.rerank.exploration_rate, "use_ips": settings.training.use_ips,
            "seed": settings.seed, "world": settings.world.model_dump(), "listener": listener.model_dump(),
            "monitor": settings.monitor.model_dump(), "publish_every_days": DAYS_PER_WEEK}


# --------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------


def format_table(report: dict) -> str:
    """The week-by-week numbers as a fixed-width table."""
    columns = [("week", "week", "{:>4}"), ("global_genre_entropy", "H_glob", "{:>6.3f}"),
               ("mean_mix_genre_entropy", "H_mix", "{:>6.3f}"), ("user_genre_entropy", "H_user", "{:>6.3f}"),
               ("coverage", "cover", "{:>6.3f}"), ("exposure_gini", "gini", "{:>6.3f}"),
               ("discovery_share", "disc", "{:>6.3f}"), ("skip_rate", "skip", "{:>6.3f}"),
               ("skip_rate_explore", "sk_exp", "{:>6.3f}"), ("skip_rate_exploit", "sk_xpt", "{:>6.3f}"),
               ("true_satisfaction", "truth", "{:>6.3f}"), ("completed_plays_per_user", "plays", "{:>6.1f}"),
               ("genres_with_mix_per_user", "g_mix", "{:>6.2f}")]
    header = " ".join(f"{title:>{4 if key == 'week' else 6}}" for key, title, _ in columns) + "  alerts"
    lines = [header]
    for row in report["weeks"]:
        cells = [fmt.format(row[key]) if row.get(key) is not None else f"{'-':>6}" for key, _, fmt in columns]
        lines.append(" ".join(cells) + "  " + ("; ".join(row["alerts"]) or "-"))
    return "\n".join(lines)


def write_plots(report: dict, out: Path) -> list[Path]:
    """PNG plots of diversity, engagement and ground truth over the weeks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weeks = [row["week"] for row in report["weeks"]]
    panels = {
        "diversity.png": ("Genre entropy (bits)", ["global_genre_entropy", "user_genre_entropy",
                                                   "mean_mix_genre_entropy"]),
        "engagement.png": ("Skip rate", ["skip_rate", "skip_rate_exploit", "skip_rate_explore"]),
        "exposure.png": ("Share", ["coverage", "discovery_share", "exposure_gini", "true_satisfaction"]),
    }
    paths = []
    config = report["config"]
    for name, (ylabel, metrics) in panels.items():
        figure, axes = plt.subplots(figsize=(7, 4))
        for metric in metrics:
            values = [np.nan if row.get(metric) is None else row[metric] for row in report["weeks"]]
            axes.plot(weeks, values, marker="o", label=metric)
        for row in report["weeks"]:
            if row["alerts"]:
                axes.axvline(row["week"], color="red", alpha=0.2)
        axes.set_xlabel("simulated week")
        axes.set_ylabel(ylabel)
        axes.set_title(f"ε={config['epsilon']}, IPS {'on' if config['use_ips'] else 'off'}, seed {config['seed']}"
                       " (red: alert)")
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = out / name
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


def summary_json(report: dict) -> str:
    return json.dumps(report, indent=2)
