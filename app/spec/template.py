"""Sandboxed Jinja rendering of specs, in child processes capped in time and memory.

Gantry's own tokens (``{{output}}``, ``{{input:N}}``, ``{{workflow_id}}``, ``{{uuid}}``,
``{{host:<task>}}``) are not valid Jinja, so they are shielded behind placeholders before
rendering and put back afterwards. A hostile template (``{% for %}`` nested four deep, huge
strings) must not take the server down: rendering runs in a worker process with an address
space limit, and a render that exceeds its time is killed and its worker replaced.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import pickle
import queue
import re
import secrets
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.spec.parse import ParsedSpec

__all__ = (
    "TOKEN_RE",
    "RenderFailure",
    "Shielded",
    "TemplateRenderer",
    "has_jinja",
    "shield",
)

TOKEN_RE = re.compile(
    r"\{\{\s*(output|workflow_id|uuid|input:\s*([0-9]+)|host:\s*([A-Za-z0-9][\w.-]*))\s*\}\}"
)
_JINJA_MARK = re.compile(r"\{\{|\{%|\{#")
# DESIGN §9: rendered specs are capped at 4 MiB (a 10,000-task spec renders to about 0.75 MiB).
MAX_RENDERED = 4 * 1024 * 1024


def _canonical(match: re.Match[str]) -> str:
    if match.group(2) is not None:
        return f"{{{{input:{int(match.group(2))}}}}}"
    if match.group(3) is not None:
        return f"{{{{host:{match.group(3)}}}}}"
    return f"{{{{{match.group(1)}}}}}"


@dataclass(slots=True)
class Shielded:
    """Text with tokens replaced by placeholders; ``restore`` puts canonical tokens back."""

    text: str
    nonce: str
    tokens: list[str]

    def restore(self, value: str) -> str:
        if self.nonce not in value:
            return value
        return re.sub(rf"GT{self.nonce}N([0-9]+)Z", lambda m: self.tokens[int(m.group(1))], value)


def shield(text: str) -> Shielded:
    """Replace Gantry's tokens with placeholders that survive Jinja and YAML unchanged."""
    nonce = secrets.token_hex(4)
    tokens: list[str] = []

    def repl(match: re.Match[str]) -> str:
        tokens.append(_canonical(match))
        return f"GT{nonce}N{len(tokens) - 1}Z"

    return Shielded(TOKEN_RE.sub(repl, text), nonce, tokens)


def has_jinja(text: str) -> bool:
    return _JINJA_MARK.search(text) is not None


