"""The Jinja environment for pages and fragments, and rendering one named block of a template.

One template is the source of a full page and of its fragments: a live update renders only
the block it needs (``render_block``), which is what the SSE streams send.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

__all__ = ("environment", "render_block", "status_class", "template_environment")

_env: Environment | None = None


def _ago(value: datetime | None) -> str | Markup:
    """``5m 02s ago``, in a ``<time data-ago>`` that app.js keeps ticking."""
    if value is None:
        return "—"
    seconds = (datetime.now(UTC) - value).total_seconds()
    text = _span(seconds) + " ago" if seconds >= 1 else "just now"
    return Markup('<time datetime="{}" data-ago>{}</time>').format(_iso(value), text)


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


# OSMO's exit codes for attempts that ended without their process saying so
# (OSMO-REFERENCE.md §3.4): kept as the API gives them, explained where people read them.
_OSMO_EXIT_CODES = {
    3000: "never ran: an upstream group failed",
    3001: "backend error",
    3002: "server error",
    3003: "could not start",
    3004: "evicted",
    3005: "did not start in time",
    3006: "preempted",
    4000: "unknown",
}


def exit_label(code: int | None) -> str:
    """An exit code as the pages show it: the number, and what OSMO's own codes mean."""
    if code is None:
        return "—"
    meaning = _OSMO_EXIT_CODES.get(code)
    return f"{code} ({meaning})" if meaning else str(code)


def _duration(start: datetime | None, end: datetime | None = None) -> str | Markup:
    """How long from ``start`` to ``end``; without an end (still going), in a
    ``<time data-since>`` that app.js keeps ticking (the page froze between updates)."""
    if start is None:
        return "—"
    try:
        text = _span(((end or datetime.now(UTC)) - start).total_seconds())
    except (TypeError, OverflowError):  # a stored time no clock gives: never break the page
        return "—"
    if end is not None:
        return text
    return Markup('<time datetime="{}" data-since>{}</time>').format(_iso(start), text)


def _ts(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def status_class(status: str | None) -> str:
    """The CSS class that colours a status (shared by pages and the DAG)."""
    if not status:
        return "st-unknown"
    if status == "COMPLETED":
        return "st-ok"
    if status.startswith("FAILED"):
        return "st-failed"
    if status in ("RUNNING", "INITIALIZING"):
        return "st-running"
    return "st-waiting"


def _qs(params: dict[str, Any], **overrides: Any) -> str:
    """A query string of ``params`` with ``overrides``; empty values are left out."""
    merged = {**params, **overrides}
    return urlencode([(k, v) for k, v in merged.items() if v not in (None, "")])


def environment(directory: Path) -> Environment:
    global _env
    env = Environment(
        loader=FileSystemLoader(directory),
        autoescape=select_autoescape(["html", "xml"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ago=_ago, duration=_duration, ts=_ts, iso=_iso, status_class=status_class, qs=_qs,
        exit_label=exit_label,
    )  # fmt: skip
    # Macros are globals: a block rendered on its own (a live fragment) does not run the
    # template's top-level imports.
    macros: Any = env.get_template("_macros.html").module
    env.globals.update(
        status=macros.status, wf_cells=macros.wf_cells, status_counts=macros.status_counts,
        wf_submitted=macros.wf_submitted,
    )  # fmt: skip
    _env = env
    return env


def template_environment() -> Environment:
    assert _env is not None, "templating.environment() was not called"
    return _env


def render_block(template: str, block: str, context: dict[str, Any]) -> str:
    """Render one ``{% block %}`` of ``template`` with ``context``."""
    assert _env is not None, "templating.environment() was not called"
    tmpl = _env.get_template(template)
    ctx = tmpl.new_context(context)
    return "".join(tmpl.blocks[block](ctx))
