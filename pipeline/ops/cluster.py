"""A CeleryExecutor Airflow on one machine: the scaled-out deployment's processes, started as separate processes.

The same environment variables configure the docker/ compose stack; here every component runs from this
project's venv, so the integration tests (and a developer) can run the real distributed engine without Docker:
scheduler, dag-processor, api-server (which also serves the execution API the workers' tasks talk to) and N
Celery workers, over a Postgres metadata DB and a Redis broker. Each worker gets its own name
(`DAILYMIX_WORKER_NAME`, read by `worker_hostname`, Airflow's hostname callable), so task instances record
which worker ran them even when all workers share one host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.config import PROJECT_ROOT, load_settings
from pipeline.ops.airflow_env import airflow_env, airflow_executable

WORKER_NAME_ENV = "DAILYMIX_WORKER_NAME"


def worker_hostname() -> str:
    """Airflow's `[core] hostname_callable`: the worker's configured name, else the host's FQDN."""
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


def free_port(start: int) -> int:
    """The first port from `start` up that nothing listens on."""
    for port in range(start, start + 200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError(f"no free port in {start}..{start + 199}")


def celery_env(home: Path, metadata_url: str, broker_url: str, api_port: int, secret: str) -> dict[str, str]:
    """`airflow_env(home)` switched to CeleryExecutor: Postgres metadata, Redis broker, shared secrets.

    `secret` signs the execution API's task tokens and the UI sessions; every process of one installation
    needs the same value (each would otherwise invent its own and reject the others' tokens).
    """
    settings = load_settings(home)
    env = airflow_env(home)
    env.update({
        "AIRFLOW_HOME": str(home / "airflow-celery"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,  # keeps +psycopg2: SQLAlchemy 2.1 means psycopg 3
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(settings.scale_out.worker_concurrency),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret,
        "AIRFLOW__API__SECRET_KEY": secret,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    })
    return env


@dataclass
class LocalCeleryCluster:
    """Airflow's scaled-out components as child processes; logs under `AIRFLOW_HOME/logs/cluster/`."""

    env: dict[str, str]
    workers: tuple[str, ...] = ("worker-a", "worker-b")
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)

    @property
    def log_dir(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"]) / "logs" / "cluster"

    def airflow(self, *args: str, timeout: float = 300) -> str:
        """Run an `airflow` CLI command against this installation; its stdout, or an error with its output."""
        done = subprocess.run([airflow_executable(), *args], env=self.env, cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                               f"{done.stderr[-3000:]}")
        return done.stdout

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in ("api-server", "scheduler", "dag-processor"):
            self._spawn(name, [name])
        for worker in self.workers:
            self.start_worker(worker)

    def start_worker(self, name: str) -> None:
        concurrency = self.env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]
        # Log serving is off: all workers share this host's log folder, and two servers would fight for a port.
        self._spawn(name, ["celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", concurrency,
                           "--skip-serve-logs"], {WORKER_NAME_ENV: name})

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        # A session of its own: stopping (or killing) a component takes its children (task runners) with it.
        self.processes[name] = subprocess.Popen([airflow_executable(), *args], env={**self.env, **(extra_env or {})},
                                                cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def wait_until(self, condition, what: str, timeout: float = 300, every: float = 1.0):
        """Poll `condition()` until it returns something truthy; fail naming `what` and any dead component."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
            if dead.keys() - set(self.killed):
                raise RuntimeError(f"waiting for {what}: components exited {dead}; logs in {self.log_dir}")
            time.sleep(every)
        raise TimeoutError(f"{what} did not happen within {timeout:.0f} s; logs in {self.log_dir}")

    def workers_ready(self) -> bool:
        return all("ready." in self.log(worker) for worker in self.workers if worker not in self.killed)

    def kill(self, name: str) -> None:
        """SIGKILL a component and everything it started: a machine lost mid-task, not a clean shutdown."""
        self.killed.add(name)
        _signal_group(self.processes[name], signal.SIGKILL)
        self.processes[name].wait(timeout=30)

    def stop(self) -> None:
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    """Signal the process group `process` leads, unless it has exited: once reaped, its id may already belong to
    an unrelated process group."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, sig)  # the group this process leads (start_new_session), by its own id