class RenderFailure(Exception):
    """Rendering failed; ``line`` is the template line when Jinja knows it."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _render_in_worker(template: str, variables: dict[str, Any]) -> tuple[str, str, int | None]:
    """Runs in the worker: returns ("ok", text, None) or ("error", message, line)."""
    from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
    from jinja2.sandbox import SandboxedEnvironment, SecurityError

    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    try:
        text = env.from_string(template).render(**variables)
    except TemplateSyntaxError as exc:
        return "error", f"template syntax error: {exc.message}", exc.lineno
    except SecurityError as exc:
        return "error", f"the template does something the sandbox forbids: {exc}", _line_of(exc)
    except UndefinedError as exc:
        return (
            "error",
            f"template variable is undefined: {exc.message}; give it a value in "
            "`default-values` or in the submission's `set`",
            _line_of(exc),
        )
    except TemplateError as exc:
        return "error", f"template error: {exc}", _line_of(exc)
    except MemoryError:
        return "error", "the template needs more memory than a spec may use (256 MiB)", None
    except Exception as exc:  # a filter or operation failed on the given values
        return "error", f"template error: {type(exc).__name__}: {exc}", _line_of(exc)
    if len(text) > MAX_RENDERED or len(text.encode("utf-8", "surrogatepass")) > MAX_RENDERED:
        return "error", "the rendered spec is larger than 4 MiB", None
    return "ok", text, None


def _line_of(exc: BaseException) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<template>":
            line = frame.lineno
    return line


def _read_frame(stream: Any) -> Any:
    header = stream.read(4)
    if len(header) < 4:
        raise EOFError
    size = struct.unpack(">I", header)[0]
    body = stream.read(size)
    if len(body) < size:
        raise EOFError
    return pickle.loads(body)  # noqa: S301 - frames come from our own worker process


def _write_frame(stream: Any, value: Any) -> None:
    body = pickle.dumps(value)
    stream.write(struct.pack(">I", len(body)) + body)
    stream.flush()


class _Worker:
    __slots__ = ("fresh", "process")

    def __init__(self, memory_limit: int, cpu_limit: float) -> None:
        self.fresh = True
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.spec.render_worker", str(memory_limit), str(cpu_limit)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": _PYTHONPATH},
        )

    def send(self, request: Any) -> None:
        _write_frame(self.process.stdin, request)

    def wait_readable(self, timeout: float) -> bool:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        return bool(ready)

    def receive(self) -> Any:
        return _read_frame(self.process.stdout)

    def killed_for_cpu(self) -> bool:
        """Whether the kernel ended the worker for its CPU limit (SIGXCPU)."""
        with contextlib.suppress(Exception):
            return self.process.wait(1) == -signal.SIGXCPU
        return False

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
            self.process.wait(2)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]


# The worker imports `app.spec`, wherever this copy of the package lives.
_PYTHONPATH = str(pathlib.Path(__file__).resolve().parents[2])


class TemplateRenderer:
    """A small pool of spec workers (``app/spec/worker.py``), capped in CPU time and memory.

    ``parse`` runs the whole pipeline there (sections, YAML, Jinja, validation, planning),
    ``default_values`` reads a spec's defaults for the submit page, and ``render`` renders
    one template (for ``parse_spec`` in tests). Thread-safe and blocking: call it from a
    worker thread (``asyncio.to_thread``), never on the event loop.

    ``timeout`` is the CPU time one request may use, enforced in the worker; the wall-clock
    wait here is only a backstop for a worker that stops answering, and is generous because
    3 s of CPU can take several seconds on a busy machine.
    """

    def __init__(
        self,
        timeout: float = 3.0,
        memory_limit: int = 256 * 2**20,
        size: int = 2,
        max_tasks: int | None = None,
    ):
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.size = size
        self.max_tasks = max_tasks
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._started = 0
        self._closed = False

    def _acquire(self) -> _Worker:
        with self._lock:
            if self._idle.empty() and self._started < self.size:
                self._started += 1
                return _Worker(self.memory_limit, self.timeout)
        return self._idle.get()

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker`` and start its successor at once: requests may be waiting for it."""
        worker.kill()
        with self._lock:
            if self._closed:
                self._started -= 1
                return
        self._idle.put(_Worker(self.memory_limit, self.timeout))

    def _call(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        """Send one request; the answer, or ``("limit", "cpu" | "memory" | "time")``."""
        worker = self._acquire()
        try:
            worker.send(request)
            # A fresh worker first starts Python and imports (about 0.3 s of its own).
            backstop = max(10.0, 5 * self.timeout) + (2.0 if worker.fresh else 0.0)
            worker.fresh = False
            if not worker.wait_readable(backstop):
                self._replace(worker)
                return ("limit", "time")
            answer: tuple[Any, ...] = worker.receive()
        except (EOFError, OSError):
            cpu = worker.killed_for_cpu()
            self._replace(worker)
            return ("limit", "cpu" if cpu else "memory")
        except BaseException:
            self._replace(worker)
            raise
        if answer[0] == "limit":
            self._replace(worker)  # it exits after a limit; a fresh one takes its place
        else:
            self._idle.put(worker)
        if answer[0] == "crash":
            raise RuntimeError(f"the spec worker failed:\n{answer[1]}")
        return answer

    def _limit_message(self, limit: str) -> str:
        if limit == "cpu":
            return (
                f"checking the spec took longer than {self.timeout:g} s of CPU time, the limit "
                "for one spec; simplify its templates' loops or split the workflow"
            )
        if limit == "memory":
            return (
                f"checking the spec needed more than {self.memory_limit // 2**20} MiB of "
                "memory, the limit for one spec; make it smaller"
            )
        return f"checking the spec did not finish in {max(10.0, 5 * self.timeout):g} s; simplify it"

    def render(self, template: str, variables: dict[str, Any]) -> str:
        answer = self._call(("render", template, variables))
        if answer[0] == "limit":
            message = self._limit_message(answer[1])
            if answer[1] == "cpu":
                message = (
                    f"rendering the template took longer than {self.timeout:g} s; "
                    "simplify its loops"
                )
            raise RenderFailure(message)
        status, text, line = answer[1]
        if status != "ok":
            raise RenderFailure(text, line)
        return str(text)

    def parse(self, text: str, set_values: dict[str, Any] | None) -> ParsedSpec:
        """``parse_spec`` in a spec worker: a ``ParsedSpec``, or ``SpecError`` naming the issue."""
        from app.spec.errors import SpecError, SpecIssue
        from app.spec.parse import MAX_SPEC_BYTES, ParsedSpec, check_set_values

        if len(text) > MAX_SPEC_BYTES:  # not worth sending; the worker counts bytes
            raise SpecError([SpecIssue("spec", None, "the spec is larger than 1 MiB")])
        check_set_values(set_values)  # before pickling, which recurses once per level
        answer = self._call(("parse", text, set_values, self.max_tasks))
        if answer[0] == "ok":
            # Sleeping hands the interpreter to the event loop between pieces, if it waits
            # for it; sleep(0) does that without adding a millisecond per piece (0.1 s for
            # a 10,000-task plan) to every submission.
            return ParsedSpec.from_chunks(answer[1], lambda: time.sleep(0))
        if answer[0] == "refused":
            raise SpecError([SpecIssue(*i) for i in answer[1]], title=answer[2])
        raise SpecError(
            [SpecIssue("spec", None, self._limit_message(answer[1]))],
            title="The workflow spec exceeds a limit of the server",
        )

    def default_values(self, text: str) -> list[tuple[str, str]]:
        """The spec's scalar `default-values` as (name, text) pairs; [] when unreadable."""
        from app.spec.parse import MAX_SPEC_BYTES

        if len(text) > MAX_SPEC_BYTES:  # not worth sending; the worker counts bytes
            return []
        answer = self._call(("defaults", text))
        return list(answer[1]) if answer[0] == "ok" else []

    def close(self) -> None:
        with self._lock:
            self._closed = True
        while not self._idle.empty():
            self._idle.get_nowait().kill()
