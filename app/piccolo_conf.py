"""Piccolo's configuration: the engine (built from ``GANTRY_DATABASE_URL`` on first use) and apps.

Piccolo looks up ``DB`` through ``PICCOLO_CONF=app.piccolo_conf``. The engine is created
lazily because Piccolo's engine connects when it is constructed.
"""

from __future__ import annotations

from typing import Any

from piccolo.conf.apps import AppRegistry

APP_REGISTRY = AppRegistry(apps=["app.piccolo_app"])

_engine: Any = None


def __getattr__(name: str) -> Any:
    global _engine
    if name != "DB":
        raise AttributeError(name)
    if _engine is None:
        from app.db import make_engine
        from app.settings import get_settings

        settings = get_settings()
        if not settings.database_url:
            raise RuntimeError("GANTRY_DATABASE_URL is not set")
        _engine = make_engine(settings.database_url)
    return _engine
