"""docs/configuration.md is generated from the settings models and must match them; every env var is documented."""

from __future__ import annotations

import re

from pipeline.core.config import PROJECT_ROOT, Settings
from pipeline.core.config_reference import ENVIRONMENT, markdown, rows

REFERENCE = PROJECT_ROOT / "docs" / "configuration.md"


def test_committed_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text() == markdown(), (
        "docs/configuration.md is stale: run `.venv/bin/dailymix config --markdown > docs/configuration.md`")


def test_every_leaf_setting_has_a_row_with_its_default_and_a_description() -> None:
    table = {row["setting"]: row for row in rows(Settings)}
    assert table["rerank.exploration_rate"] == {"setting": "rerank.exploration_rate", "type": "float",
                                               "default": "0.05", "bounds": "≥ 0, ≤ 1", "env": "",
                                               "description": "Share of slots filled by exploration (epsilon), half a "
                                               "slot rounding up: 0.05 is 2 of 30. The default is `dailymix "
                                               "tune-exploration`'s long-run pick on the default simulated world."}
    assert table["mlflow_tracking_uri"]["env"] == "MLFLOW_TRACKING_URI"
    assert table["retrieval.backend"]["type"] == '"annoy" \\| "voyager" \\| "faiss"'
    assert "rerank" not in table and "world" not in table  # groups are flattened, not listed
    assert all(row["description"] for row in table.values()), [k for k, r in table.items() if not r["description"]]


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    pattern = re.compile(r"environ(?:\.get\(|\[)\s*\"((?:DAILYMIX|MLFLOW)_[A-Z_]+)\"")
    folders = ("pipeline", "dags", "plugins", "validation")
    sources = [p for folder in folders for p in (PROJECT_ROOT / folder).rglob("*.py")]
    read = {name for path in sources for name in pattern.findall(path.read_text())}
    assert read >= {"DAILYMIX_HOME", "MLFLOW_TRACKING_URI"}  # the scan finds what it should
    assert read <= set(ENVIRONMENT), f"undocumented: {sorted(read - set(ENVIRONMENT))}"
