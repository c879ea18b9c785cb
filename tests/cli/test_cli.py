"""Every `gantry` user command as a subprocess against a real server: exit codes, output
formats, localpath inlining, --watch, logs -f, completion (issue 9)."""

from __future__ import annotations

import base64
import json
import re
import stat
import time
from datetime import datetime
from pathlib import Path

import httpx
import yaml

from tests.cli.conftest import Cli
from tests.support import ADMIN_PASSWORD, ADMIN_TOKEN

PASSING = """\
workflow:
  name: hello
  tasks:
  - name: hello
    image: ubuntu:24.04
    command: ["sh", "-c", "echo out one; echo err one >&2; echo out two"]
"""
FAILING = """\
workflow:
  name: broken
  tasks:
  - name: boom
    image: ubuntu:24.04
    command: ["sh", "-c", "echo about to fail; exit 3"]
"""
SLOW = """\
workflow:
  name: slow
  tasks:
  - name: waits
    image: ubuntu:24.04
    command: ["sh", "-c", "sleep 2; echo late line; sleep 1; echo last line"]
"""
FOREVER = """\
workflow:
  name: forever
  tasks:
  - name: sleeper
    image: ubuntu:24.04
    command: ["sleep", "600"]
"""


def _login(cli: Cli) -> None:
    cli.ok("login", cli.stack.base, "--token", ADMIN_TOKEN, "--name", "dev")


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def test_signing_in_and_out_and_the_exit_codes_of_credentials(cli: Cli) -> None:
    r = cli.run("whoami")
    assert r.returncode == 3 and "gantry login" in r.stderr and "Traceback" not in r.stderr

    bad = cli.run("login", cli.stack.base, "--token", "gnt_wrong")
    assert bad.returncode == 3 and "401" not in bad.stdout, bad.stderr
    assert not (cli.home / "config" / "gantry" / "config.toml").exists()  # nothing saved

    out = cli.ok("login", cli.stack.base, "--token", ADMIN_TOKEN, "--name", "dev")
    assert "as admin" in out
    path = cli.home / "config" / "gantry" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ADMIN_TOKEN in path.read_text() and 'current = "dev"' in path.read_text()

    me = cli.json("whoami")  # with -o json stdout is the document alone
    assert me["name"] == "admin" and "admin" in me["roles"]
    assert yaml.safe_load(cli.ok("whoami", "-o", "yaml"))["name"] == "admin"

    # A password traded for a new token (POST /api/v1/auth/token), saved as a second server.
    cli.ok("login", cli.stack.base, "--password", "--username", "admin", "--name", "pw",
           input=ADMIN_PASSWORD + "\n")  # fmt: skip
    saved = path.read_text()
    assert "[servers.pw]" in saved and saved.count("gnt_") == 2
    names = [t["name"] for t in cli.json("token", "list")]
    assert any(n.startswith("gantry-cli@") for n in names)
    wrong = cli.run("login", cli.stack.base, "--password", "--username", "admin",
                    input="not the password\n")  # fmt: skip
    assert wrong.returncode == 3 and "wrong username or password" in wrong.stderr
    # A piped password without --username: read as the username, it was refused and kept in
    # the audit log as the name that tried (a new user's review). Now refused before sending.
    piped = cli.run("login", cli.stack.base, "--password", input="a-secret-password\n")
    assert piped.returncode == 2 and "--username" in piped.stderr, piped.stderr
    audit = httpx.get(f"{cli.stack.base}/api/v1/audit",
                      headers={"authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
    assert audit.status_code == 200 and "a-secret-password" not in audit.text

    # GANTRY_URL and GANTRY_TOKEN override the file (scripts, CI).
    env = {"GANTRY_URL": cli.stack.base, "GANTRY_TOKEN": "gnt_wrong"}
    assert cli.run("whoami", env=env).returncode == 3
    empty = {"XDG_CONFIG_HOME": str(cli.home / "elsewhere"), "GANTRY_URL": cli.stack.base,
             "GANTRY_TOKEN": ADMIN_TOKEN}  # fmt: skip
    assert cli.json("whoami", env=empty)["name"] == "admin"

    versions = cli.json("version")
    assert versions["client"] == versions["server"] and versions["protocol"] == 1

    again = cli.ok("login", cli.stack.base, "--password", "--username", "admin", "--name", "pw",
                   input=ADMIN_PASSWORD + "\n")  # fmt: skip
    assert again  # signing in again revoked the token the first sign-in made
    minted = [t for t in cli.json("token", "list") if t["name"].startswith("gantry-cli@")]
    assert len(minted) == 1, minted
    assert "signed out of 'pw'" in cli.ok("logout")
    assert not [t for t in cli.json("token", "list", "--server", "dev")
                if t["name"].startswith("gantry-cli@")]  # fmt: skip  # revoked on the server
    assert cli.ok("whoami", "--server", "dev")  # the other server is still there
    assert cli.run("whoami", "--server", "nowhere").returncode == 2
    # usage errors are 2
    assert cli.run("workflow", "get").returncode == 2
    assert cli.run("workflow", "list", "-o", "xml").returncode == 2
    assert cli.run("login", "not-a-url", "--token", "x").returncode == 2


def test_submit_watch_logs_events_spec_resubmit_and_cancel(cli: Cli, tmp_path: Path) -> None:
    _login(cli)
    passing = _write(tmp_path, "hello.yaml", PASSING)
    r = cli.run("workflow", "submit", str(passing), "--watch")
    assert r.returncode == 0, (r.stdout, r.stderr)
    wid = r.stdout.splitlines()[0]
    assert wid.startswith("hello-") and "ended COMPLETED" in r.stdout

    failing = cli.run("workflow", "submit", str(_write(tmp_path, "f.yaml", FAILING)), "--watch")
    assert failing.returncode == 1 and "ended FAILED" in failing.stdout, failing.stdout
    failed_id = failing.stdout.splitlines()[0]

    log = cli.ok("workflow", "logs", wid, "--task", "hello")
    # (written microseconds apart: their order between streams is not promised, see
    # tests/runner/test_log_order.py for lines a few milliseconds apart)
    assert sorted(log.splitlines()) == ["err one", "out one", "out two"]
    stamped = cli.ok("workflow", "logs", wid, "--task", "hello", "--timestamps").splitlines()
    assert sorted(line.split(" ", 1)[1] for line in stamped) == ["err one", "out one", "out two"]
    merged = cli.ok("workflow", "logs", failed_id)
    assert "[boom] about to fail\n" in merged

    got = cli.json("workflow", "get", wid)
    assert got["status"] == "COMPLETED" and got["groups"][0]["tasks"][0]["exit_code"] == 0
    assert cli.json("workflow", "query", failed_id)["status"].startswith("FAILED")
    table = cli.ok("workflow", "get", failed_id)
    assert "boom" in table and "FAILED" in table
    listed = [w["id"] for w in cli.json("workflow", "list")]
    assert wid in listed and failed_id in listed
    assert [w["id"] for w in cli.json("workflow", "list", "--status", "COMPLETED")] == [wid]
    both = cli.json("workflow", "list", "--status", "COMPLETED", "--status", "FAILED")
    assert {w["id"] for w in both} == {wid, failed_id}
    assert {w["id"] for w in cli.json("workflow", "list", "--since", "1h")} >= {wid, failed_id}
    assert cli.json("workflow", "list", "--until", "2000-01-01") == []
    assert cli.run("workflow", "list", "--since", "last week").returncode == 2
    bogus = cli.run("workflow", "list", "--status", "BOGUS")
    assert bogus.returncode == 1 and "not a workflow status" in bogus.stderr
    assert cli.json("workflow", "spec", wid)["spec"] == PASSING
    wide = cli.ok("workflow", "list", "-o", "wide", env={"COLUMNS": "60"})
    assert any(wid in line.split() for line in wide.splitlines())  # never cut or wrapped

    events = cli.ok("workflow", "events", wid, "-f")
    assert "workflow " + wid + " COMPLETED" in events and "end: COMPLETED" in events
    # Without -f: the history, oldest first, at the times it happened (as the page's timeline).
    past = [json.loads(x) for x in cli.ok("workflow", "events", wid, "-o", "json").splitlines()]
    assert past and {p["event"] for p in past} == {"history"}
    statuses = [p["data"]["status"] for p in past]
    assert statuses[-1] == "COMPLETED" and "RUNNING" in statuses, statuses
    told = cli.ok("workflow", "events", wid)
    assert "task hello RUNNING by runner" in told and "task hello COMPLETED exit 0" in told, told

    assert cli.ok("workflow", "spec", wid) == PASSING
    again = cli.ok("workflow", "resubmit", wid).strip()
    assert again != wid and again.startswith("hello-")

    # A task waiting for its upstream group: its empty log says why on stderr.
    chained = _write(tmp_path, "chain.yaml", (
        "workflow:\n  name: chained\n  groups:\n  - name: first\n    tasks:\n"
        "    - {name: slow, image: x, command: [sleep, '5']}\n  - name: second\n    tasks:\n"
        "    - {name: then, image: x, command: [echo], inputs: [{task: slow}]}\n"
    ))  # fmt: skip
    chain_id = cli.ok("workflow", "submit", str(chained)).strip()
    empty = cli.run("workflow", "logs", chain_id, "--task", "then")
    assert empty.returncode == 0 and empty.stdout == ""
    assert "has not started yet (WAITING)" in empty.stderr, empty.stderr
    cli.ok("workflow", "cancel", chain_id, "--force")

    # logs -f on a task that has not started: waits for it, then streams until it ends.
    slow = cli.ok("workflow", "submit", str(_write(tmp_path, "slow.yaml", SLOW))).strip()
    started = time.monotonic()
    followed = cli.ok("workflow", "logs", slow, "--task", "waits", "-f")
    assert followed == "late line\nlast line\n" and time.monotonic() - started > 2
    merged_follow = cli.ok("workflow", "logs", again, "-f")
    assert "[hello] out one\n" in merged_follow

    forever = cli.ok("workflow", "submit", str(_write(tmp_path, "z.yaml", FOREVER))).strip()
    cancelled = cli.json("workflow", "cancel", forever, "--reason", "from the cli", "--force")
    assert cancelled[0]["id"] == forever
    nope = cli.run("workflow", "cancel", "nope-1")
    assert nope.returncode == 4 and nope.stdout == ""  # no empty table beside the error
    assert cli.run("workflow", "get", "nope-1").returncode == 4
    assert cli.run("workflow", "logs", wid, "--task", "nope").returncode == 4


def test_refusals_values_and_localpath(cli: Cli, tmp_path: Path) -> None:
    _login(cli)
    bad = _write(
        tmp_path,
        "bad.yaml",
        PASSING.replace('["sh", "-c", "echo out one; echo err one >&2; echo out two"]', "[]"),
    )
    r = cli.run("workflow", "submit", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "workflow.tasks[0].command (line 6)" in r.stderr, r.stderr
    assert cli.run("workflow", "validate", str(bad)).returncode == 1
    assert cli.run("workflow", "submit", str(tmp_path / "missing.yaml")).returncode == 2
    assert cli.run("workflow", "submit", str(_write(tmp_path, "p.yaml", PASSING)),
                   "--pool", "nowhere").returncode == 1  # fmt: skip

    # --set coerces numbers as OSMO does; --set-string keeps text.
    template = _write(tmp_path, "t.yaml", PASSING.replace(
        '["sh", "-c", "echo out one; echo err one >&2; echo out two"]',
        '["echo", "{{ n + 1 }}"]'))  # fmt: skip
    plan = cli.json("workflow", "validate", str(template), "--set", "n=41")
    assert plan["groups"][0]["tasks"][0]["command"] == ["echo", "42"]
    text = cli.run("workflow", "validate", str(template), "--set-string", "n=41")
    assert text.returncode == 1, text.stdout
    assert cli.run("workflow", "validate", str(template), "--set", "n").returncode == 2
    first = cli.ok("workflow", "submit", str(template), "--set", "n=41").strip()
    again = cli.ok("workflow", "resubmit", first).strip()  # with the values it was given
    assert '"42"' in cli.ok("workflow", "spec", again, "--rendered")
    assert cli.json("workflow", "get", again)["status"] != ""

    # localpath: the file beside the spec is inlined byte for byte; lines stay the user's.
    (tmp_path / "scripts").mkdir()
    script = "#!/bin/sh\necho '{{ not a template }}' \"$HOME\"\n"
    (tmp_path / "scripts" / "run.sh").write_text(script)
    spec = (
        "workflow:\n  name: files\n  tasks:\n  - name: t\n    image: x\n"
        "    files:\n    - localpath: scripts/run.sh\n      path: /tmp/run.sh\n"
        "    command: [cat, /tmp/run.sh]\n"
    )
    with_file = _write(tmp_path, "files.yaml", spec)
    plan = cli.json("workflow", "validate", str(with_file))
    files = plan["groups"][0]["tasks"][0]["files"]
    assert files == [{"path": "/tmp/run.sh", "bytes": len(base64.b64encode(script.encode()))}]
    ran = cli.run("workflow", "submit", str(with_file), "--watch")
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    assert cli.ok("workflow", "logs", ran.stdout.split()[0], "--task", "t") == script
    # An unknown field on line 10 of the file is on line 11 of what the server gets.
    refused = cli.run(
        "workflow", "submit", str(_write(tmp_path, "f2.yaml", spec + "    bogus: 1\n"))
    )
    assert refused.returncode == 1 and "(line 10)" in refused.stderr, refused.stderr
    missing = _write(tmp_path, "m.yaml", spec.replace("scripts/run.sh", "scripts/gone.sh"))
    r = cli.run("workflow", "validate", str(missing))
    assert r.returncode == 1 and f"{missing}:7" in r.stderr and "scripts/gone.sh" in r.stderr


def test_corpus_specs_that_name_scripts_it_does_not_ship_say_which(
    cli: Cli, conformance: Path
) -> None:
    _login(cli)
    spec = conformance / "osmo" / "test" / "workflow" / "workflow_cli.yaml"
    r = cli.run("workflow", "validate", str(spec))
    assert r.returncode == 1, (r.stdout, r.stderr)
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "localpath" in text)
    assert f"{spec}:{line}" in r.stderr and "scripts/workflow_cli.sh" in r.stderr


def test_tokens_pools_and_backends(cli: Cli) -> None:
    _login(cli)
    created = cli.run("token", "create", "ci-bot", "--expires", "2h")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert re.fullmatch(r"gnt_\S+", token), created.stdout  # stdout holds only the token
    tokens = cli.json("token", "list")
    mine = next(t for t in tokens if t["name"] == "ci-bot")
    assert (
        cli.json("whoami", env={"GANTRY_URL": cli.stack.base, "GANTRY_TOKEN": token})["name"]
        == "admin"
    )
    assert "revoked" in cli.ok("token", "revoke", str(mine["id"]))
    assert cli.run("token", "revoke", str(mine["id"])).returncode == 4
    assert (
        cli.run("whoami", env={"GANTRY_URL": cli.stack.base, "GANTRY_TOKEN": token}).returncode == 3
    )
    assert cli.run("token", "create", "x", "--expires", "soon").returncode == 2

    assert "default" in [p["name"] for p in cli.json("pool", "list")]
    backends = cli.json("backend", "list")
    assert any(b["name"] == "local" and b["connected"] for b in backends)
    wide = cli.ok("backend", "list", "-o", "wide")
    assert "local" in wide and " CPU, " in wide and "{" not in wide  # not a Python dict


def test_completion_scripts_and_workflow_ids(cli: Cli, tmp_path: Path) -> None:
    _login(cli)
    for shell in ("bash", "zsh", "fish"):
        script = cli.ok("completion", shell)
        assert "_GANTRY_COMPLETE" in script, shell
    assert cli.run("completion", "tcsh").returncode == 2
    wid = cli.ok("workflow", "submit", str(_write(tmp_path, "c.yaml", PASSING))).strip()
    env = {"_GANTRY_COMPLETE": "bash_complete", "COMP_WORDS": f"gantry workflow get {wid[:3]}",
           "COMP_CWORD": "3"}  # fmt: skip
    # bash's protocol: one "type,value" line per candidate
    words = [line.split(",", 1)[1] for line in cli.ok(env=env).splitlines()]
    assert wid in words, words
    env["COMP_WORDS"], env["COMP_CWORD"] = "gantry work", "1"
    assert "plain,workflow" in cli.ok(env=env).splitlines()


MANY = "workflow:\n  name: many\n  tasks:\n" + "".join(
    f"  - {{name: t{i:02d}, image: x, command: [sh, -c, 'echo first {i}; sleep 1; "
    f"echo second {i}']}}\n"
    for i in range(40)
)


def test_logs_of_every_task_merge_on_the_server_past_any_stream_limit(
    cli: Cli, tmp_path: Path
) -> None:
    """Without --task the server merges every task (one stream, however many tasks): -f
    ends when the last task ends, and --timestamps puts each line's time after its prefix."""
    _login(cli)
    wid = cli.ok("workflow", "submit", str(_write(tmp_path, "many.yaml", MANY))).strip()
    followed = cli.ok("workflow", "logs", wid, "-f", timeout=300).splitlines()
    for i in range(40):
        mine = [line for line in followed if line.startswith(f"[t{i:02d}] ")]
        assert mine == [f"[t{i:02d}] first {i}", f"[t{i:02d}] second {i}"], mine
    assert len(followed) == 80, followed
    assert cli.json("workflow", "get", wid)["status"] == "COMPLETED", "-f ended before the end"
    stamped = cli.ok("workflow", "logs", wid, "--timestamps").splitlines()
    prefix, when, text = stamped[0].split(" ", 2)
    assert prefix.startswith("[t") and when.endswith("Z") and text.startswith("first"), stamped[0]
    assert datetime.fromisoformat(when.replace("Z", "+00:00")).tzinfo is not None
    missing = cli.run("workflow", "logs", "nope-1")
    assert missing.returncode == 4, (missing.stdout, missing.stderr)


def test_a_pool_s_configuration_round_trips_through_get_set_and_apply(
    cli: Cli, tmp_path: Path
) -> None:
    """`pool get -o yaml` gives what `pool apply` takes back; `pool set` changes one field;
    refusals name the field (issue 10, item 9)."""
    _login(cli)
    saved = tmp_path / "pool.yaml"
    saved.write_text(cli.ok("pool", "get", "default", "-o", "yaml"))
    assert yaml.safe_load(saved.read_text())["name"] == "default"
    changed = cli.json("pool", "set", "default", "max_exec_timeout=86400", "maintenance=false")
    assert changed["max_exec_timeout"] == 86400
    table = cli.ok("pool", "get", "default")
    assert "max_exec_timeout" in table and "86400" in table
    applied = cli.json("pool", "apply", "default", "-f", str(saved))
    assert applied["max_exec_timeout"] is None, "apply replaces the whole configuration"
    refused = cli.run("pool", "set", "default", "quota={guarantee: 4}")
    assert refused.returncode == 1 and "quota" in refused.stderr, refused.stderr
    assert cli.run("pool", "set", "default", "nonsense").returncode == 2
    assert cli.run("pool", "get", "nope").returncode == 4
