"""The freshness benchmark: how long from POST /v1/events until the play shows in GET …/features.

It runs the real service — `dailymix serve` under uvicorn, in a subprocess, on a free loopback
port — over a small seeded world in a throwaway data root, with the chosen online store. The load
is open-loop: batch b is sent at start + b·batch/rate whatever happened to earlier ones (so a slow
server shows as latency and failures, not as a politely lower rate). A batch holds `batch` events of
different listeners (round-robin over `users`). Every `probe_every`-th event is watched: after its
POST returns, the client polls that user's features until the event is listed. Its latency runs
from just before the POST to the GET response that lists it. Polling is not free — each probe is at
least one more request to the same server — so `probe_every` > 1 measures freshness under the full
event rate without the measurement doubling the load. Bounded: at most `MAX_EVENTS` events,
`MAX_SECONDS` of load, `VISIBLE_WITHIN_S` of polling per probe (later counts as not visible).
"""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.config import FeatureStoreConfig, Settings, WorldConfig, save_settings

MAX_EVENTS = 20_000
MAX_SECONDS = 120.0
VISIBLE_WITHIN_S = 5.0  # an event not visible by then counts as lost (reported, not hidden in the percentiles)
POLL_INTERVAL_S = 0.002
MAX_CONNECTIONS = 200  # keep-alive connections of the load client
STARTUP_TIMEOUT_S = 90.0
WORLD = WorldConfig(n_users=200, n_tracks=2000, n_artists=300, history_days=1)


@dataclass(frozen=True)
class BenchConfig:
    store: str = "sqlite"
    rate: float = 200.0
    seconds: float = 10.0
    users: int = 100
    batch: int = 1
    probe_every: int = 1
    workers: int = 1
    redis_url: str = FeatureStoreConfig().redis_url

    def __post_init__(self) -> None:
        if self.store not in ("sqlite", "redis"):
            raise ValueError(f"store must be sqlite or redis, not {self.store!r}")
        if not 0 < self.rate * self.seconds <= MAX_EVENTS or not 0 < self.seconds <= MAX_SECONDS:
            raise ValueError(f"rate × seconds must be 1..{MAX_EVENTS} events over at most {MAX_SECONDS:.0f} s")
        if not 1 <= self.users < WORLD.n_users or not 1 <= self.batch <= min(self.users, 50):
            raise ValueError(f"users must be 1..{WORLD.n_users - 1}, batch 1..min(users, 50)")
        if self.probe_every < 1:
            raise ValueError("probe_every must be at least 1")
        if not 1 <= self.workers <= 16:
            raise ValueError("workers must be 1..16")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def seed_root(home: Path, config: BenchConfig) -> Settings:
    """A data root with a small seeded world (catalog, users) and the chosen online store."""
    from pipeline.core.paths import Layout
    from pipeline.sim.world import generate_world, write_world

    store = FeatureStoreConfig(online_store=config.store, redis_url=config.redis_url)
    settings = Settings(home=home, world=WORLD, feature_store=store)
    save_settings(settings)
    write_world(generate_world(WORLD), Layout(home))
    return settings


