"""`limit` and `cursor` for the small lists (pools, backends, roles, tokens): every list takes
them (DESIGN.md §9). These lists are bounded (a user holds at most GANTRY_MAX_TOKENS_PER_USER
tokens; pools, backends and roles are made by admins), so a page is cut from the sorted list;
the workflow list, which is not bounded, pages in SQL (app/workflows/service.py)."""

from __future__ import annotations

from typing import Any

from litestar.params import Parameter

from app.bounds import text_query

__all__ = ("cursor_query", "limit_query", "page_of")


def limit_query(default: int = 100) -> Any:
    return Parameter(default=default, ge=1, le=500, description="items per page, 1-500")


def cursor_query() -> Any:
    return text_query(200, default=None, description="the next_cursor of the previous page")


def page_of(items: list[Any], limit: int, cursor: str | None, key: str = "name") -> dict[str, Any]:
    """``items`` (already in their order; dicts or Structs) after the one whose ``key`` is
    ``cursor``."""
    if cursor is not None:
        keys = [str(_key(item, key)) for item in items]
        start = keys.index(cursor) + 1 if cursor in keys else _after(items, key, cursor)
        items = items[start:]
    page = items[:limit]
    next_cursor = str(_key(page[-1], key)) if len(items) > limit else None
    return {"items": page, "next_cursor": next_cursor}


def _key(item: Any, key: str) -> Any:
    return item[key] if isinstance(item, dict) else getattr(item, key)


def _after(items: list[Any], key: str, cursor: str) -> int:
    """Where a cursor whose item is gone (deleted meanwhile) would have been: for numeric keys
    (ids, newest first) past every larger one, else by name order. Any text is a cursor."""
    if items and isinstance(_key(items[0], key), int):
        if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19:  # not "²"
            return len(items)  # no such id: nothing after it
        return sum(1 for item in items if int(_key(item, key)) > int(cursor))
    return sum(1 for item in items if str(_key(item, key)) <= cursor)
