"""Schemathesis fuzzes the real controller app against its own OpenAPI schema (service/schema.py).

Generated requests (valid and invalid) go to every route but the OpenAI audio
routes (they wait for a finished transcription; test_openai.py covers them)
through ASGI with an API token. Any 5xx, any answer the schema does not
document (status, headers, body, content type), and any 405 without `Allow`
fails the test. Not checked: that every schema-valid request succeeds
(`positive_data_acceptance`): no schema can say which uploadId exists, which
model this server has or whether it has a GPU, and those answer their
documented 4xx. Examples are bounded and derandomized: the same requests run
every time, so a failure repeats.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from scribefleet.service.app import create_app
from scribefleet.service.controller import Controller
from service.harness import AUTH, service_settings

pytestmark = pytest.mark.slow

#: examples per operation and mode: enough to find the kinds of 500 the attack report found, on 2 cores
EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 150}


@pytest.fixture
def api_schema(tmp_path: Path) -> Iterator[Any]:
    settings = service_settings(tmp_path, max_file_mb=1, auth_fail_limit=10_000)
    controller = Controller(settings, tmp_path / "state", slots=1, device="cpu")
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", create_app(controller, settings), headers=AUTH).exclude(
            path_regex="^/v1/audio/"
        )
    finally:
        controller.stop()


def _fuzz(operation: Any, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode], deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )  # fmt: skip
    def run(case: Any) -> None:
        case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_the_api_answers_as_its_schema_says(api_schema: Any, mode: GenerationMode) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 15
    fuzzed = 0
    for operation in operations:
        try:
            _fuzz(operation, mode)
            fuzzed += 1
        except Unsatisfiable:  # negative mode: a route whose only input is a free string has no invalid one
            assert mode is GenerationMode.NEGATIVE, operation.path
        except Exception as exc:
            raise AssertionError(f"{operation.method.upper()} {operation.path} ({mode}): {exc}") from exc
    # negative mode: the routes with a body, a number or an enum (7 of 22 when written)
    assert fuzzed == len(operations) if mode is GenerationMode.POSITIVE else fuzzed >= 5, fuzzed
