"""ANSI colours to HTML: SGR sequences become spans; every other byte is escaped text.

Only the styles terminals commonly use are kept: bold, dim, italic, underline, the 16 named
colours (foreground and background, as classes the themes colour), and 256-colour and
truecolour values (as inline colours built from numbers only, so nothing from the log reaches
an attribute). Other escape sequences (cursor movement, titles) are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape

__all__ = ("AnsiState", "to_html")

_CSI = re.compile(r"\x1b\[([0-9;]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_FLAGS = {1: "b", 2: "dim", 3: "i", 4: "u"}
_UNSET = {22: ("b", "dim"), 23: ("i",), 24: ("u",)}


@dataclass(slots=True)
class AnsiState:
    """The SGR state carried from one line of a stream to the next."""

    flags: set[str] = field(default_factory=set)
    fg: str | None = None  # "c3" (a class) or "#rrggbb"
    bg: str | None = None

    def apply(self, params: str) -> None:
        codes = [int(p) if p else 0 for p in params.split(";")] if params else [0]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c == 0:
                self.flags.clear()
                self.fg = self.bg = None
            elif c in _FLAGS:
                self.flags.add(_FLAGS[c])
            elif c in _UNSET:
                self.flags.difference_update(_UNSET[c])
            elif 30 <= c <= 37:
                self.fg = f"c{c - 30}"
            elif 90 <= c <= 97:
                self.fg = f"c{c - 90 + 8}"
            elif c == 39:
                self.fg = None
            elif 40 <= c <= 47:
                self.bg = f"c{c - 40}"
            elif 100 <= c <= 107:
                self.bg = f"c{c - 100 + 8}"
            elif c == 49:
                self.bg = None
            elif c in (38, 48) and i + 1 < len(codes):
                colour, used = _extended(codes[i + 1 :])
                if c == 38:
                    self.fg = colour
                else:
                    self.bg = colour
                i += used
            i += 1

    def open_tag(self) -> str:
        if not self.flags and self.fg is None and self.bg is None:
            return ""
        classes = sorted(self.flags)
        style = []
        if self.fg is not None:
            if self.fg.startswith("#"):
                style.append(f"color:{self.fg}")
            else:
                classes.append(f"f{self.fg}")
        if self.bg is not None:
            if self.bg.startswith("#"):
                style.append(f"background:{self.bg}")
            else:
                classes.append(f"b{self.bg}")
        attrs = f' class="{" ".join(classes)}"' if classes else ""
        if style:
            attrs += f' style="{";".join(style)}"'
        return f"<span{attrs}>"


_CUBE = (0, 95, 135, 175, 215, 255)
_BASIC = [
    "#000000", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5",
    "#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff",
]  # fmt: skip


def _extended(codes: list[int]) -> tuple[str | None, int]:
    """``5;n`` (256 colours) or ``2;r;g;b``; returns the colour and how many codes it used."""
    if codes[0] == 5 and len(codes) >= 2:
        n = codes[1]
        if n < 16:
            return f"c{n}", 2
        if n < 232:
            n -= 16
            r, g, b = _CUBE[n // 36], _CUBE[n // 6 % 6], _CUBE[n % 6]
            return f"#{r:02x}{g:02x}{b:02x}", 2
        if n < 256:
            v = 8 + (n - 232) * 10
            return f"#{v:02x}{v:02x}{v:02x}", 2
        return None, 2
    if codes[0] == 2 and len(codes) >= 4:
        r, g, b = (max(0, min(255, v)) for v in codes[1:4])
        return f"#{r:02x}{g:02x}{b:02x}", 4
    return None, 1


def to_html(text: str, state: AnsiState) -> str:
    """One line of log text as escaped HTML with its colours; ``state`` carries on."""
    out: list[str] = []

    def emit(part: str) -> None:
        if part:
            tag = state.open_tag()
            body = escape(part, quote=False)
            out.append(f"{tag}{body}</span>" if tag else body)

    pos = 0
    if "\x1b" in text:
        for m in _CSI.finditer(text):
            emit(text[pos : m.start()])
            pos = m.end()
            if m.group(2) == "m":
                state.apply(m.group(1))
    emit(text[pos:])
    return "".join(out)
