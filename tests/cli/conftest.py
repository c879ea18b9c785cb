"""The CLI as users run it: `gantry …` subprocesses against a real `gantry serve` and runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import Databases
from tests.support import ROOT, Stack


def cli_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `gantry` run: nothing of the test's own, its config under ``home``."""
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "COLUMNS": "200",
    }
    return {**base, **(extra or {})}


@dataclass
class Cli:
    stack: Stack
    home: Path  # XDG_CONFIG_HOME of these runs

    def run(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 120, cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "app", *args],
            input=input,
            capture_output=True,
            text=True,
            env=cli_env(self.home, env),
            cwd=cwd or ROOT,
            timeout=timeout,
        )

    def ok(self, *args: str, **kw: Any) -> str:
        r = self.run(*args, **kw)
        assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        return r.stdout

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.ok(*args, "-o", "json", **kw))


@pytest.fixture(scope="module")
async def cli_stack(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """One server and runner for a module's tests (each test signs in afresh)."""
    s = Stack(await databases.fresh(), tmp_path_factory.mktemp("cli-stack"))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
def cli(cli_stack: Stack, tmp_path: Path) -> Cli:
    return Cli(cli_stack, tmp_path)
