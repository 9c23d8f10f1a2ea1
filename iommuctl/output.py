"""Rendering shared by every command: JSON lines (addresses as "0x..." strings, sizes as ints)
or rich tables on stdout; errors as one line on stderr."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any


def hx(n: int) -> str:
    return f"{n:#x}"


def emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(", ", ": ")) + "\n")


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output keeps whole rows: rich would otherwise squeeze tables into 80 columns.
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", "0") or 0) or 250
    return Console(stderr=stderr, no_color="NO_COLOR" in os.environ, soft_wrap=True, highlight=False,
                   width=width)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
          justify_right: Sequence[str] = ()) -> None:
    from rich.table import Table

    t = Table(title=title, show_lines=False, header_style="bold")
    for i, c in enumerate(columns):
        last = i == len(columns) - 1  # only the last (free text) column may wrap
        t.add_column(c, justify="right" if c in justify_right else "left", no_wrap=not last,
                     overflow="fold" if last else "ellipsis", min_width=None if last else len(c))
    for r in rows:
        t.add_row(*[str(x) for x in r])
    console().print(t)


def warn(message: str) -> None:
    sys.stderr.write(f"iommuctl: warning: {message}\n")


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
