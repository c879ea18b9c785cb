"""The user CLI (``gantry login``, ``gantry workflow …``): speaks only the public JSON API.

It never imports ``app`` or ``runner`` (tests/cli/test_client_imports.py holds it), so it can
ship and run without the server's dependencies."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gantry")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

# The top-level words of the user CLI (client/cli.py); ``app.cli`` hands them over without
# importing it first, so the operator commands start as fast as before.
COMMANDS = frozenset({"login", "logout", "whoami", "version", "completion", "workflow",
                      "pool", "backend", "token"})  # fmt: skip
