"""Where the CLI keeps its servers: ``$XDG_CONFIG_HOME/gantry/config.toml`` (mode 0600).

    current = "local"

    [servers.local]
    url = "http://127.0.0.1:8080"
    token = "gnt_…"

``GANTRY_URL`` and ``GANTRY_TOKEN`` override the current server, for scripts and CI.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from client.errors import NOT_SIGNED_IN, USAGE, CliError

__all__ = ("Server", "config_path", "current_server", "forget", "load", "remember", "saved")


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    token: str | None
    minted_id: int | None = None  # the id of a token `login --password|--sso` created


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gantry" / "config.toml"


def load() -> dict[str, Any]:
    path = config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {"servers": {}}
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path} is not valid TOML ({exc}); fix or remove it", USAGE) from None
    data.setdefault("servers", {})
    return data


def _save(data: dict[str, Any]) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written beside and renamed into place, created 0600: the file holds tokens.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".toml")  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            tomli_w.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remember(name: str, url: str, token: str, minted_id: int | None = None) -> None:
    """Saves a server as the current one; ``minted_id`` marks a token that `gantry login
    --password` or `--sso` created, which `gantry logout` revokes again."""
    data = load()
    entry: dict[str, Any] = {"url": url, "token": token}
    if minted_id is not None:
        entry["minted_token_id"] = minted_id
    data["servers"][name] = entry
    data["current"] = name
    _save(data)


def saved(name: str | None) -> Server | None:
    """The saved entry ``name`` (the current one when None), or None."""
    data = load()
    name = name or data.get("current")
    entry = data["servers"].get(name) if name else None
    if not entry:
        return None
    return Server(name=name or "", url=entry.get("url", ""), token=entry.get("token") or None,
                  minted_id=entry.get("minted_token_id"))  # fmt: skip


def forget(name: str | None) -> str | None:
    """Drops a server's token (the current one when ``name`` is None); returns its name."""
    data = load()
    name = name or data.get("current")
    if not name or name not in data["servers"]:
        return None
    del data["servers"][name]
    if data.get("current") == name:
        data.pop("current", None)
        if data["servers"]:
            data["current"] = next(iter(data["servers"]))
    _save(data)
    return name


def current_server(name: str | None = None) -> Server:
    """The server to talk to: GANTRY_URL/GANTRY_TOKEN, else ``name`` or the current one."""
    env_url, env_token = os.environ.get("GANTRY_URL"), os.environ.get("GANTRY_TOKEN")
    data = load()
    chosen = name or data.get("current")
    entry = data["servers"].get(chosen, {}) if chosen else {}
    if name and not entry:
        known = ", ".join(sorted(data["servers"])) or "none"
        raise CliError(f"no server named {name!r} (known: {known}); run `gantry login URL`", USAGE)
    url = env_url or entry.get("url")
    if not url:
        raise CliError(
            "not signed in: run `gantry login URL` (or set GANTRY_URL and GANTRY_TOKEN)",
            NOT_SIGNED_IN,
        )
    url = url.rstrip("/")
    saved = entry.get("token") if entry.get("url", "").rstrip("/") == url else None
    # A saved token goes only to the server it was saved for: GANTRY_URL pointing elsewhere
    # (a repository's .envrc, a CI variable) must not receive it.
    token = env_token if env_token is not None else saved
    return Server(name=chosen or "env", url=url, token=token or None)
