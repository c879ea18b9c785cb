"""Entry point of a template render worker: ``python -m app.spec.render_worker <memory bytes>``."""

from __future__ import annotations

import sys

from app.spec.template import worker_main

if __name__ == "__main__":
    worker_main(int(sys.argv[1]))
