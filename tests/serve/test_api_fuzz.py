"""Schemathesis fuzzes every operation of the API's OpenAPI spec in process (ASGI), with the bearer token,
with valid (positive) and invalid (negative) inputs: the API answers each with a 2xx or 4xx, never a 5xx.

Examples are bounded per operation, derandomised (the same cases every run, no example database) and not shrunk
(shrinking a large JSON body can take minutes), so the run stays well under a minute and a failure reproduces.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from pipeline.core import schema as s
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


# Text a JSON body can carry but no store can hold as is: lone surrogates ("\ud800" escapes), mixed with the rest.
# (st.text leaves surrogates out whatever its alphabet: the characters are drawn one by one and joined.)
HOSTILE_TEXT = st.lists(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=12).map("".join)
VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), HOSTILE_TEXT)
EVENT = st.fixed_dictionaries({}, optional={c: VALUE for c in s.EVENT_COLUMNS})


def test_hostile_text_in_any_field_is_a_row_reason_never_a_5xx(root: Settings) -> None:
    """Events whose fields hold any code point, lone surrogates included (what json.dumps escapes as "\\ud800"),
    among plain values: every batch is answered 202 or 422, one reason list per rejected row."""
    client = TestClient(create_app(root, TOKEN, clock=Clock(START)))

    @given(events=st.lists(EVENT, min_size=1, max_size=5))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def post(events: list[dict]) -> None:
        body = json.dumps({"events": events})
        answer = client.post("/v1/events", content=body, headers={**AUTH, "content-type": "application/json"})
        assert answer.status_code in (202, 422), answer.text
        if answer.status_code == 422 and "errors" in answer.json():
            assert answer.json()["accepted"] + answer.json()["rejected"] == len(events)

    post()
