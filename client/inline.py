"""``files: - localpath:`` inlined from beside the spec, as OSMO's CLI does.

The server refuses ``localpath`` (it cannot read the submitter's disk), so the CLI replaces
each ``localpath: NAME`` line with the file's bytes as ``contents`` (base64, so that neither
YAML nor the server's templating can change a byte of it) and ``base64: true`` on the next
line. The edit is textual because a spec may be a template that is not YAML until rendered.
Each inserted line shifts the lines after it; ``SourceMap`` maps the server's line numbers
back to the file the user wrote.
"""

from __future__ import annotations

import base64
import bisect
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from client.errors import CliError

__all__ = ("Inlined", "inline_localpaths")

MAX_FILE_BYTES = 768 * 1024  # base64 makes it 1 MiB, the largest spec the server takes
_LOCALPATH = re.compile(r"^(?P<indent>[ ]*)(?P<dash>-[ ]+)?localpath:[ ]*(?P<value>.*?)[ ]*$")


@dataclass
class Inlined:
    text: str
    inserted: list[int] = field(default_factory=list)  # 1-based lines of the new text added
    files: list[str] = field(default_factory=list)

    def original_line(self, line: int) -> int:
        """The line of the user's file that a line of the submitted text came from."""
        before = bisect.bisect_left(self.inserted, line)
        if before < len(self.inserted) and self.inserted[before] == line:
            return line - before - 1  # an added `base64: true`: its `localpath` line
        return line - before


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def inline_localpaths(text: str, spec_file: Path) -> Inlined:
    """``text`` with every ``localpath`` replaced by its file's contents; a missing file is
    refused naming it and its line."""
    out: list[str] = []
    result = Inlined(text)
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        m = _LOCALPATH.match(line)
        if m is None or "#" in m.group("value")[:1]:
            out.append(line)
            continue
        name = _unquote(m.group("value").split(" #")[0].strip())
        where = f"{spec_file}:{number}"
        if not name or "{{" in name or "{%" in name:
            problems.append(f"{where}: `localpath` needs a plain file name (not a template)")
            out.append(line)
            continue
        path = spec_file.parent / Path(name).expanduser()
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):  # a FIFO would hang, /dev/zero never ends
                problems.append(f"{where}: localpath {name!r} is not a regular file")
            elif info.st_size > MAX_FILE_BYTES:
                problems.append(f"{where}: localpath {name!r} is {info.st_size} bytes; at most "
                                f"{MAX_FILE_BYTES} fit in a spec")  # fmt: skip
            else:
                data = path.read_bytes()[: MAX_FILE_BYTES + 1]
        except FileNotFoundError:
            problems.append(f"{where}: localpath {name!r} does not exist (looked for {path})")
        except OSError as exc:
            problems.append(f"{where}: localpath {name!r} cannot be read: {exc.strerror}")
        if problems and problems[-1].startswith(where + ":"):
            out.append(line)
            continue
        indent, dash = m.group("indent"), m.group("dash") or ""
        out.append(f"{indent}{dash}contents: {base64.b64encode(data).decode()}")
        out.append(f"{indent}{' ' * len(dash)}base64: true")
        result.inserted.append(len(out))
        result.files.append(f"{name} ({len(data)} bytes, line {number})")
    if problems:
        raise CliError("\n".join(problems))
    if result.inserted:
        result.text = "\n".join(out) + ("\n" if text.endswith("\n") else "")
    return result
