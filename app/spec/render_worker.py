"""Entry point of a spec worker: ``python -m app.spec.render_worker <memory bytes> <cpu s>``."""

from __future__ import annotations

import signal
import sys

from app.spec.worker import serve

if __name__ == "__main__":
    # The server starts, replaces and stops its workers; Ctrl-C in a terminal reaches the whole
    # process group, and a worker must not answer it with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 2.0)
