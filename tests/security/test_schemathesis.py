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

# schemathesis's own strategies use `random` (a deprecation hypothesis reports on every run).
pytestmark = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisDeprecationWarning",
    "ignore:XDG_RUNTIME_DIR is not set",
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 8  # per operation and generation mode
# Nothing is excluded: the streaming operations (the runner's NDJSON stream, SSE, followed logs)
# are fuzzed too, because a generated id never names a live session or workflow (session ids are
# random UUIDs), so they answer at once; what a live stream sends is covered by
# tests/integration/test_protocol_guards.py, as OpenAPI cannot describe NDJSON lines.


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
    tested = await asyncio.to_thread(_fuzz, server.base, RUNNER_TOKEN, "/api/runner/v1", set())
    assert tested >= 4


ONE = "workflow:\n  name: one\n  tasks:\n  - {name: t, image: x, command: [echo, hi]}\n"


def _real_answers(base: str) -> list[int]:
    """Requests with real ids (which generation never finds): their answers match the schema."""
    schema = schemathesis.openapi.from_url(
        f"{base}/schema/openapi.json",
        timeout=30,
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    statuses = []

    def call(path: str, method: str, **kw: Any) -> Any:
        case = schema[path][method].Case(**kw)
        response = case.call(base_url=base, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)
        statuses.append(response.status_code)
        return response

    call("/api/v1/workflows", "POST", body={"spec": ONE, "dry_run": True})  # the plan
    created = call("/api/v1/workflows", "POST", body={"spec": ONE}).json()
    wid = {"workflow_id": created["id"]}
    call("/api/v1/workflows", "GET", query={"limit": 1})
    call("/api/v1/workflows/{workflow_id}", "GET", path_parameters=wid)
    call("/api/v1/workflows/{workflow_id}/spec", "GET", path_parameters=wid)
    call(
        "/api/v1/workflows/{workflow_id}/tasks/{task}/logs",
        "GET",
        path_parameters={**wid, "task": "t"},
    )
    call("/api/v1/workflows/{workflow_id}/cancel", "POST", path_parameters=wid, body={})
    call("/api/v1/workflows", "POST", body={"spec": "workflow: {}"})  # refused: 422 with errors
    call("/api/v1/tokens", "POST", body={"name": "mine"})
    call("/api/v1/tokens", "GET")
    call("/api/v1/backends", "GET")
    call("/api/v1/pools", "GET")
    return statuses


async def test_real_answers_conform_to_the_schema(server: InProcessServer) -> None:
    statuses = await asyncio.to_thread(_real_answers, server.base)
    assert statuses[:2] == [200, 201] and 422 in statuses


async def test_the_schema_names_problems_refused_fields_and_the_plan(
    server: InProcessServer,
) -> None:
    async with server.client(ADMIN_TOKEN) as api:
        doc = (await api.get("/schema/openapi.json")).json()
    components = doc["components"]["schemas"]
    for body in ("SubmitRequest", "CancelRequest", "PoolIn", "BackendIn", "TokenIn"):
        assert components[body]["additionalProperties"] is False, body
    submit_answers = doc["paths"]["/api/v1/workflows"]["post"]["responses"]
    assert submit_answers["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/DryRunPlan"
    )
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            answers = operation["responses"]
            for status in ("400", "401"):
                assert "application/problem+json" in answers[status]["content"], (
                    method,
                    path,
                    status,
                )
            if "{" in path and method != "put":  # PUT creates what is not there
                assert "404" in answers, (method, path)
    assert "422" in submit_answers


async def test_every_answer_of_the_api_has_an_exact_schema(server: InProcessServer) -> None:
    """Handlers return Structs, so the schema says what each answer holds: no success answer
    is an untyped object (a dict) or has no schema at all (the CLI is built on it)."""
    async with server.client(ADMIN_TOKEN) as api:
        doc = (await api.get("/schema/openapi.json")).json()
    components = doc["components"]["schemas"]

    def resolved(schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = components[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    untyped = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                for media_type, content in answer.get("content", {}).items():
                    schema = resolved(content.get("schema") or {})
                    if not schema or (
                        schema.get("type") == "object" and not schema.get("properties")
                    ):
                        untyped.append(f"{method.upper()} {path} {status} {media_type}")
    assert not untyped, f"answers without an exact schema: {untyped}"
    listing = doc["paths"]["/api/v1/workflows"]["get"]["parameters"]
    assert {p["name"] for p in listing} >= {
        "status", "pool", "name", "user", "submitted_after", "submitted_before", "limit", "cursor"
    }, "the workflow list's filters (WorkflowFilter) must be documented"  # fmt: skip
