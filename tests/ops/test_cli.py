"""The command line's user errors: each is one line on stderr and a non-zero exit, never a traceback; settings and
`dailymix config` never hold or show a password; `make up` listens on the loopback only."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.config import Settings, load_settings, save_settings
from pipeline.core.paths import Layout
from pipeline.ops import cli
from tests.helpers import DAY

CATALOG = pd.DataFrame({s.TRACK_ID: [1, 2], s.DURATION_MS: [200_000, 200_000]})


@pytest.fixture
def home(tmp_path: Path) -> Path:
    layout = Layout(tmp_path / "home")
    layout.catalog.parent.mkdir(parents=True, exist_ok=True)
    CATALOG.to_parquet(layout.catalog)
    return layout.home


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def events_csv(tmp_path: Path, rows: int = 3, track: int = 99) -> Path:
    path = tmp_path / "events.csv"
    path.write_text("user_id,track_id,ts,ms_played,skipped\n"
                    + "".join(f"1,{track},{DAY}T10:0{i}:00Z,1000,false\n" for i in range(rows)))
    return path


@pytest.mark.parametrize("case", ["bad date", "unreal date", "unsupported extension", "missing file", "directory",
                                  "nested jsonl", "nan share", "share above one", "unknown user id form"])
def test_every_user_error_is_one_line_and_a_non_zero_exit(tmp_path: Path, home: Path, capsys, case: str) -> None:
    good = events_csv(tmp_path, track=1)
    nested = tmp_path / "deep.jsonl"
    nested.write_text("[" * 50_000 + "]" * 50_000 + "\n")
    (tmp_path / "events.xlsx").write_text("x")
    argv = {
        "bad date": ["ingest", str(good), "--date", "2026-11-1"],
        "unreal date": ["mixes", "1", "--date", "2026-02-30"],
        "unsupported extension": ["ingest", str(tmp_path / "events.xlsx"), "--date", DAY],
        "missing file": ["ingest", str(tmp_path / "nowhere.csv"), "--date", DAY],
        "directory": ["ingest", str(tmp_path), "--date", DAY],
        "nested jsonl": ["ingest", str(nested), "--date", DAY],
        "nan share": ["ingest", str(good), "--date", DAY, "--max-bad-share", "nan"],
        "share above one": ["ingest", str(good), "--date", DAY, "--max-bad-share", "2"],
        "unknown user id form": ["mixes", "one"],
    }[case]
    code, out, err = run(capsys, "--home", str(home), *argv)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "error" in err


@pytest.mark.parametrize("url", ["postgresql+psycopg2://dm:s3cret@127.0.0.1:1/dailymix",  # nothing listens on port 1
                                 "postgresql+psycopg2://dm:s3cret@127.0.0.1:99999/dailymix",
                                 "::not a url dm:s3cret", "nosuchdb://dm:s3cret@127.0.0.1/dailymix"])
def test_a_publication_database_that_does_not_answer_is_one_line_without_its_password(home: Path, capsys, monkeypatch,
                                                                                      url: str) -> None:
    monkeypatch.setenv("DAILYMIX_PUBLISH_DB_URL", url)
    code, out, err = run(capsys, "--home", str(home), "mixes", "1")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert "s3cret" not in err


def test_a_nan_threshold_never_lets_a_fully_bad_file_pass(tmp_path: Path, home: Path, capsys) -> None:
    code, _, err = run(capsys, "--home", str(home), "ingest", str(events_csv(tmp_path)), "--date", DAY,
                       "--max-bad-share", "nan")
    assert code == 2 and "--max-bad-share" in err
    assert not Layout(home).raw_events(DAY).exists()


def test_a_damaged_store_is_a_clear_message(tmp_path: Path, home: Path, capsys) -> None:
    folder = Layout(home).published / f"date={DAY}"
    folder.mkdir(parents=True)
    (folder / "CURRENT.json").write_text("")
    code, out, err = run(capsys, "--home", str(home), "mixes", "1", "--date", DAY)
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1] == f"error: the publication of {DAY} is damaged (CURRENT.json: not JSON " \
        "(empty or cut short); PREVIOUS.json: missing)"


PASSWORDS = {"DAILYMIX_REDIS_URL": "redis://:r3dis-pw@cache:6379/0",
             "DAILYMIX_PUBLISH_DB_URL": "postgresql+psycopg2://dailymix:pg-pw@db:5432/dailymix",
             "MLFLOW_TRACKING_URI": "https://ops:mlflow-pw@mlflow.internal"}


def test_passwords_are_neither_saved_nor_printed(tmp_path: Path, capsys, monkeypatch) -> None:
    for env, url in PASSWORDS.items():
        monkeypatch.setenv(env, url)
    settings = load_settings(tmp_path / "home")
    assert settings.feature_store.redis_url == PASSWORDS["DAILYMIX_REDIS_URL"]  # in use, from the environment
    saved = save_settings(settings).read_text()
    assert "r3dis-pw" not in saved and "pg-pw" not in saved and "mlflow-pw" not in saved
    assert json.loads(saved)["scale_out"]["publish_database_url"] == "postgresql+psycopg2://dailymix@db:5432/dailymix"
    code, out, _ = run(capsys, "--home", str(tmp_path / "home"), "config")
    assert code == 0 and "r3dis-pw" not in out and "pg-pw" not in out and "mlflow-pw" not in out
    assert json.loads(out)["feature_store"]["redis_url"] == "redis://:***@cache:6379/0"
    for env in PASSWORDS:
        monkeypatch.delenv(env)
    assert load_settings(tmp_path / "home").feature_store.redis_url == "redis://cache:6379/0"


def test_settings_without_passwords_are_saved_as_they_are(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert load_settings(save_settings(settings).parent) == settings


def test_make_up_listens_on_the_loopback_only(tmp_path: Path) -> None:
    from pipeline.ops.ui import LOOPBACK, ui_env

    env = ui_env(tmp_path)
    assert LOOPBACK == "127.0.0.1" and env["AIRFLOW__API__HOST"] == LOOPBACK  # Airflow's default: 0.0.0.0
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(f"http://{LOOPBACK}:")


@pytest.mark.parametrize(("env", "url"), [
    ("DAILYMIX_REDIS_URL", "redis://:pw/with-slash-s3cret@cache:6379/0"),
    ("DAILYMIX_REDIS_URL", "redis://:pw#with-hash-s3cret@cache:6379/0"),
    ("DAILYMIX_REDIS_URL", "redis://cache:6379/0?password=s3cret"),
    ("DAILYMIX_PUBLISH_DB_URL", "postgresql+psycopg2://dailymix@db/dailymix?sslmode=require&password=s3cret"),
    ("DAILYMIX_MLFLOW_ARTIFACT_ROOT", "https://key:s3cret@artifacts.internal/mlflow"),
    ("DAILYMIX_REDIS_URL", "http://:s3cret@cache:6379/0"),  # refused: the error must not quote it either
], ids=["slash", "hash", "redis query", "postgres query", "artifact root", "refused url"])
def test_no_form_of_password_is_saved_or_printed(tmp_path: Path, capsys, monkeypatch, env: str, url: str) -> None:
    """Passwords the user info holds unencoded, credential query parameters, any URL-ish setting, and the error
    that refuses a URL."""
    monkeypatch.setenv(env, url)
    code, out, err = run(capsys, "--home", str(tmp_path / "home"), "config")
    assert "s3cret" not in out + err
    if code == 0:
        assert "s3cret" not in save_settings(load_settings(tmp_path / "home")).read_text()
    else:
        assert len(err.strip().splitlines()) == 1 and "redis_url" in err
