"""Handlers' dependencies (app/deps.py): what a handler names is what it gets, and no body
field may share a dependency's name (Litestar would answer a mistake in it with a 500)."""

from __future__ import annotations

from pathlib import Path

import msgspec
from litestar import Litestar, post
from litestar.di import Provide
from litestar.params import JSONBody

from app.asgi import create_app
from app.deps import SERVICES, clashes
from tests.support import make_settings


class _Body(msgspec.Struct):
    roles: list[str]


@post("/x")
async def _handler(data: JSONBody[_Body]) -> None:
    return None


def test_a_body_field_named_like_a_dependency_is_found() -> None:
    app = Litestar([_handler], dependencies={"roles": Provide(lambda: 1, sync_to_thread=False)})
    assert clashes(app) == [f"{_handler} _Body.roles"]


def test_gantry_has_no_such_clash_and_provides_every_service(tmp_path: Path) -> None:
    app = create_app(make_settings("postgresql://nobody@127.0.0.1/none", tmp_path))
    assert clashes(app) == [], "a body field shares a dependency's name"
    assert set(app.dependencies) == {*SERVICES, "principal", "note"}
