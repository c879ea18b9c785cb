"""The CLI's pure parts: version comparison and warning, line mapping, --set values."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from client import __version__, config
from client.api import Api, describe_problem, newer
from client.cli import _coerce
from client.config import Server
from client.errors import CliError
from client.inline import MAX_FILE_BYTES, inline_localpaths
from client.output import Format, clean, emit


def test_versions_compare_by_their_numbers() -> None:
    assert newer("0.10.0", "0.9.3") and newer("1.0", "0.99.99") and not newer("0.1.0", "0.1.0")
    assert not newer("0.1.0+local", "0.1.0") and newer("0.2.0rc1", "0.1.9")


def test_a_server_newer_than_the_cli_is_warned_about_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = Api(Server("s", "http://gantry.test", "gnt_x"))
    api.http._transport = httpx.MockTransport(
        lambda request: httpx.Response(200, json={}, headers={"x-gantry-version": "999.0"})
    )
    api.get("/api/v1/me")
    api.get("/api/v1/me")
    err = capsys.readouterr().err
    assert (
        err.count("warning:") == 1 and f"CLI is {__version__}, older than the server (999.0)" in err
    )


def test_set_values_are_numbers_where_they_read_as_numbers() -> None:
    assert _coerce("42") == 42 and _coerce("-1.5") == -1.5 and _coerce("1e3") == 1000.0
    assert _coerce("nan") == "nan" and _coerce("v1") == "v1" and _coerce("") == ""


def test_inlined_localpaths_map_the_servers_lines_back(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_bytes(b"\x00\xffbinary")
    text = "l1\n  - localpath: a.sh\n    path: /a\n  - path: /b\n    localpath: 'a.sh'  # c\nl6\n"
    inlined = inline_localpaths(text, tmp_path / "spec.yaml")
    lines = inlined.text.splitlines()
    assert lines[1] == "  - contents: AP9iaW5hcnk=" and lines[2] == "    base64: true"
    assert lines[5] == "    contents: AP9iaW5hcnk=" and lines[6] == "    base64: true"
    # submitted lines 1..8 came from the user's lines 1, 2, 2, 3, 4, 5, 5, 6
    assert [inlined.original_line(n) for n in range(1, 9)] == [1, 2, 2, 3, 4, 5, 5, 6]
    with pytest.raises(CliError, match=r"spec.yaml:2: localpath 'gone' does not exist"):
        inline_localpaths("x\n- localpath: gone\n", tmp_path / "spec.yaml")


def test_a_saved_token_goes_only_to_the_server_it_was_saved_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("GANTRY_TOKEN", raising=False)
    config.remember("prod", "https://prod.example", "gnt_prod")
    assert config.current_server().token == "gnt_prod"
    monkeypatch.setenv("GANTRY_URL", "http://elsewhere.example")
    assert config.current_server().token is None  # not sent to a URL the env chose
    monkeypatch.setenv("GANTRY_URL", "https://prod.example/")
    assert config.current_server().token == "gnt_prod"


def test_text_from_the_server_cannot_drive_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert clean("ok\x1b[2J\x1b]0;PWN\x07\x9b\ttab") == "ok?[2J?]0;PWN??\ttab"
    emit(Format.table, {}, [{"r": "[/bogus] [link=https://evil]x[/link]\x1b[31m"}],
         [("REASON", lambda r: r["r"])])  # fmt: skip
    out = capsys.readouterr().out
    assert "[/bogus] [link=https://evil]x[/link]?[31m" in out and "\x1b" not in out


def test_odd_problem_bodies_are_still_one_readable_line() -> None:
    odd = httpx.Response(422, json={"errors": ["x", {"path": "a", "line": 2, "message": "m"}]})
    assert describe_problem(odd) == ["x", "a (line 2): m"]
    html = httpx.Response(401, text="<html>proxy sign-in</html>")
    assert describe_problem(html) == ["the server answered 401: <html>proxy sign-in</html>"]


def test_localpath_takes_regular_files_of_a_spec_s_size_only(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CliError, match="is not a regular file"):
        inline_localpaths("- localpath: fifo\n", tmp_path / "s.yaml")
    (tmp_path / "big").write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    with pytest.raises(CliError, match="at most"):
        inline_localpaths("- localpath: big\n", tmp_path / "s.yaml")


def test_a_second_server_of_the_same_short_name_does_not_replace_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved as `prod`, prod.corp.example's token was dropped (and not revoked) by a login to
    prod.evil.example (a hostile review): that one is saved by its whole host."""
    from client.cli import _server_name

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert _server_name("https://prod.corp.example") == "prod"
    config.remember("prod", "https://prod.corp.example", "gnt_corp")
    assert _server_name("https://prod.corp.example") == "prod"  # the same server again
    assert _server_name("https://prod.evil.example") == "prod.evil.example"
