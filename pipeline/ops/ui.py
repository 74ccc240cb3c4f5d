"""`make up`: the Airflow UI (standalone) and the MLflow UI over one data root, on localhost.

Local development only: Airflow's simple auth manager runs with everyone as admin, so both servers listen on
127.0.0.1 only (Airflow's default would be every interface); reach them from elsewhere through an SSH tunnel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.core.config import load_settings
from pipeline.ops.airflow_env import airflow_env

AIRFLOW_PORT = 8080
MLFLOW_PORT = 5000
LOOPBACK = "127.0.0.1"


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _stop_groups(processes: list[subprocess.Popen]) -> None:
    """Each server runs in its own process group: stop the whole group (standalone's components too)."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def ui_env(root: Path) -> dict[str, str]:
    """Airflow's environment for `make up`: everyone is admin, so the API server listens on the loopback only."""
    return airflow_env(root) | {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": LOOPBACK,
        "AIRFLOW__API__PORT": str(AIRFLOW_PORT),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{LOOPBACK}:{AIRFLOW_PORT}/execution/",
    }


def main(home: str) -> int:
    root = Path(home).resolve()
    settings = load_settings(root)
    env = ui_env(root)
    binaries = Path(sys.executable).parent
    processes = [
        subprocess.Popen([str(binaries / "airflow"), "standalone"], env=env, start_new_session=True),
        subprocess.Popen([str(binaries / "mlflow"), "ui", "--backend-store-uri", settings.tracking_uri,
                          "--host", LOOPBACK, "--port", str(MLFLOW_PORT)], env=env, start_new_session=True),
    ]
    print(f"Airflow UI  http://localhost:{AIRFLOW_PORT}   (DAGs: dailymix_*; data root {root})")
    print(f"Daily Mix   http://localhost:{AIRFLOW_PORT}/plugin/daily-mix   (a user's mixes, the loop's health)")
    print(f"MLflow UI   http://localhost:{MLFLOW_PORT}    (experiment '{settings.experiment_name}', "
          f"model '{settings.model_name}')")
    print(f"Both listen on {LOOPBACK} only (everyone is admin): from another machine, use an SSH tunnel.")
    print("Ctrl-C stops both.")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops both too, not only Ctrl-C
    try:
        for process in processes:
            process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop_groups(processes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(load_settings().home)))
