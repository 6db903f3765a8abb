"""How the CLI shows things: rich on a terminal, plain lines otherwise, JSON on request.

Data goes to stdout, diagnostics to stderr. Subscriber data is never read as rich markup.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..text import CONTROL


class Output:
    """The one place that writes to the terminal."""

    def __init__(self, force_terminal: bool | None = None):
        self._force = force_terminal

    @property
    def out(self) -> Console:
        return Console(file=sys.stdout, force_terminal=self._force, highlight=False, soft_wrap=False)

    @property
    def err(self) -> Console:
        return Console(file=sys.stderr, force_terminal=self._force, highlight=False, soft_wrap=True)

    @property
    def is_terminal(self) -> bool:
        if self._force is not None:
            return self._force
        return sys.stdout.isatty()

    @property
    def stdin_is_terminal(self) -> bool:
        if self._force is not None:
            return self._force
        try:
            return sys.stdin.isatty()
        except (AttributeError, ValueError):
            return False

    # -- data (stdout) --------------------------------------------------------------

    def json(self, document: Any) -> None:
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")

    def line(self, text: str = "") -> None:
        sys.stdout.write(text + "\n")

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> int:
        """A rich table on a terminal; tab-separated lines with a header otherwise."""
        n = 0
        if not self.is_terminal:
            self.line("\t".join(columns))
            for row in rows:
                self.line("\t".join(_plain(c) for c in row))
                n += 1
            return n
        table = Table(title=title, show_lines=False, header_style="bold")
        # ", " between names: a narrow column then wraps between them, never inside one;
        # and a column is at least as wide as its longest word (up to 16), so words stay whole.
        cells = [[_plain(c, ", ") for c in row] for row in rows]
        for i, c in enumerate(columns):
            longest = max((len(w) for row in cells if i < len(row) for w in row[i].split()), default=0)
            # The first column (an address, an id) stays on one line; the others may fold.
            table.add_column(c, overflow="fold", no_wrap=i == 0, min_width=min(max(longest, len(c)), 16))
        for row in cells:
            table.add_row(*[Text(c) for c in row])
            n += 1
        self.out.print(table)
        return n

    def summary(self, pairs: Sequence[tuple[str, Any]], title: str | None = None) -> None:
        """Figures as a two-column table on a terminal, `name: value` lines otherwise."""
        if not self.is_terminal:
            for k, v in pairs:
                self.line(f"{k}: {_plain(v)}")
            return
        if title:  # above the table: a table's own title wraps at the table's narrow width
            self.out.print(Text(title, style="bold"))
        table = Table(show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for k, v in pairs:
            table.add_row(Text(k), Text(_plain(v, ", ")))
        self.out.print(table)

    # -- diagnostics (stderr) -------------------------------------------------------

    def info(self, text: str) -> None:
        self.err.print(Text(printable(text)))

    def warn(self, text: str) -> None:
        self.err.print(Text("warning: ", style="yellow bold") + Text(printable(text)))

    def error(self, text: str, hint: str | None = None) -> None:
        self.err.print(Text("error: ", style="red bold") + Text(printable(text)))
        if hint:
            self.err.print(Text("hint: ", style="bold") + Text(printable(hint)))


def printable(text: str) -> str:
    """Control characters shown as escapes (`\\r`, `\\x1b`): a file must not drive the terminal."""
    return CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _plain(value: Any, separator: str = ",") -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return separator.join(printable(str(v)) for v in value)
    return printable(str(value))
