"""``-o table|wide|json|yaml``: a table for people, the document itself for programs.

With ``json`` or ``yaml`` stdout holds only the document; warnings go to stderr."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ("Format", "age", "clean", "duration", "emit", "stdout")

# Tables are never wrapped or cut (kubectl's way): a long id stays one word a user can copy,
# and a pipe or a narrow terminal gets whole lines.
stdout = Console(soft_wrap=True, highlight=False, width=100_000)

# Control characters but tab: text other users wrote (a cancel reason, a task name) must not
# move the cursor, retitle the terminal or plant a hyperlink in it.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def clean(text: object) -> str:
    """``text`` safe to print to a terminal: control characters shown as ``?``."""
    return _CONTROL.sub("?", str(text))


class Format(StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


_UNITS = (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1))


def _span(seconds: float) -> str:
    whole = int(max(0, seconds))
    for unit, size, smaller, small in _UNITS:
        if whole >= size:
            rest = whole % size // small
            return f"{whole // size}{unit}" + (f"{rest}{smaller}" if rest else "")
    return f"{whole}s"


def age(value: str | None) -> str:
    """How long ago, as kubectl's AGE: ``5m``, ``2h10m``, ``3d``."""
    when = _time(value)
    return _span((datetime.now(UTC) - when).total_seconds()) if when else ""


def duration(start: str | None, end: str | None) -> str:
    began = _time(start)
    if began is None:
        return ""
    return _span(((_time(end) or datetime.now(UTC)) - began).total_seconds())


Column = tuple[str, Callable[[dict[str, Any]], Any]]


def emit(
    fmt: Format,
    document: Any,
    rows: Sequence[dict[str, Any]] | None = None,
    columns: Sequence[Column] = (),
    wide: Sequence[Column] = (),
) -> None:
    """Print ``document`` as JSON or YAML, or ``rows`` as a table of ``columns`` (and
    ``wide`` ones too with ``-o wide``)."""
    if fmt is Format.json:
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        return
    if fmt is Format.yaml:
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
        return
    shown = [*columns, *(wide if fmt is Format.wide else ())]
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for title, _ in shown:
        table.add_column(title, no_wrap=True)
    for row in rows if rows is not None else [document]:
        # Text, not markup: a cell reading "[/bogus]" or "[link=…]" is shown as it is.
        table.add_row(*(Text("" if (v := get(row)) is None else clean(v)) for _, get in shown))
    stdout.print(table)
