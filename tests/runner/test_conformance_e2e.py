"""Every wave-1 row of ../shared/conformance/expect.yaml, end to end on a real stack."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import Stack, wait_for

pytestmark = [pytest.mark.conformance, pytest.mark.slow]


async def _run_row(stack: Stack, conformance: Path, row: dict[str, Any]) -> str | None:
    """None when the row reached its expected outcome, else what went wrong."""
    body: dict[str, Any] = {"spec": (conformance / "osmo" / row["file"]).read_text()}
    if row.get("set"):
        body["set"] = row["set"]
    async with stack.client() as client:
        r = await client.post("/api/v1/workflows", json=body)
        if "reject" in row:
            if r.status_code != 422:
                return f"expected 422, got {r.status_code}: {r.text[:300]}"
            problem = r.json()
            text = problem["detail"] + " ".join(e["message"] + e["path"] for e in problem["errors"])
            if row["reject"] not in text:
                return f"refusal does not mention {row['reject']!r}: {problem}"
            if not all(e["path"] for e in problem["errors"]):
                return f"refusal without a field path: {problem}"
            return None
        if r.status_code != 201:
            return f"submission refused ({r.status_code}): {r.text[:500]}"
        wid = r.json()["id"]
        wf = await wait_for(client, wid, timeout=240)
        if wf["status"] != row["status"]:
            return f"{wid} ended {wf['status']} ({wf['reason']}), expected {row['status']}"
        for task, text in (row.get("logs") or {}).items():
            log = (await client.get(f"/api/v1/workflows/{wid}/tasks/{task}/logs")).text
            if text not in log:
                return f"{wid}: log of {task} lacks {text!r}: {log[-500:]!r}"
    return None


async def test_wave_one_rows_reach_their_outcomes(stack: Stack, conformance: Path) -> None:
    rows = [r for r in yaml.safe_load((conformance / "expect.yaml").read_text()) if r["wave"] == 1]
    assert len(rows) >= 15
    problems = await asyncio.gather(*(_run_row(stack, conformance, r) for r in rows))
    failures = {
        f"{r['file']} {r.get('set') or ''}": p for r, p in zip(rows, problems, strict=True) if p
    }
    assert not failures, failures
