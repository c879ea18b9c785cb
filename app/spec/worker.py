"""The spec worker: a child process that runs the whole spec pipeline under hard caps.

Splitting sections, YAML, Jinja, validation and planning all run here, never in the server's
event loop or its threads: a hostile spec of at most 1 MiB then costs at most ``cpu_limit``
seconds of CPU and ``memory_limit`` bytes, and is answered with the limit it hit.

- CPU: a profiling timer (``ITIMER_PROF``, process CPU time) raises ``CpuLimitExceeded`` at
  the next bytecode once a request has used ``cpu_limit`` seconds; ``RLIMIT_CPU`` a little
  above it lets the kernel end a worker stuck in C code (the parent replaces it).
- Memory: ``RLIMIT_AS`` caps the address space above what the imports use.
- Priority: the worker runs at nice 10, below the server's event loop.
- The collector is off while a request runs: building a 10,000-task plan allocates some
  200,000 objects and the generational collector would triple the time (cycles are
  collected after each answer; RLIMIT_AS bounds them meanwhile).

Requests and answers are pickled frames on stdin and stdout (see ``template.py``).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from app.spec.errors import SpecError
from app.spec.template import RenderFailure, _read_frame, _render_in_worker, _write_frame

__all__ = ("CpuLimitExceeded", "serve", "template_defaults")


class CpuLimitExceeded(BaseException):
    """Raised by the CPU timer; a BaseException so that no `except Exception` swallows it."""


class _InProcessRenderer:
    """Jinja in this (already capped) process, for ``parse_spec``."""

    def render(self, template: str, variables: dict[str, Any]) -> str:
        status, text, line = _render_in_worker(template, variables)
        if status != "ok":
            raise RenderFailure(text, line)
        return text


def template_defaults(text: str) -> list[tuple[str, str]]:
    """The spec's scalar `default-values`, as text for the submit page's form fields."""
    from app.spec.parse import MAX_SPEC_BYTES
    from app.spec.source import split_sections

    if len(text) > MAX_SPEC_BYTES or "\x00" in text:
        return []
    try:
        values = split_sections(text).default_values
    except SpecError:
        return []
    out = []
    for name, value in values.items():
        if isinstance(value, dict | list):
            continue  # structured defaults are edited in the spec itself
        out.append((str(name), "" if value is None else str(value)))
    return out


def _parse(text: str, set_values: dict[str, Any] | None, max_tasks: int | None) -> Any:
    from app.spec.parse import parse_spec

    parsed = parse_spec(text, set_values, _InProcessRenderer(), max_tasks=max_tasks)
    return parsed.to_chunks()


def _render(template: str, variables: dict[str, Any]) -> tuple[str, str, int | None]:
    return _render_in_worker(template, variables)


_HANDLERS: dict[str, Callable[..., Any]] = {
    "render": _render,
    "parse": _parse,
    "defaults": template_defaults,
}


def _on_cpu_timer(signum: int, frame: Any) -> None:
    raise CpuLimitExceeded


def serve(memory_limit: int, cpu_limit: float) -> None:
    """Answer requests from stdin on stdout until stdin closes or a limit is hit."""
    import jinja2.sandbox  # noqa: F401  (imported before the limits are set)
    import yaml  # noqa: F401

    import app.spec.parse  # noqa: F401

    # Below the server in the CPU scheduler: on a small machine a spec being checked must
    # not take the core the event loop needs.
    with contextlib.suppress(OSError):
        os.nice(10)
    with open("/proc/self/statm") as f:
        vsize = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = vsize + memory_limit
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGPROF, _on_cpu_timer)
    # Ctrl-C in a terminal reaches the whole process group: the server that owns this worker
    # ends it by closing its stdin, so a KeyboardInterrupt here would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    gc.disable()
    while True:
        try:
            kind, *args = _read_frame(stdin)
        except EOFError:
            return
        # The kernel's backstop: a little above the timer, for a worker stuck in C code.
        used = time.process_time()
        soft = math.ceil(used + cpu_limit) + 2
        if cpu_hard != resource.RLIM_INFINITY:
            soft = min(soft, cpu_hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, cpu_hard))
        answer: tuple[Any, ...]
        try:
            try:
                signal.setitimer(signal.ITIMER_PROF, cpu_limit)
                answer = ("ok", _HANDLERS[kind](*args))
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
        except SpecError as exc:
            issues = [(i.path, i.line, i.message) for i in exc.issues]
            answer = ("refused", issues, exc.title)
        except CpuLimitExceeded:
            answer = ("limit", "cpu")
        except MemoryError:
            answer = ("limit", "memory")
        except RecursionError:  # nesting is bounded before anything recurses; a backstop
            answer = ("limit", "memory")
        except Exception:  # a bug, not the spec's fault: the server reports it as one
            answer = ("crash", traceback.format_exc(limit=-8))
        try:
            _write_frame(stdout, answer)
        except MemoryError:
            _write_frame(stdout, ("limit", "memory"))
        if answer[0] == "limit":
            return  # a fresh worker takes over: nothing half-built stays behind
        gc.collect()
