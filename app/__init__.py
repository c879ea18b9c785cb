"""Gantry's control plane: API, pages, authentication, scheduling and central state."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gantry")  # one version for the API, its header and the CLI's check
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"
