"""CPU cost of the nightly per user, for sizing workers: `python benchmarks/shard_cost.py HOME DAY`.

Plans DAY on a prepared data root (features, champion and index present), loads one shard context for all
planned users (the per-shard fixed cost), then scores every user and reports CPU seconds (process time, all
threads, so it holds on a shared machine where wall time does not) per user and per mix.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from pipeline.core.config import load_settings
from pipeline.core.io import read_json
from pipeline.nightly.shard import _load_context, _user_mixes, plan


def measure(home: Path, day: str) -> dict:
    settings = load_settings(home)
    night = read_json(Path(plan(settings, day)))
    users = [user for shard in night["shards"] for user in shard]
    cpu, wall = time.process_time(), time.perf_counter()
    context = _load_context(settings, night, users)
    context_cpu, context_wall = time.process_time() - cpu, time.perf_counter() - wall
    per_user, mixes = [], 0
    for user in users:
        cpu = time.process_time()
        slots = _user_mixes(context, user, night)
        per_user.append(time.process_time() - cpu)
        mixes += slots[["user_id", "mix_index"]].drop_duplicates().shape[0] if len(slots) else 0
    return {
        "users": len(users), "tracks": len(context.catalog), "mixes": mixes,
        "context_cpu_s": round(context_cpu, 2), "context_wall_s": round(context_wall, 2),
        "cpu_ms_per_user_mean": round(1000 * statistics.mean(per_user), 1),
        "cpu_ms_per_user_p50": round(1000 * statistics.median(per_user), 1),
        "cpu_ms_per_user_p95": round(1000 * sorted(per_user)[int(0.95 * (len(per_user) - 1))], 1),
        "cpu_ms_per_mix": round(1000 * sum(per_user) / max(mixes, 1), 1),
    }


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]), sys.argv[2]), indent=2))
