"""Entry point of a spec worker: ``python -m app.spec.render_worker <memory bytes> <cpu s>``."""

from __future__ import annotations

import sys

from app.spec.worker import serve

if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 2.0)
