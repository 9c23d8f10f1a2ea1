"""Rendering shared by every command: JSON lines (addresses as "0x..." strings, sizes as ints)
or human tables on stdout; errors as one line on stderr.

Human output is drawn with rich on a terminal. Piped or redirected, the same columns come as
plain aligned text: greppable, never wrapped, and without rich's 50 ms import and layout, which
would otherwise be most of a one-IOVA translate in a script."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any


def hx(n: int) -> str:
    return f"{n:#x}"


def plain_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A format config as YAML/JSON can hold it (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def emit_json(obj: dict[str, Any]) -> None:
    # json.dumps's default separators are ", " and ": "; naming them would build an encoder per call
    sys.stdout.write(json.dumps(obj) + "\n")


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output keeps whole rows: rich would otherwise squeeze tables into 80 columns.
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", "0") or 0) or 250
    return Console(stderr=stderr, no_color="NO_COLOR" in os.environ, soft_wrap=True, highlight=False,
                   width=width)


def styled() -> bool:
    """Whether human output goes to a terminal (then rich draws it)."""
    return sys.stdout.isatty()


def say(text: str) -> None:
    """One line of human output."""
    if styled():
        console().print(text)
    else:
        sys.stdout.write(text + "\n")


PLAIN_ROWS = 500  # rich lays a table out in memory, ~5 ms and ~300 KiB a row: beyond this, plain text


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
          justify_right: Sequence[str] = ()) -> None:
    cells = [[str(x) for x in r] for r in rows]
    if len(cells) > PLAIN_ROWS or not styled():
        plain_table(title, columns, cells, justify_right)
        return
    from rich.table import Table

    t = Table(title=title, show_lines=False, header_style="bold")
    for i, c in enumerate(columns):
        last = i == len(columns) - 1  # only the last (free text) column may wrap
        t.add_column(c, justify="right" if c in justify_right else "left", no_wrap=not last,
                     overflow="fold" if last else "ellipsis", min_width=None if last else len(c))
    for r in cells:
        t.add_row(*r)
    console().print(t)


def plain_table(title: str | None, columns: Sequence[str], rows: list[list[str]],
                justify_right: Sequence[str] = ()) -> None:
    """The same columns as aligned plain text, written as it goes: linear in the rows, so a
    walk --leaves of millions of rows cannot stall or balloon in the layout."""
    widths = [len(c) for c in columns]
    for r in rows:
        for i, cell in enumerate(r[:-1]):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    w = sys.stdout.write
    if title:
        w(title + "\n")
    w(plain_line(columns, columns, widths, justify_right))
    for r in rows:
        w(plain_line(r, columns, widths, justify_right))


def plain_line(cells: Sequence[str], columns: Sequence[str], widths: Sequence[int],
               justify_right: Sequence[str] = ()) -> str:
    """One line of the plain table: every cell but the last padded to its column's width (the
    bulk writers, bulk.Rows, lay out their rows the same way and use this for the header)."""
    out = [cell.rjust(widths[i]) if columns[i] in justify_right else cell.ljust(widths[i])
           for i, cell in enumerate(cells[:-1])]
    return "  ".join(out + list(cells[-1:])).rstrip() + "\n"



def progress(total: int, description: str) -> Any:
    """A progress bar on stderr when stderr is a terminal; a no-op context otherwise."""
    if not sys.stderr.isatty() or total <= 0:
        return _NoProgress()
    from rich.progress import Progress

    p = Progress(console=console(stderr=True), transient=True)
    return _RichProgress(p, p.add_task(description, total=total))


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, n: int) -> None:
        return None


class _RichProgress:
    def __init__(self, p: Any, task: Any) -> None:
        self.p, self.task = p, task

    def __enter__(self) -> _RichProgress:
        self.p.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.p.__exit__(*exc)

    def advance(self, n: int) -> None:
        self.p.advance(self.task, n)
