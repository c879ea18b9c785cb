"""The executor interface: what the runner loop needs from whatever runs attempts."""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass

from runner.protocol import Capacity, Launch, Stream

__all__ = ("STREAMS", "AttemptState", "Executor", "Held", "LogPiece", "expand_vars")

STREAMS: tuple[Stream, Stream] = ("stdout", "stderr")


@dataclass(frozen=True, slots=True)
class AttemptState:
    """Where an attempt stands: alive (``running``) in a phase, or ended.

    ``phase`` is "pending" (waiting to be placed, SCHEDULING), "initializing" (placed, being
    prepared), "running" or "ended". An ended attempt has an exit code, or a FAILED_* status
    when it could not run at all, with a reason a person can read.
    """

    running: bool
    exit_code: int | None = None
    status: str | None = None  # a FAILED_* status when it could not run at all
    reason: str | None = None
    phase: str = "running"
    node: str | None = None  # where it runs, when the executor knows better than the host name

    def __post_init__(self) -> None:
        if not self.running and self.phase != "ended":
            object.__setattr__(self, "phase", "ended")


@dataclass(frozen=True, slots=True)
class Held:
    """An attempt this executor holds (for the inventory after a restart)."""

    launch: Launch
    epoch: int
    started: bool


@dataclass(frozen=True, slots=True)
class LogPiece:
    """Bytes of one stream of an attempt's log, from byte ``offset``."""

    stream: Stream
    offset: int
    data: bytes
    at: float | None = None  # when the task wrote them (seconds since the epoch), if known


class Executor(abc.ABC):
    """Runs attempts. Everything must survive the runner process: state lives outside it."""

    async def open(self) -> None:  # noqa: B027 - optional, like close()
        """Connect to what runs the attempts (called before the first session)."""

    async def close(self) -> None:  # noqa: B027
        """Let go of connections; attempts go on running."""

    @abc.abstractmethod
    async def capacity(self) -> Capacity:
        """Total resources this executor can run attempts on."""

    @abc.abstractmethod
    async def held(self) -> list[Held]:
        """Attempts prepared or started and not yet forgotten (the inventory)."""

    @abc.abstractmethod
    async def prepare(self, launch: Launch) -> None:
        """Record the attempt durably; after this returns, ``held`` includes it."""

    @abc.abstractmethod
    async def set_epoch(self, attempt: int, epoch: int) -> None:
        """Remember the session epoch that now owns the attempt."""

    @abc.abstractmethod
    async def start(self, attempt: int) -> AttemptState:
        """Start a prepared attempt; returns its state right after starting."""

    @abc.abstractmethod
    async def state(self, attempt: int) -> AttemptState:
        """Is it still running, or how did it end?"""

    @abc.abstractmethod
    async def stop(self, attempt: int, grace: float) -> None:
        """SIGTERM (or the like), then after ``grace`` seconds SIGKILL; 0 kills at once."""

    @abc.abstractmethod
    async def read_log(self, attempt: int, stream: str, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes of the attempt's ``stream`` from byte ``offset``."""

    async def read_logs(
        self, attempt: int, offsets: dict[Stream, int], limit: int, max_pieces: int
    ) -> list[LogPiece]:
        """New log bytes of both streams from ``offsets``, in the order the task wrote them
        where the executor knows it (then each piece carries its time): at most ``limit``
        bytes of each stream and ``max_pieces`` pieces. This default reads each stream on
        its own (one piece each)."""
        pieces = []
        for stream in STREAMS:
            data = await self.read_log(attempt, stream, offsets[stream], limit)
            if data:
                pieces.append(LogPiece(stream, offsets[stream], data))
        return pieces

    @abc.abstractmethod
    async def forget(self, attempt: int) -> None:
        """The control plane has its end: drop it from ``held`` (keep its output for inputs)."""


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables expand, ``$$`` is a literal ``$``,
    and an undefined ``$(VAR)`` stays as written."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR.sub(repl, text)
