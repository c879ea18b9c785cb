"""schemathesis over /schema/openapi.json against a live in-process server (issue 7, item 10).

Every operation of the schema gets a few generated requests as the bootstrap admin, as a runner
(on the runner API) and without a credential; no answer may be a server error, and every answer
must be one the schema documents, with the documented content type and a body matching its
schema. Bounded: a few examples per operation, no shrinking, so the file runs in about a minute.

schemathesis calls the server synchronously (requests), so it runs in a worker thread while this
test's event loop serves the in-process server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import ADMIN_TOKEN, RUNNER_TOKEN, InProcessServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 8  # per operation and generation mode
# The runner's NDJSON stream is not fuzzed as the runner: with a session id it really opened it
# is a long-lived stream that only ends after GANTRY_STREAM_MAX_LIFETIME, and generated ids are
# never live sessions (they end at once with 404, which the admin and anonymous runs cover).
NOT_FUZZED_AS_RUNNER = {("GET", "/api/runner/v1/sessions/{session_id}/stream")}


def _fuzz(base: str, token: str | None, prefix: str | None, skip: set[tuple[str, str]]) -> int:
    schema = schemathesis.openapi.from_url(
        f"{base}/schema/openapi.json",
        timeout=30,
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},  # the schema needs a sign-in
    )
    headers = {"authorization": f"Bearer {token}"} if token else {}
    session = requests.Session()
    tested = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if prefix is not None and not operation.path.startswith(prefix):
            continue
        if (operation.method.upper(), operation.path) in skip:
            continue

        @settings(
            max_examples=2 * EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        # Valid requests (deep paths) and invalid ones (the validation at the edge).
        @given(
            case=operation.as_strategy(GenerationMode.POSITIVE)
            | operation.as_strategy(GenerationMode.NEGATIVE)
        )
        def run(case: Any) -> None:
            # Generated ids never name a live workflow or session, so even the streaming
            # operations (SSE, NDJSON, followed logs) answer at once; the timeout guards that.
            response = case.call(base_url=base, session=session, headers=headers, timeout=30)
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
        tested += 1
    session.close()
    assert not failures, "\n\n".join(failures)
    return tested


@pytest.mark.timeout(300)
async def test_the_api_as_admin_conforms_to_its_schema(server: InProcessServer) -> None:
    tested = await asyncio.to_thread(_fuzz, server.base, ADMIN_TOKEN, None, set())
    assert tested >= 18  # every operation in the schema was exercised


@pytest.mark.timeout(300)
async def test_the_api_without_a_credential_conforms_to_its_schema(
    server: InProcessServer,
) -> None:
    assert await asyncio.to_thread(_fuzz, server.base, None, None, set()) >= 18


@pytest.mark.timeout(300)
async def test_the_runner_api_as_a_runner_conforms_to_its_schema(
    server: InProcessServer,
) -> None:
    tested = await asyncio.to_thread(
        _fuzz, server.base, RUNNER_TOKEN, "/api/runner/v1", NOT_FUZZED_AS_RUNNER
    )
    assert tested >= 4
