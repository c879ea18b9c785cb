"""client/ speaks only the public API: it never imports app or runner (as runner/ never
imports app)."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.support import ROOT


def test_no_client_module_imports_app_or_runner() -> None:
    offenders = []
    for path in sorted((ROOT / "client").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in ("app", "runner")
            ]
    assert offenders == []


def test_loading_every_user_command_loads_nothing_of_app() -> None:
    code = (
        "import sys, client.cli, client.watch\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('app', 'runner')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
