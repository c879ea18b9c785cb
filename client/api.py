"""The JSON API as the CLI uses it: one httpx client, problem details as one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from client import __version__
from client.config import Server
from client.errors import FAILED, NOT_FOUND, NOT_SIGNED_IN, CliError

__all__ = ("Api", "describe_problem", "newer")


def newer(a: str, b: str) -> bool:
    """Whether version ``a`` is later than ``b`` (numeric parts; anything else is equal)."""

    def parts(v: str) -> tuple[int, ...]:
        out = []
        for piece in v.split("+")[0].split("."):
            digits = "".join(c for c in piece if c in "0123456789")
            out.append(int(digits) if digits else 0)
        return tuple(out)

    return parts(a) > parts(b)


def describe_problem(response: httpx.Response) -> list[str]:
    """The server's refusal as readable lines: each error's field, line and message."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().splitlines()
        return [f"the server answered {response.status_code}: {text[0] if text else ''}".strip()]
    if not isinstance(body, dict):
        return [f"the server answered {response.status_code}"]
    errors = body.get("errors") or []
    lines = []
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict):
            lines.append(str(error))
            continue
        where = error.get("path") or ""
        if error.get("line"):
            where = f"{where} (line {error['line']})" if where else f"line {error['line']}"
        lines.append(f"{where}: {error.get('message', '')}" if where else error.get("message", ""))
    detail = str(body.get("detail") or body.get("title") or response.status_code)
    spec_like = any(isinstance(e, dict) and e.get("line") for e in errors or [])
    if not lines:
        lines.append(detail)
    elif not spec_like and detail not in lines[0]:
        # Not a spec's problems (those carry lines): what was wrong, then how to fix it.
        lines = [f"{detail} ({'; '.join(lines)})"]
    if body.get("setting"):
        lines[-1] += f" (limit {body.get('value')}, set by {body['setting']})"
    return lines


class Api:
    def __init__(self, server: Server, *, require_token: bool = True) -> None:
        if require_token and not server.token:
            raise CliError(
                f"not signed in to {server.url}: run `gantry login {server.url}`", NOT_SIGNED_IN
            )
        self.server = server
        headers = {"user-agent": f"gantry-cli/{__version__}"}
        if server.token:
            headers["authorization"] = f"Bearer {server.token}"
        self.http = httpx.Client(
            base_url=server.url,
            headers=headers,
            timeout=httpx.Timeout(30.0, read=60.0),
            event_hooks={"response": [self._check_version]},
        )
        self._warned = False

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check_version(self, response: httpx.Response) -> None:
        theirs = response.headers.get("x-gantry-version")
        if theirs and not self._warned and newer(theirs, __version__):
            self._warned = True
            print(
                f"warning: this gantry CLI is {__version__}, older than the server "
                f"({theirs}); update it (pip install -U gantry)",
                file=sys.stderr,
            )

    def _fail(self, response: httpx.Response, what: str) -> CliError:
        lines = describe_problem(response)
        code = {401: NOT_SIGNED_IN, 404: NOT_FOUND}.get(response.status_code, FAILED)
        if response.status_code == 401:
            lines[-1] += f"; sign in again with `gantry login {self.server.url}`"
        retry = response.headers.get("retry-after")
        if response.status_code in (429, 503) and retry:
            lines[-1] += f"; try again in {retry} s"
        prefix = f"{what}: " if what else ""
        return CliError(prefix + "\n  ".join(lines), code)

    def request(self, method: str, path: str, what: str = "", **kw: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.server.url}: {exc}") from None
        if response.is_error:
            raise self._fail(response, what)
        return response

    def get(self, path: str, what: str = "", **kw: Any) -> Any:
        return self.request("GET", path, what, **kw).json()

    def post(self, path: str, what: str = "", **kw: Any) -> Any:
        return self.send("POST", path, what, **kw)

    def send(self, method: str, path: str, what: str = "", **kw: Any) -> Any:
        """A request that changes something (POST, PUT, PATCH); its JSON answer, if any."""
        response = self.request(method, path, what, **kw)
        return response.json() if response.content else None

    @contextmanager
    def stream(self, path: str, what: str = "", **kw: Any) -> Iterator[httpx.Response]:
        """A response read as it arrives (logs, events): no read timeout."""
        try:
            with self.http.stream("GET", path, timeout=httpx.Timeout(30.0, read=None), **kw) as r:
                if r.is_error:
                    r.read()
                    raise self._fail(r, what)
                yield r
        except httpx.HTTPError as exc:
            raise CliError(f"the connection to {self.server.url} broke: {exc}") from None

    def pages(self, path: str, params: dict[str, Any], limit: int | None) -> list[Any]:
        """Every item of a paged list (up to ``limit``), following ``next_cursor``."""
        items: list[Any] = []
        cursor = None
        seen: set[str] = set()
        while True:
            want = 500 if limit is None else min(500, limit - len(items))
            query = {
                k: v
                for k, v in {**params, "limit": want, "cursor": cursor}.items()
                if v is not None
            }
            page = self.get(path, params=query)
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor or cursor in seen or (limit is not None and len(items) >= limit):
                return items  # a cursor seen before would loop for ever
            seen.add(cursor)