class Server:
    """`dailymix serve` in a subprocess; stopped (and its Redis keys dropped) on exit."""

    def __init__(self, settings: Settings, token: str, workers: int = 1) -> None:
        self.settings, self.token, self.port, self.workers = settings, token, free_port(), workers
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = settings.home / "serve.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        env = {**os.environ, "DAILYMIX_API_TOKEN": self.token, "DAILYMIX_ONLINE_STORE": "",
               "DAILYMIX_REDIS_URL": ""}  # the saved settings decide the store, not the caller's environment
        command = [sys.executable, "-m", "pipeline.ops.cli", "--home", str(self.settings.home), "serve",
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def failed(self) -> str | None:
        if self.process and self.process.poll() is not None:
            return f"server exited with {self.process.returncode}: {self.log.read_text()[-2000:]}"
        return None


def drop_online_keys(settings: Settings) -> None:
    """Remove this project's keys from the online store (Redis only: SQLite lives in the throwaway root)."""
    if settings.feature_store.online_store == "redis":
        from pipeline.features import store as fs
        fs.feature_store(settings).teardown()


async def wait_until_up(client, server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if reason := server.failed():
            raise RuntimeError(reason)
        try:
            async with client.get(f"{server.url}/healthz") as response:
                if response.status == 200:
                    return
        except Exception:  # not listening yet
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"server not up within {STARTUP_TIMEOUT_S:.0f} s; see {server.log}")


async def warm_up(client, server: Server, headers: dict, track: int) -> None:
    """One event and one read, unmeasured: the first request opens (and applies) the Feast repo, which takes
    seconds, tens of seconds on a busy machine."""
    body = {"events": [{"user_id": WORLD.n_users - 1, "track_id": track, "ts": int(time.time() * 1000) - 1,
                        "ms_played": 30_000, "skipped": False}]}
    import aiohttp

    slow = aiohttp.ClientTimeout(total=STARTUP_TIMEOUT_S)
    async with client.post(f"{server.url}/v1/events", json=body, headers=headers, timeout=slow) as response:
        if response.status != 202:
            raise RuntimeError(f"warm-up event rejected: {response.status} {(await response.text())[:500]}")
    async with client.get(f"{server.url}/v1/users/{WORLD.n_users - 1}/features", headers=headers, timeout=slow):
        pass


def plan_events(config: BenchConfig, track_ids: np.ndarray) -> list[tuple[int, int, bool]]:
    """(user_id, track_id, probed) per event: users round-robin, a user's consecutive tracks distinct (so each is
    findable in its last-10); every `probe_every`-th event is watched until visible."""
    n = round(config.rate * config.seconds)
    return [(i % config.users, int(track_ids[(i // config.users) % len(track_ids)]), i % config.probe_every == 0)
            for i in range(n)]


async def send_batch(client, url: str, headers: dict, events: list[tuple[int, int, bool]], at: float,
                     clock0: float) -> list[dict]:
    """POST `events` at `at` (monotonic), then poll each user's features until its event is listed."""
    import aiohttp

    await asyncio.sleep(max(0.0, at - time.monotonic()))
    sent = time.monotonic()
    ts_ms = int(time.time() * 1000) - 1  # the server rejects events from its future
    body = {"events": [{"user_id": user, "track_id": track, "ts": ts_ms, "ms_played": 30_000, "skipped": False}
                       for user, track, _ in events]}
    base = {"sent": sent - clock0}
    try:
        async with client.post(f"{url}/v1/events", json=body, headers=headers) as response:
            status, text = response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as error:
        return [{**base, "status": type(error).__name__}] * len(events)
    if status != 202:
        return [{**base, "status": status, "detail": text[:300]}] * len(events)
    posted = {**base, "status": 202, "post_ms": (time.monotonic() - sent) * 1000, "accepted": time.monotonic() - clock0}
    stamp = pd.Timestamp(ts_ms, unit="ms", tz="UTC").isoformat()
    async def unprobed() -> dict:
        return {}

    polls = [until_visible(client, f"{url}/v1/users/{user}/features", headers, track, stamp, sent, clock0) if probe
             else unprobed() for user, track, probe in events]
    return [{**posted, "probe": probe, **seen} for (*_, probe), seen in zip(events, await asyncio.gather(*polls),
                                                                               strict=True)]


async def until_visible(client, url: str, headers: dict, track: int, stamp: str, sent: float, clock0: float) -> dict:
    import aiohttp

    while time.monotonic() - sent < VISIBLE_WITHIN_S:
        try:
            async with client.get(url, headers=headers) as response:
                items = (await response.json())["last_interactions"]["items"]
        except (aiohttp.ClientError, TimeoutError):
            items = []
        if any(i["track_id"] == track and i["ts"] == stamp for i in items):
            return {"visible_ms": (time.monotonic() - sent) * 1000, "done": time.monotonic() - clock0}
        await asyncio.sleep(POLL_INTERVAL_S)
    return {"visible_ms": None}


async def drive(server: Server, config: BenchConfig, track_ids: np.ndarray) -> tuple[list[dict], float]:
    import aiohttp

    headers = {"Authorization": f"Bearer {server.token}"}
    # aiohttp, not httpx: httpx's pool does work per pending request on every request (quadratic once requests
    # queue), so at a few hundred requests/s the client, not the server, set the latency.
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=VISIBLE_WITHIN_S * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        await wait_until_up(client, server)
        await warm_up(client, server, headers, int(track_ids[-1]))
        events = plan_events(config, track_ids)
        batches = [events[i:i + config.batch] for i in range(0, len(events), config.batch)]
        clock0 = time.monotonic() + 0.2
        due = planned_send_times(len(events), config)
        tasks = [send_batch(client, server.url, headers, batch, clock0 + due[b * config.batch], clock0)
                 for b, batch in enumerate(batches)]
        results = [r for batch in await asyncio.gather(*tasks) for r in batch]
        return results, time.monotonic() - clock0


def planned_send_times(n: int, config: BenchConfig) -> np.ndarray:
    """When each of n events was due: its batch's slot of the open-loop schedule."""
    return (np.arange(n) // config.batch) * config.batch / config.rate


def summarise(results: list[dict], elapsed: float, config: BenchConfig) -> dict[str, Any]:
    visible = np.array([r["visible_ms"] for r in results if r.get("visible_ms") is not None])
    posts = np.array([r["post_ms"] for r in results if r.get("post_ms") is not None])
    accepted = [r for r in results if r["status"] == 202]
    probes = [r for r in accepted if r["probe"]]
    last_accepted = max((r["accepted"] for r in accepted), default=elapsed)
    sends = np.array([r["sent"] for r in results])
    pct = lambda a, q: round(float(np.percentile(a, q)), 1) if len(a) else None  # noqa: E731
    return {
        "store": config.store,
        "target_rate": config.rate,
        "seconds": config.seconds,
        "batch": config.batch,
        "probe_every": config.probe_every,
        "workers": config.workers,
        "events": len(results),
        "accepted": len(accepted),
        "rejected_or_failed": len(results) - len(accepted),
        "failures": {str(k): n for k, n in Counter(r["status"] for r in results if r["status"] != 202).items()},
        "first_failure": next((r.get("detail") for r in results if r["status"] != 202), None),
        "probed": len(probes),
        "not_visible_within_s": {"limit_s": VISIBLE_WITHIN_S, "count": len(probes) - len(visible)},
        "achieved_events_per_s": round(len(accepted) / last_accepted, 1) if last_accepted > 0 else None,
        "send_lag_ms_max": round(float(np.max(sends - planned_send_times(len(sends), config))) * 1000, 1),
        "visible_ms": {"p50": pct(visible, 50), "p99": pct(visible, 99), "max": pct(visible, 100)},
        "post_ms": {"p50": pct(posts, 50), "p99": pct(posts, 99)},
    }


def conditions(config: BenchConfig) -> dict[str, Any]:
    return {
        "server": f"dailymix serve: {config.workers} uvicorn worker process(es), loopback HTTP/1.1 keep-alive",
        "client": "aiohttp.ClientSession in the benchmark process, open-loop, one features poller per event",
        "users": config.users,
        "catalog_tracks": WORLD.n_tracks,
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "online_store_url": config.redis_url if config.store == "redis" else "sqlite file in the data root",
    }


def run(config: BenchConfig) -> dict[str, Any]:
    """Seed a throwaway root, serve it, drive the load, summarise; always stops the server and cleans up."""
    with tempfile.TemporaryDirectory(prefix="dailymix-freshness-") as tmp:
        home = Path(tmp) / "home"
        settings = seed_root(home, config)
        track_ids = pd.read_parquet(home / "world" / "catalog.parquet")["track_id"].to_numpy()
        context = conditions(config)
        try:
            with Server(settings, secrets.token_urlsafe(16), config.workers) as server:
                results, elapsed = asyncio.run(drive(server, config, track_ids))
        finally:
            drop_online_keys(settings)
        return {**summarise(results, elapsed, config), "conditions": context}


def format_report(r: dict[str, Any]) -> str:
    v, p, c = r["visible_ms"], r["post_ms"], r["conditions"]
    return (f"{r['store']}: {r['events']} events at {r['target_rate']:.0f}/s over {r['seconds']:.0f} s, "
            f"{r['batch']} per POST -> {r['achieved_events_per_s']} events/s accepted; {r['probed']} probed: "
            f"POST->visible p50 {v['p50']} ms, "
            f"p99 {v['p99']} ms, max {v['max']} ms (POST alone p50 {p['p50']}, p99 {p['p99']} ms); "
            f"{r['rejected_or_failed']} rejected/failed, {r['not_visible_within_s']['count']} not visible within "
            f"{VISIBLE_WITHIN_S:.0f} s; load avg {c['load_avg_1m_at_start']} on {c['cpus']} CPUs")
