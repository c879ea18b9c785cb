"""``gantry login|logout|whoami|version|completion``, ``gantry workflow …``, ``gantry pool list``,
``gantry backend list`` and ``gantry token …`` (DESIGN.md §9), built on typer and rich.

``app.cli.main`` hands these commands here, so one ``gantry`` serves operators and users.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import click
import httpx
import typer
import yaml
from httpx_sse import EventSource

from client import COMMANDS, __version__, config
from client.api import Api, newer
from client.errors import DONE, FAILED, NOT_FOUND, NOT_SIGNED_IN, USAGE, CliError
from client.inline import Inlined, inline_localpaths
from client.output import Format, age, clean, duration, emit
from client.sso import sign_in as device_sign_in
from client.watch import describe, watch_workflow

__all__ = ("COMMANDS", "main")

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Gantry: submit and watch workflows from the command line.",
)
workflow_app = typer.Typer(no_args_is_help=True, help="Submit, watch and manage workflows.")
pool_app = typer.Typer(no_args_is_help=True, help="Pools you may use.")
backend_app = typer.Typer(no_args_is_help=True, help="Backends (one runner per cluster).")
token_app = typer.Typer(no_args_is_help=True, help="Your personal API tokens.")
app.add_typer(workflow_app, name="workflow")
app.add_typer(pool_app, name="pool")
app.add_typer(backend_app, name="backend")
app.add_typer(token_app, name="token")

TERMINAL_OK = "COMPLETED"

Output = Annotated[
    Format, typer.Option("-o", "--output", help="table, wide, json or yaml", case_sensitive=False)
]
ServerName = Annotated[
    str | None, typer.Option("--server", help="a server saved by `gantry login` (by name)")
]


def _api(server: str | None = None, *, require_token: bool = True) -> Api:
    return Api(config.current_server(server), require_token=require_token)


def _complete_workflow_ids(incomplete: str) -> list[str]:
    """Shell completion: ids of your recent workflows that start with what was typed."""
    try:
        with _api() as api:
            items = api.get("/api/v1/workflows", params={"limit": 100})["items"]
    except (CliError, httpx.HTTPError, KeyError, ValueError):
        return []
    return [w["id"] for w in items if w["id"].startswith(incomplete)]


WorkflowId = Annotated[
    str, typer.Argument(help="a workflow id", autocompletion=_complete_workflow_ids)
]


# -- signing in -----------------------------------------------------------------------------


@app.command()
def login(
    url: Annotated[str, typer.Argument(help="the server, such as http://127.0.0.1:8080")],
    token: Annotated[str | None, typer.Option(help="a Gantry token (gnt_…)")] = None,
    password: Annotated[
        bool, typer.Option("--password", help="sign in with a username and password")
    ] = False,
    username: Annotated[str | None, typer.Option(help="with --password")] = None,
    sso: Annotated[
        bool, typer.Option("--sso", help="single sign-on: approve a code at the identity provider")
    ] = False,
    name: Annotated[str | None, typer.Option(help="what to call this server here")] = None,
) -> None:
    """Sign in to a server and remember it (several servers, by name)."""
    if sum((token is not None, password, sso)) > 1:
        raise CliError("give one of --token, --password and --sso", USAGE)
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CliError(f"{url!r} is not a URL: give http://HOST:PORT or https://…", USAGE)
    if password and not _loopback_or_tls(url):
        print(f"warning: {url} is not https: the password crosses the network in clear",
              file=sys.stderr)  # fmt: skip
    minted: int | None = None
    with Api(config.Server("new", url, None), require_token=False) as anonymous:
        if password:
            if sys.stdin.isatty():
                user = username or input("username: ").strip()
                secret = getpass.getpass("password: ")
            elif username:
                user, secret = username, sys.stdin.readline()  # as docker's --password-stdin
            else:
                # Read as the username, a piped password was refused and kept in the audit
                # log as the name that tried (a new user's review found).
                raise CliError(
                    "with the password on stdin, give --username too (stdin holds only the "
                    "password)",
                    USAGE,
                )
            created = anonymous.post(
                "/api/v1/auth/token",
                "sign-in refused",
                json={"username": user, "password": secret.rstrip("\n"),
                      "name": f"gantry-cli@{socket.gethostname()}"[:100]},
            )  # fmt: skip
            token, minted = created["token"], created["id"]
        elif sso:
            token, minted = _sso_token(anonymous)
        elif token is None:
            token = getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.readline()
            token = token.strip()
            if not token:
                raise CliError("give --token gnt_…, --password, or a token on stdin", USAGE)
    server = config.Server(name or _server_name(url), url, token)
    with Api(server) as api:
        me = api.get("/api/v1/me", "the token was refused")
    before = config.saved(server.name)
    config.remember(server.name, url, token or "", minted)
    if before is not None and before.minted_id is not None and before.url == url:
        _revoke_minted(before)  # the token an earlier `login --password|--sso` made here
    print(
        # The name is the server's to choose: cleaned, as everything from a server is (a
        # hostile server's escape sequences retitled and cleared the terminal).
        f"signed in to {clean(url)} as {clean(me['name'])} (saved as {clean(server.name)!r} in "
        f"{config.config_path()})"
    )


def _sso_token(anonymous: Api) -> tuple[str, int]:
    """``login --sso``: the provider's device flow (client/sso.py), its access token traded
    for a new Gantry personal token (``POST /api/v1/tokens`` with the provider's JWT as Bearer).

    The CLI then holds a Gantry token, as with --password, instead of provider tokens it would
    have to refresh (and a refresh token to keep); the token's roles follow the user's Gantry
    account, and `gantry logout` revokes it."""
    doc = anonymous.get("/api/v1/auth/config", "cannot read how to sign in here")
    oidc = doc.get("oidc")
    if not oidc:
        raise CliError("this server has no single sign-on; use --token or --password")
    scopes = [str(s) for s in oidc.get("scopes") or []]
    access = device_sign_in(str(oidc["issuer"]), str(oidc["client_id"]), scopes)
    with Api(config.Server("new", anonymous.server.url, access)) as signed:
        created = signed.post(
            "/api/v1/tokens",
            "the server refused the provider's token",
            json={"name": f"gantry-cli@{socket.gethostname()}"[:100]},
        )
    return created["token"], created["id"]


def _server_name(url: str) -> str:
    """What a server is saved as: its host's first label (``prod`` for prod.example.com),
    unless that name is saved for another server (then the whole host): logging in to
    prod.evil.example must not replace, and so drop the token of, a saved prod.corp.com."""
    host = httpx.URL(url).host or "server"
    if host.replace(".", "").isdigit():
        return host
    short = host.split(".")[0]
    saved = config.saved(short)
    return short if saved is None or saved.url == url else host


@app.command()
def logout(server: ServerName = None) -> None:
    """Forget the current server's token (or the one named); a token that `login
    --password` or `login --sso` made is revoked on the server too."""
    entry = config.saved(server)
    if entry is not None and entry.minted_id is not None:
        _revoke_minted(entry)
    name = config.forget(server)
    print(f"signed out of {name!r}" if name else "not signed in")


def _revoke_minted(entry: config.Server) -> None:
    with Api(entry, require_token=False) as api:
        try:
            api.request("DELETE", f"/api/v1/tokens/{entry.minted_id}", "revoke the CLI's token")
        except CliError as exc:
            if exc.code not in (NOT_FOUND, NOT_SIGNED_IN):  # already gone: nothing to do
                print(f"warning: {clean(exc.message)}", file=sys.stderr)


def _loopback_or_tls(url: str) -> bool:
    parsed = httpx.URL(url)
    return parsed.scheme == "https" or parsed.host in ("127.0.0.1", "localhost", "::1")


@app.command()
def whoami(output: Output = Format.table, server: ServerName = None) -> None:
    """Who the current credentials belong to, and what they may use."""
    with _api(server) as api:
        me = api.get("/api/v1/me")
    emit(output, me, columns=[
        ("USER", lambda m: m["name"]), ("KIND", lambda m: m["kind"]),
        ("ROLES", lambda m: ",".join(m["roles"])), ("POOLS", lambda m: ",".join(m["pools"])),
        ("VIA", lambda m: m["via"]), ("SERVER", lambda m: api.server.url),
    ])  # fmt: skip


@app.command()
def version(output: Output = Format.table, server: ServerName = None) -> None:
    """This CLI's version and the server's (a warning when the CLI is older)."""
    doc: dict[str, Any] = {"client": __version__, "server": None, "protocol": None}
    try:
        api = _api(server, require_token=False)
    except CliError:
        api = None  # not signed in anywhere: the client's version alone
    if api is not None:
        with api:
            theirs = api.get("/api/v1/version")
            doc["server"], doc["protocol"] = theirs["version"], theirs["protocol"]
    emit(output, doc, columns=[("CLIENT", lambda d: d["client"]),
                               ("SERVER", lambda d: d["server"] or "(not signed in)")])  # fmt: skip
    if doc["server"] and newer(doc["server"], __version__):
        print(f"warning: this CLI ({__version__}) is older than the server ({doc['server']})",
              file=sys.stderr)  # fmt: skip


@app.command()
def completion(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish")],
) -> None:
    """Print a shell completion script: `source <(gantry completion bash)`."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:
        raise CliError(f"no completion for {shell!r}: give bash, zsh or fish", USAGE)
    command = typer.main.get_command(app)
    print(cls(command, {}, "gantry", "_GANTRY_COMPLETE").source())


# -- workflows ------------------------------------------------------------------------------


def _coerce(value: str) -> Any:
    """``--set`` values as OSMO reads them: integers and decimals become numbers."""
    for kind in (int, float):
        try:
            number = kind(value)
        except ValueError:
            continue
        if kind is float and number != number:  # "nan" stays text
            break
        return number
    return value


def _pairs(values: list[str], option: str, parse: Callable[[str], Any]) -> dict[str, Any]:
    """``KEY=VALUE`` arguments as a mapping, each value read by ``parse``."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        where = f"{option} {item!r}".strip()
        if not sep or not key:
            raise CliError(f"{where}: give KEY=VALUE", USAGE)
        try:
            out[key] = parse(value)
        except yaml.YAMLError as exc:
            raise CliError(f"{where}: {exc}", USAGE) from None
    return out


def _read_spec(file: Path) -> Inlined:
    try:
        text = file.read_text() if str(file) != "-" else sys.stdin.read()
    except FileNotFoundError:
        raise CliError(f"{file}: no such file", USAGE) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{file}: cannot be read ({exc})", USAGE) from None
    inlined = inline_localpaths(text, file.resolve())
    for name in inlined.files:  # what leaves this machine, said where the user sees it
        print(f"inlined localpath {clean(name)}", file=sys.stderr)
    return inlined


def _remap_lines(error: CliError, inlined: Inlined, file: Path) -> CliError:
    """Server line numbers count the inlined text's lines: give the user's file's."""
    if not inlined.inserted:
        return error
    import re

    def back(m: re.Match[str]) -> str:
        return f"(line {inlined.original_line(int(m.group(1)))})"

    return CliError(re.sub(r"\(line (\d+)\)", back, error.message), error.code)


Sets = Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE (numbers coerced)")]
SetStrings = Annotated[list[str] | None, typer.Option("--set-string", help="KEY=VALUE as text")]


def _submit(
    api: Api, file: Path, sets: list[str] | None, set_strings: list[str] | None,
    pool: str | None, priority: str | None, dry_run: bool,
) -> Any:  # fmt: skip
    """Posts the spec (localpaths inlined, values coerced); the server's answer."""
    inlined = _read_spec(file)
    values = {
        **_pairs(sets or [], "--set", _coerce),
        **_pairs(set_strings or [], "--set-string", str),
    }
    body: dict[str, Any] = {"spec": inlined.text, "dry_run": dry_run}
    if values:
        body["set"] = values
    if pool:
        body["pool"] = pool
    if priority:
        body["priority"] = priority.upper()
    try:
        what = "the spec is invalid" if dry_run else "the workflow was refused"
        return api.post("/api/v1/workflows", what, json=body)
    except CliError as exc:
        raise _remap_lines(exc, inlined, file) from None


_WORKFLOW_COLUMNS = [
    ("ID", lambda w: w["id"]), ("STATUS", lambda w: w["status"]), ("POOL", lambda w: w["pool"]),
    ("USER", lambda w: w["user"]),
    ("TASKS", lambda w: f"{w.get('tasks_completed', 0)}/{w.get('tasks_total', 0)}"),
    ("AGE", lambda w: age(w["submitted_at"])),
    ("DURATION", lambda w: duration(w.get("started_at"), w.get("ended_at"))),
]  # fmt: skip
_WORKFLOW_WIDE = [
    ("NAME", lambda w: w["name"]), ("PRIORITY", lambda w: w.get("priority")),
    ("SUBMITTED", lambda w: w["submitted_at"]), ("REASON", lambda w: w.get("reason")),
]  # fmt: skip


@workflow_app.command("submit")
def workflow_submit(
    file: Annotated[Path, typer.Argument(help="the spec (YAML, may be a template); - for stdin")],
    sets: Sets = None,
    set_strings: SetStrings = None,
    pool: Annotated[str | None, typer.Option(help="the pool (wins over the spec's)")] = None,
    priority: Annotated[str | None, typer.Option(help="HIGH, NORMAL or LOW")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check and plan, store nothing")
    ] = False,
    watch: Annotated[bool, typer.Option("--watch", help="follow it until it ends")] = False,
    output: Output = Format.table,
) -> None:
    """Submit a workflow; prints its id (with --watch, exits 0 only if it completes)."""
    if priority and priority.upper() not in ("HIGH", "NORMAL", "LOW"):
        raise CliError(f"--priority {priority!r}: give HIGH, NORMAL or LOW", USAGE)
    with _api() as api:
        result = _submit(api, file, sets, set_strings, pool, priority, dry_run)
        if dry_run:
            _print_plan(result, output)
            return
        if output in (Format.json, Format.yaml):
            emit(output, result)
        else:
            print(result["id"])
        if watch:
            status = watch_workflow(api, result["id"], quiet=output in (Format.json, Format.yaml))
            raise typer.Exit(DONE if status == TERMINAL_OK else FAILED)


def _print_plan(plan: dict[str, Any], output: Format) -> None:
    rows = [{"group": g["name"], **t} for g in plan.get("groups", []) for t in g.get("tasks", [])]
    emit(output, plan, rows, columns=[
        ("GROUP", lambda r: r["group"]), ("TASK", lambda r: r["name"]),
        ("IMAGE", lambda r: r.get("image")),
        ("RESOURCES", lambda r: " ".join(f"{k}={v}" for k, v in (r.get("resources") or {}).items()
                                         if v not in (None, 0, "0"))),
    ], wide=[("COMMAND", lambda r: " ".join(r.get("command") or []))])  # fmt: skip
    if output in (Format.table, Format.wide):
        count = sum(len(g.get("tasks", [])) for g in plan.get("groups", []))
        print(f"valid: {len(plan.get('groups', []))} group(s), {count} task(s), "
              f"pool {plan.get('pool')}", file=sys.stderr)  # fmt: skip


@workflow_app.command("validate")
def workflow_validate(
    file: Annotated[Path, typer.Argument(help="the spec; - for stdin")],
    sets: Sets = None,
    set_strings: SetStrings = None,
    pool: Annotated[str | None, typer.Option(help="the pool to check it against")] = None,
    output: Output = Format.table,
) -> None:
    """Check a spec and show its plan without submitting it (every problem at once)."""
    with _api() as api:
        plan = _submit(api, file, sets, set_strings, pool, None, True)
    _print_plan(plan, output)


@workflow_app.command("list")
def workflow_list(
    status: Annotated[
        list[str] | None, typer.Option(help="only this status (repeat for several)")
    ] = None,
    pool: Annotated[str | None, typer.Option()] = None,
    user: Annotated[str | None, typer.Option(help="someone else's (default: yours)")] = None,
    all_users: Annotated[bool, typer.Option("--all-users", help="everyone's you may see")] = False,
    name: Annotated[str | None, typer.Option(help="names containing this")] = None,
    since: Annotated[
        str | None, typer.Option(help="submitted since: a time (ISO 8601) or an age (2h, 7d)")
    ] = None,
    until: Annotated[str | None, typer.Option(help="submitted before: a time or an age")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 50,
    output: Output = Format.table,
    server: ServerName = None,
) -> None:
    """Workflows, newest first: yours unless --user or --all-users."""
    if user and all_users:
        raise CliError("give --user or --all-users, not both", USAGE)
    with _api(server) as api:
        who = user or (None if all_users else api.get("/api/v1/me")["name"])
        params = {
            "status": ",".join(status) if status else None, "pool": pool, "user": who,
            "name": name, "submitted_after": _when(since, "--since"),
            "submitted_before": _when(until, "--until"),
        }  # fmt: skip
        items = api.pages("/api/v1/workflows", params, limit)
    emit(output, items, items, _WORKFLOW_COLUMNS, _WORKFLOW_WIDE)


def _when(text: str | None, option: str) -> str | None:
    """An age (``2h``: that long ago) or a time (ISO 8601), as the API's ISO 8601 in UTC."""
    if text is None:
        return None
    if text[-1:] in "smhd" and text[:-1].isascii() and text[:-1].isdigit():
        return (datetime.now(UTC) - _duration(text, option)).isoformat()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{option} {text!r}: give an age (30m, 2h, 7d) or a time "
                       "(2026-12-01 or 2026-12-01T09:00:00Z)", USAGE) from None  # fmt: skip
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def _workflow_get(workflow_id: str, output: Format, server: str | None) -> None:
    with _api(server) as api:
        wf = api.get(f"/api/v1/workflows/{workflow_id}")
    if output in (Format.json, Format.yaml):
        emit(output, wf)
        return
    emit(output, wf, [wf], _WORKFLOW_COLUMNS, _WORKFLOW_WIDE)
    if wf.get("reason"):
        _say(f"reason: {wf['reason']}")
    if wf.get("canceled_by"):
        _say(f"canceled by: {wf['canceled_by']}")
    if wf.get("waiting"):
        _say(f"waiting: {wf['waiting']}")
    rows = [{"group": g["name"], **t} for g in wf["groups"] for t in g["tasks"]]
    print()
    emit(output, rows, rows, [
        ("GROUP", lambda r: r["group"]), ("TASK", lambda r: r["name"]),
        ("STATUS", lambda r: r["status"]), ("RETRY", lambda r: r["retry"]),
        ("EXIT", lambda r: r.get("exit_code")), ("NODE", lambda r: r.get("node")),
        ("DURATION", lambda r: duration(r.get("started_at"), r.get("ended_at"))),
        ("REASON", lambda r: r.get("reason")),
    ], wide=[("BACKEND", lambda r: r.get("backend")), ("IMAGE", lambda r: r.get("image"))])  # fmt: skip


@workflow_app.command("get")
def workflow_get(
    workflow_id: WorkflowId, output: Output = Format.table, server: ServerName = None
) -> None:
    """A workflow with its groups and tasks."""
    _workflow_get(workflow_id, output, server)


@workflow_app.command("query")
def workflow_query(
    workflow_id: WorkflowId, output: Output = Format.table, server: ServerName = None
) -> None:
    """The same as `get` (OSMO's name for it)."""
    _workflow_get(workflow_id, output, server)


@workflow_app.command("logs")
def workflow_logs(
    workflow_id: WorkflowId,
    task: Annotated[
        str | None, typer.Option(help="one task (default: every task, prefixed)")
    ] = None,
    retry: Annotated[int | None, typer.Option(min=0, help="an earlier attempt")] = None,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="until the task ends")] = False,
    timestamps: Annotated[
        bool, typer.Option("--timestamps", help="start each line with when it was written")
    ] = False,
    server: ServerName = None,
) -> None:
    """A task's log (stdout and stderr as printed); -f streams it as kubectl logs -f does."""
    with _api(server) as api:
        if retry is not None and task is None:
            raise CliError("--retry needs --task", USAGE)
        if follow:  # a follow that waits says why before it waits, as kubectl does
            _say_why_empty(api, workflow_id, task, follow)
        if task is not None:
            printed = _print_log(api, workflow_id, task, retry, follow, timestamps)
        else:
            # Every task merged by the server, each line prefixed, as the page's merged view.
            path = f"/api/v1/workflows/{workflow_id}/logs"
            printed = _print_stream(api, path, follow, timestamps)
        if not printed and not follow:
            _say_why_empty(api, workflow_id, task, follow)


def _say_why_empty(api: Api, workflow_id: str, task: str | None, follow: bool) -> None:
    """A log of a task (or workflow) that has not started says so on stderr, with why it
    waits, as kubectl does."""
    wf = api.get(f"/api/v1/workflows/{workflow_id}")
    why = f"; waiting: {clean(wf['waiting'])}" if wf.get("waiting") else ""
    then = "following until it ends" if follow else "`-f` waits for it"
    if task is None:
        if wf["status"] == "PENDING":
            print(f"{clean(workflow_id)} has not started yet{why}; {then}", file=sys.stderr)
        return
    for group in wf["groups"]:
        for t in group["tasks"]:
            if t["name"] == task and t["status"] in _NOT_STARTED:
                print(f"task {clean(task)} has not started yet ({clean(t['status'])}){why}; "
                      f"{then}", file=sys.stderr)  # fmt: skip


_NOT_STARTED = ("WAITING", "PROCESSING", "SCHEDULING", "INITIALIZING")


def _print_log(
    api: Api, workflow_id: str, task: str, retry: int | None, follow: bool, timestamps: bool
) -> int:
    """Prints one task's log; returns the bytes printed."""
    extra = {"retry": retry} if retry is not None else {}
    path = f"/api/v1/workflows/{workflow_id}/tasks/{task}/logs"
    return _print_stream(api, path, follow, timestamps, extra)


def _print_stream(
    api: Api, path: str, follow: bool, timestamps: bool, extra: dict[str, Any] | None = None
) -> int:
    """Copies a log from the server to stdout as it arrives; returns the bytes printed."""
    params: dict[str, Any] = {**(extra or {})}
    if follow:
        params["follow"] = "true"
    if timestamps:
        params["timestamps"] = "true"
    out = sys.stdout.buffer
    printed = 0
    with api.stream(path, params=params) as response:
        for chunk in response.iter_bytes():
            out.write(chunk)
            out.flush()
            printed += len(chunk)
    return printed


@workflow_app.command("events")
def workflow_events(
    workflow_id: WorkflowId,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="until the workflow ends")] = False,
    output: Output = Format.table,
    server: ServerName = None,
) -> None:
    """The workflow's events so far, oldest first (as its page's timeline), and with -f
    every change after them until it ends."""
    with _api(server) as api:
        history = api.pages(f"/api/v1/workflows/{workflow_id}/history", {}, None)
        for item in reversed(history):
            _print_past(item, output)
        if not follow:
            return
        with api.stream(f"/api/v1/workflows/{workflow_id}/events") as response:
            for sse in EventSource(response).iter_sse():
                data = sse.json() if sse.data else {}
                if sse.event == "snapshot":  # its tasks: the history above said it
                    keep = ("id", "status", "waiting")
                    _print_event("workflow", {k: data.get(k) for k in keep}, output)
                else:
                    _print_event(sse.event, data, output)
                if sse.event == "end":
                    return


def _print_past(item: dict[str, Any], output: Format) -> None:
    """One event of the history, at the time it happened."""
    import json

    if output in (Format.json, Format.yaml):
        sys.stdout.write(json.dumps({"event": "history", "data": item}) + "\n")
        return
    at = datetime.fromisoformat(str(item["at"]).replace("Z", "+00:00")).astimezone(UTC)
    code = f" exit {item['exit_code']}" if item.get("exit_code") is not None else ""
    retry = f" retry {item['retry']}" if item.get("retry") else ""
    reason = f": {item['reason']}" if item.get("reason") else ""
    line = f"task {item['task']}{retry} {item['status']}{code} by {item['source']}{reason}"
    sys.stdout.write(f"{at:%H:%M:%S}  {clean(line)}\n")


def clean_lines(text: str) -> str:
    """A message of several lines, each made safe."""
    return "\n".join(clean(line) for line in text.split("\n"))


def _say(text: str) -> None:
    """One line of text from the server (written by other users, too), made safe."""
    sys.stdout.write(clean(text) + "\n")


def _print_event(event: str, data: dict[str, Any], output: Format) -> None:
    import json

    if output in (Format.json, Format.yaml):
        sys.stdout.write(json.dumps({"event": event, "data": data}) + "\n")
        sys.stdout.flush()
        return
    # The snapshot is the state now, not an event: no time is made up for it.
    when = "now     " if event == "snapshot" else datetime.now(UTC).strftime("%H:%M:%S")
    for line in describe(event, data):
        sys.stdout.write(f"{when}  {line}\n")
    sys.stdout.flush()


@workflow_app.command("cancel")
def workflow_cancel(
    workflow_ids: Annotated[
        list[str],
        typer.Argument(help="one or more workflow ids", autocompletion=_complete_workflow_ids),
    ],
    reason: Annotated[str | None, typer.Option(help="why (shown on the workflow)")] = None,
    force: Annotated[bool, typer.Option("--force", help="kill at once, no grace")] = False,
    output: Output = Format.table,
    server: ServerName = None,
) -> None:
    """Cancel workflows; exits 1 if any could not be cancelled."""
    done, failed = [], []
    with _api(server) as api:
        for wid in workflow_ids:
            try:
                body = {"force": force, **({"reason": reason} if reason else {})}
                done.append(api.post(f"/api/v1/workflows/{wid}/cancel", f"cancel {wid}", json=body))
            except CliError as exc:
                failed.append(exc)
                print(f"error: {clean_lines(exc.message)}", file=sys.stderr)
    if done or output in (Format.json, Format.yaml):
        emit(output, done, done, _WORKFLOW_COLUMNS)
    if failed:
        codes = {e.code for e in failed}
        raise typer.Exit(NOT_FOUND if codes == {NOT_FOUND} else FAILED)


@workflow_app.command("spec")
def workflow_spec(
    workflow_id: WorkflowId,
    rendered: Annotated[bool, typer.Option("--rendered", help="after templating")] = False,
    output: Annotated[
        Format | None,
        typer.Option("-o", "--output", help="json or yaml: the spec, its rendering and values"),
    ] = None,
    server: ServerName = None,
) -> None:
    """The spec as submitted (or as rendered)."""
    with _api(server) as api:
        spec = api.get(f"/api/v1/workflows/{workflow_id}/spec")
    if output in (Format.json, Format.yaml):
        emit(output, spec)
        return
    text = spec["rendered_spec"] if rendered else spec["spec"]
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@workflow_app.command("resubmit")
def workflow_resubmit(
    workflow_id: WorkflowId,
    pool: Annotated[str | None, typer.Option(help="another pool")] = None,
    output: Output = Format.table,
    server: ServerName = None,
) -> None:
    """Submit a workflow's spec again, as it was submitted, with the same pool and values."""
    with _api(server) as api:
        spec = api.get(f"/api/v1/workflows/{workflow_id}/spec")
        old = api.get(f"/api/v1/workflows/{workflow_id}")
        body: dict[str, Any] = {"spec": spec["spec"], "pool": pool or old["pool"]}
        if spec.get("set"):
            body["set"] = spec["set"]
        if old.get("priority"):
            body["priority"] = old["priority"]
        created = api.post("/api/v1/workflows", "the workflow was refused", json=body)
    if output in (Format.json, Format.yaml):
        emit(output, created)
    else:
        print(created["id"])


# -- pools, backends, tokens ----------------------------------------------------------------


@pool_app.command("list")
def pool_list(output: Output = Format.table, server: ServerName = None) -> None:
    """The pools you may use."""
    with _api(server) as api:
        items = api.pages("/api/v1/pools", {}, None)
    emit(output, items, items, [("NAME", lambda p: p["name"]),
                                ("DESCRIPTION", lambda p: p.get("description"))])  # fmt: skip


PoolName = Annotated[str, typer.Argument(help="the pool")]


@pool_app.command("get")
def pool_get(name: PoolName, output: Output = Format.table, server: ServerName = None) -> None:
    """A pool's configuration (`-o yaml` gives what `gantry pool apply` takes back)."""
    with _api(server) as api:
        pool = api.get(f"/api/v1/pools/{name}")
    _print_pool(pool, output)


@pool_app.command("apply")
def pool_apply(
    name: PoolName,
    file: Annotated[Path, typer.Option("-f", "--file", help="YAML or JSON, or - for stdin")],
    output: Output = Format.table,
    server: ServerName = None,
) -> None:
    """Replace a pool's configuration with a file's (pool:Admin), as `kubectl apply`."""
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
        document = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"{file}: {exc}", USAGE) from None
    if not isinstance(document, dict):
        raise CliError(f"{file}: give a pool's configuration as a mapping", USAGE)
    with _api(server) as api:
        pool = api.send("PUT", f"/api/v1/pools/{name}", "not applied", json=document)
    _print_pool(pool, output)


@pool_app.command("set")
def pool_set(
    name: PoolName,
    values: Annotated[list[str], typer.Argument(help="FIELD=VALUE (YAML: true, 3600, null)")],
    output: Output = Format.table,
    server: ServerName = None,
) -> None:
    """Change some top-level fields of a pool's configuration (pool:Admin), such as
    `maintenance=true` or `max_exec_timeout=86400`."""
    changes = _pairs(values, "", yaml.safe_load)
    with _api(server) as api:
        pool = api.send("PATCH", f"/api/v1/pools/{name}", "not changed", json=changes)
    _print_pool(pool, output)


def _print_pool(pool: dict[str, Any], output: Format) -> None:
    rows = [{"field": k, "value": v} for k, v in pool.items()]
    emit(output, pool, rows, [("FIELD", lambda r: r["field"]),
                              ("VALUE", lambda r: _plain(r["value"]))])  # fmt: skip


def _plain(value: Any) -> str:
    """A configuration value in one line: JSON for maps and lists."""
    import json

    return value if isinstance(value, str) else json.dumps(value)


@backend_app.command("list")
def backend_list(output: Output = Format.table, server: ServerName = None) -> None:
    """Backends of the pools you may use, and whether their runner is connected."""
    with _api(server) as api:
        items = api.pages("/api/v1/backends", {}, None)
    emit(output, items, items, [
        ("NAME", lambda b: b["name"]), ("POOL", lambda b: b["pool"]),
        ("CONNECTED", lambda b: "yes" if b.get("connected") else "no"),
        ("HEARTBEAT", lambda b: age(b.get("last_heartbeat")) if b.get("last_heartbeat") else ""),
    ], wide=[("CAPACITY", lambda b: _capacity(b.get("capacity") or {}))])  # fmt: skip


def _capacity(capacity: dict[str, Any]) -> str:
    """A backend's nodes in a line: ``2 CPU, 23.5 GiB, 0 GPU on 1 node(s); 32 slots``."""
    nodes = capacity.get("nodes") or []
    cpu = sum(n.get("cpu", 0) for n in nodes)
    gib = sum(n.get("memory", 0) for n in nodes) / 2**30
    gpu = sum(n.get("gpu", 0) for n in nodes)
    text = f"{cpu:g} CPU, {gib:.1f} GiB, {gpu:g} GPU on {len(nodes)} node(s)"
    return text + (f"; {capacity['slots']} slots" if capacity.get("slots") is not None else "")


def _duration(text: str, option: str = "--expires") -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not (number.isascii() and number.isdigit()) or len(number) > 9:
        raise CliError(f"{option} {text!r}: give a number and s, m, h or d (such as 30d)", USAGE)
    return timedelta(seconds=int(number) * units[unit])


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="what the token is for")],
    expires: Annotated[str | None, typer.Option(help="lifetime such as 12h or 30d")] = None,
    output: Output = Format.table,
    server: ServerName = None,
) -> None:
    """Create a personal token; it is printed once."""
    body: dict[str, Any] = {"name": name}
    if expires:
        body["expires_at"] = (datetime.now(UTC) + _duration(expires)).isoformat()
    with _api(server) as api:
        created = api.post("/api/v1/tokens", "the token was refused", json=body)
    if output in (Format.json, Format.yaml):
        emit(output, created)
        return
    print(created["token"])
    print(f"token {created['id']} {created['name']!r} expires {created['expires_at']}; "
          "it is shown only this once", file=sys.stderr)  # fmt: skip


@token_app.command("list")
def token_list(output: Output = Format.table, server: ServerName = None) -> None:
    """Your tokens (never their values)."""
    with _api(server) as api:
        items = api.pages("/api/v1/tokens", {}, None)
    emit(output, items, items, [
        ("ID", lambda t: t["id"]), ("NAME", lambda t: t["name"]),
        ("CREATED", lambda t: age(t.get("created_at"))), ("EXPIRES", lambda t: t.get("expires_at")),
        ("LAST USED", lambda t: age(t.get("last_used_at")) if t.get("last_used_at") else "never"),
    ])  # fmt: skip


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="the token's id (from `gantry token list`)")],
    output: Output = Format.table,
    server: ServerName = None,
) -> None:
    """Revoke one of your tokens."""
    with _api(server) as api:
        api.request("DELETE", f"/api/v1/tokens/{token_id}", f"revoke token {token_id}")
    if output in (Format.json, Format.yaml):
        emit(output, {"id": token_id, "revoked": True})
    else:
        print(f"token {token_id} revoked")


# -- entry ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors are one readable line on stderr and an exit code, never a
    traceback."""
    command = typer.main.get_command(app)
    instruction = os.environ.get("_GANTRY_COMPLETE")
    if instruction:
        # The shell asks for completions (the script `gantry completion SHELL` printed). Click
        # answers them; typer's own handler speaks a different protocol than that script.
        from click.shell_completion import shell_complete

        return shell_complete(command, {}, "gantry", "_GANTRY_COMPLETE", instruction)
    try:
        # Not standalone: errors come back here; an Exit's code is returned, not raised.
        code = command.main(args=argv, prog_name="gantry", standalone_mode=False)
    except CliError as exc:
        print(f"error: {clean_lines(exc.message)}", file=sys.stderr)
        return exc.code
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        # An answer not shaped as the API says (a proxy's sign-in page, another program on
        # the port): one line, not a traceback.
        print(f"error: the server's answer was not what the Gantry API gives ({type(exc).__name__}"
              f": {clean(exc)})", file=sys.stderr)  # fmt: skip
        return FAILED
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.ClickException as exc:
        exc.show()
        return USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return DONE
    return code if isinstance(code, int) else DONE
