"""`gantry login URL --sso` as a person uses it: the CLI as a subprocess, a real Gantry server
and the real test provider (tests/oidc), the code approved (or refused) at the provider's pages.

The server runs in this test's event loop (tests.oidc_support.sso_stack), so the CLI runs as an
asyncio subprocess: a blocking read of its output would stop the server from answering it.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.conftest import cli_env
from tests.oidc_support import Sso, approve_device_code, refuse_device_code, sso_stack
from tests.support import ROOT, InProcessServer

pytestmark = pytest.mark.timeout(90)

# What the CLI says on stderr: "to sign in, open URL in a browser and … the code CODE …".
INSTRUCTIONS = re.compile(r"open (\S+) in a browser and .*?the code ([A-Z0-9-]+)")


@pytest.fixture
async def sso(database_url: str, tmp_path: Path) -> AsyncIterator[Sso]:
    async with sso_stack(database_url, tmp_path) as s:
        yield s


async def gantry(home: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = await _spawn(home, *args)
    return await _finish(proc, args, timeout)


async def _spawn(home: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", *args,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=cli_env(home), cwd=ROOT,
    )  # fmt: skip


async def _finish(
    proc: asyncio.subprocess.Process, args: tuple[str, ...], timeout: float, said: str = ""
) -> subprocess.CompletedProcess[str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), said + err.decode())


@dataclass
class SignIn:
    """A `gantry login --sso` waiting for its code to be approved."""

    proc: asyncio.subprocess.Process
    args: tuple[str, ...]
    uri: str
    code: str
    said: str  # stderr up to the instructions

    async def result(self, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return await _finish(self.proc, self.args, timeout, self.said)


async def start_sso_login(home: Path, url: str) -> SignIn:
    args = ("login", url, "--sso")
    proc = await _spawn(home, *args)
    assert proc.stderr is not None
    said = ""
    async with asyncio.timeout(30):
        while line := (await proc.stderr.readline()).decode():
            said += line
            if found := INSTRUCTIONS.search(line):
                return SignIn(proc, args, found[1], found[2], said)
    ended = await _finish(proc, args, 10, said)
    raise AssertionError(f"the CLI ended without showing a code: {ended}")


def _saved(home: Path) -> dict[str, object]:
    data = tomllib.loads((home / "config" / "gantry" / "config.toml").read_text())
    entry: dict[str, object] = data["servers"][data["current"]]
    return entry


async def _status_with(server: InProcessServer, token: str) -> int:
    async with server.client(token) as client:
        return (await client.get("/api/v1/me")).status_code


async def test_sso_login_mints_a_token_that_logout_revokes(sso: Sso, tmp_path: Path) -> None:
    base = sso.server.base
    signing_in = await start_sso_login(tmp_path, base)
    assert signing_in.uri.startswith(sso.provider.issuer + "/device"), signing_in.said
    assert f"the code {signing_in.code}" in signing_in.said and "expires in" in signing_in.said
    await approve_device_code(signing_in.uri, signing_in.code, "frank")
    done = await signing_in.result()
    assert done.returncode == 0, done
    assert "Traceback" not in done.stderr and "waiting for the approval" in done.stderr
    # stdout holds the outcome alone; the code and its page went to stderr.
    assert done.stdout.startswith(f"signed in to {base} as frank (saved as "), done.stdout
    assert signing_in.code not in done.stdout

    first = _saved(tmp_path)
    assert str(first["token"]).startswith("gnt_") and isinstance(first["minted_token_id"], int)
    me = await gantry(tmp_path, "whoami", "-o", "json")
    assert me.returncode == 0, me
    assert '"name": "frank"' in me.stdout and '"via": "token"' in me.stdout, me.stdout
    tokens = await gantry(tmp_path, "token", "list", "-o", "json")
    assert '"name": "gantry-cli@' in tokens.stdout, tokens.stdout

    # Signing in again revokes the token the first sign-in made, as --password does.
    again = await start_sso_login(tmp_path, base)
    await approve_device_code(again.uri, again.code, "frank")
    assert (await again.result()).returncode == 0
    second = _saved(tmp_path)
    assert second["token"] != first["token"]
    assert await _status_with(sso.server, str(first["token"])) == 401
    assert await _status_with(sso.server, str(second["token"])) == 200

    out = await gantry(tmp_path, "logout")
    assert out.returncode == 0 and "signed out of" in out.stdout, out
    assert await _status_with(sso.server, str(second["token"])) == 401  # revoked on the server


async def test_sso_login_refused_interrupted_or_without_its_provider(
    sso: Sso, tmp_path: Path
) -> None:
    base = sso.server.base
    signing_in = await start_sso_login(tmp_path, base)
    await refuse_device_code(signing_in.uri, signing_in.code)
    refused = await signing_in.result()
    assert refused.returncode == 3, refused
    assert "error: sign-in refused at the provider" in refused.stderr
    assert "Traceback" not in refused.stderr and refused.stdout == ""
    assert not (tmp_path / "config" / "gantry" / "config.toml").exists()  # nothing saved

    # Ctrl-C while it waits: it stops at once, without a traceback.
    waiting = await start_sso_login(tmp_path, base)
    waiting.proc.send_signal(signal.SIGINT)
    stopped = await waiting.result(10)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped
    assert stopped.stderr.endswith("error: sign-in stopped; nothing was saved\n"), stopped

    # The provider is down: one line naming it.
    await sso.provider.stop()
    down = await gantry(tmp_path, "login", base, "--sso")
    assert down.returncode == 1, down
    assert f"cannot reach the identity provider {sso.provider.issuer}" in down.stderr, down
    assert "Traceback" not in down.stderr and len(down.stderr.strip().splitlines()) == 1


async def test_sso_login_needs_single_sign_on_and_no_other_credentials(
    server: InProcessServer, tmp_path: Path
) -> None:
    plain = await gantry(tmp_path, "login", server.base, "--sso")
    assert plain.returncode == 1, plain
    assert plain.stderr.strip() == (
        "error: this server has no single sign-on; use --token or --password"
    )
    both = await gantry(tmp_path, "login", server.base, "--sso", "--token", "gnt_x")
    assert both.returncode == 2 and "give one of --token, --password and --sso" in both.stderr
