"""``gantry workflow submit --watch``: the groups and tasks live until the workflow ends.

A terminal gets a table redrawn in place (rich); a pipe or a file gets one line per change,
which is what a CI log wants."""

from __future__ import annotations

import sys
from typing import Any

from httpx_sse import EventSource
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from client.api import Api
from client.output import clean, duration

__all__ = ("describe", "watch_workflow")


def describe(event: str, data: dict[str, Any]) -> list[str]:
    """An event of a workflow's stream in words, a line per fact, safe to print (text in it
    was written by other users): what `events` and a piped `--watch` print."""
    waiting = f" (waiting: {data['waiting']})" if data.get("waiting") else ""
    if event == "snapshot":
        lines = [f"workflow {data.get('id')} {data.get('status')}{waiting}"]
        lines += [
            f"task {t['name']} {t['status']} (retry {t['retry']})"
            for g in data.get("groups", [])
            for t in g["tasks"]
        ]
    elif event == "task":
        code = f" exit {data['exit_code']}" if data.get("exit_code") is not None else ""
        reason = f": {data['reason']}" if data.get("reason") else ""
        lines = [f"task {data.get('name')} {data.get('status')}{code}{reason}"]
    elif event == "workflow":
        lines = [f"workflow {data.get('id')} {data.get('status')}{waiting}"]
    elif event == "end":
        lines = [f"end: {data.get('status')}"]
    else:
        lines = []
    return [clean(line) for line in lines]


def _table(snapshot: dict[str, Any], tasks: dict[str, dict[str, Any]]) -> Table:
    waiting = f"  waiting: {snapshot['waiting']}" if snapshot.get("waiting") else ""
    title = Text(clean(f"{snapshot.get('id')}  {snapshot.get('status')}{waiting}"))
    table = Table(title=title, box=None, title_justify="left", header_style="bold")
    for column in ("GROUP", "TASK", "STATUS", "RETRY", "EXIT", "DURATION", "REASON"):
        table.add_column(column, overflow="fold")
    for group in snapshot.get("groups", []):
        for t in group["tasks"]:
            now = tasks.get(t["name"], t)
            exit_code = now.get("exit_code")
            cells = (
                group["name"], now["name"], now["status"], now.get("retry", 0),
                "" if exit_code is None else exit_code,
                duration(now.get("started_at"), now.get("ended_at")), now.get("reason") or "",
            )  # fmt: skip
            table.add_row(*(Text(clean(c)) for c in cells))
    return table


def watch_workflow(api: Api, workflow_id: str, quiet: bool = False) -> str:
    """Follows the workflow's events until its ``end``; returns its last status."""
    console = Console(file=sys.stderr if quiet else sys.stdout, highlight=False, markup=False)
    live_view = console.is_terminal
    if not live_view:  # piped: whole lines, never wrapped at rich's 80 columns (a review)
        console = Console(file=console.file, highlight=False, markup=False, soft_wrap=True,
                          width=100_000)  # fmt: skip
    snapshot: dict[str, Any] = {}
    tasks: dict[str, dict[str, Any]] = {}
    status = "UNKNOWN"
    live = Live(console=console, auto_refresh=False) if live_view else None
    try:
        if live is not None:
            live.start()
        with api.stream(f"/api/v1/workflows/{workflow_id}/events") as response:
            for sse in EventSource(response).iter_sse():
                data = sse.json() if sse.data else {}
                if sse.event == "end":
                    status = data.get("status") or status
                    break
                if sse.event == "snapshot":
                    snapshot = data
                    status = data.get("status", status)
                    tasks = {t["name"]: t for g in data.get("groups", []) for t in g["tasks"]}
                elif sse.event == "task":
                    tasks[data["name"]] = {**tasks.get(data["name"], {}), **data}
                elif sse.event == "workflow":
                    status = data.get("status", status)
                    snapshot = {**snapshot, **data}
                if live is None:
                    for line in describe(sse.event, data):
                        console.print(line)
                else:
                    live.update(_table(snapshot, tasks), refresh=True)
    finally:
        if live is not None:
            live.update(_table({**snapshot, "status": status}, tasks), refresh=True)
            live.stop()
    console.print(f"{workflow_id} ended {status}")
    return status
