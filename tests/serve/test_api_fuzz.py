"""Schemathesis fuzzes every operation of the API's OpenAPI spec in process (ASGI), with the bearer token,
with valid (positive) and invalid (negative) inputs: the API answers each with a 2xx or 4xx, never a 5xx.

Examples are bounded per operation, derandomised (the same cases every run, no example database) and not shrunk
(shrinking a large JSON body can take minutes), so the run stays well under a minute and a failure reproduces.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from pipeline.core.config import Settings
from pipeline.serve.api import create_app
from tests.helpers import AUTH, START, TOKEN, Clock

pytestmark = pytest.mark.slow  # real training, Great Expectations or fuzzing: seconds per test

EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def api_schema(root: Settings):
    app = create_app(root, TOKEN, clock=Clock(START))
    TestClient(app).get("/v1/users/1/features", headers=AUTH)  # opens the Feast repo: slow once, not a fuzz finding
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_input_makes_the_api_fail_with_a_5xx(api_schema, mode: GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 5

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.path == "/healthz":
            continue  # takes no input: there is nothing invalid to send
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error])

        fuzz()
