"""With a certificate, the control plane serves TLS and runners get HTTP/2 through ALPN."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import (
    ADMIN_TOKEN,
    ROOT,
    Stack,
    ensure_local_backend,
    free_port,
    runner_in_loop,
    self_signed_cert,
    submit,
    wait_for,
)

pytestmark = pytest.mark.slow


async def test_tls_serves_h2_to_runners_and_https_to_browsers(
    database_url: str, tmp_path: Path
) -> None:
    cert, key = self_signed_cert(tmp_path)
    await ensure_local_backend(database_url)
    port = free_port()
    env = Stack(database_url, tmp_path).server_env(port)
    env.update(GANTRY_TLS_CERTFILE=str(cert), GANTRY_TLS_KEYFILE=str(key))
    log = open(tmp_path / "serve.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        async with httpx.AsyncClient(
            base_url=base,
            verify=trust,
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        ) as client:
            for _ in range(100):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            async with runner_in_loop(base, tmp_path / "runner", verify=str(cert)) as runner:
                probe = await runner.client.http.get("/sessions/none/stream")
                assert probe.http_version == "HTTP/2"
                wid = await submit(
                    client,
                    "workflow:\n  name: tls\n  tasks:\n  - {name: t, image: x, command: [echo, secure]}\n",
                )
                wf = await wait_for(client, wid, timeout=30)
                assert wf["status"] == "COMPLETED"
        # Cookies are Secure behind TLS; browsers keep HTTP/1.1 or h2 as they negotiate.
        async with httpx.AsyncClient(base_url=base, verify=trust) as browser:
            login = await browser.get("/login")
            assert login.status_code == 200
            assert "secure" in login.headers.get("set-cookie", "").lower()
    finally:
        proc.terminate()
        proc.wait(15)
