"""Range walking on top of the shared walker: leaves -> coalesced runs, holes, summaries; and
the `iommuctl walk` command that prints them.

Work stays per table: each LeafBatch is coalesced with numpy, and only run boundaries become
Python objects, so a range of 16 M contiguous 4K leaves costs array work, not 16 M objects.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import click
import numpy as np

from formats.base import LeafBatch

from .cli import json_option, load
from .columns import Columns, hold_last
from .domain import Domain
from .errors import UserError
from .numbers import parse_number


@dataclass
class Run:
    """`count` leaves of `pgsize`, IOVA- and PA-contiguous, same prot."""

    iova: int
    phys: int
    pgsize: int
    count: int
    prot: int
    level: int

    @property
    def end(self) -> int:
        return self.iova + self.pgsize * self.count


@dataclass
class Summary:
    mapped: int = 0
    runs: int = 0
    leaves: Counter[int] = field(default_factory=Counter)


def parse_span(text: str, option: str = "--range") -> tuple[int, int]:
    """START:END (END exclusive) or START+LENGTH, not empty; UserError naming the option."""
    try:
        if "+" in text:
            a, b = text.split("+", 1)
            start = parse_number(a)
            end = start + parse_number(b)
        elif ":" in text:
            a, b = text.split(":", 1)
            start, end = parse_number(a), parse_number(b)
        else:
            raise ValueError("a range is START:END or START+LENGTH")
    except ValueError as e:
        raise UserError(f"{option} {text!r}: {e}") from None
    if start < 0 or end <= start:
        raise UserError(f"{option} {text!r}: empty range")
    return start, end


def parse_range(text: str | None, domain: Domain) -> tuple[int, int]:
    """An IOVA range inside the domain's input address space; None = all of it."""
    lo = min(s for s, _ in domain.windows)
    hi = max(e for _, e in domain.windows)
    if text is None:
        return lo, hi
    start, end = parse_span(text)
    if start < lo or end > hi:
        raise UserError(f"--range {text!r}: [{start:#x}, {end:#x}) is outside the input address space "
                        f"[{lo:#x}, {hi:#x}) of {domain.name}")
    return start, end


def batches(domain: Domain, start: int, end: int) -> Iterator[LeafBatch]:
    """domain.leaves with a progress bar on a terminal's stderr: the fraction of the range
    walked, shown only once the walk has taken a second."""
    if not sys.stderr.isatty():
        yield from domain.leaves(start, end)
        return
    t0 = time.monotonic()
    bar = None
    try:
        for b in domain.leaves(start, end):
            if bar is None and time.monotonic() - t0 > 1.0:
                from .output import progress

                bar = progress(1000, f"walking {domain.name}").__enter__()
                done = 0
            if bar is not None and len(b):
                now = int((int(b.iova[-1]) - start) * 1000 // max(end - start, 1))
                bar.advance(max(0, now - done))
                done = max(done, now)
            yield b
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


@dataclass
class RunBatch(Columns):
    """Runs as parallel arrays: uint64 iova, phys and pgsize; int64 count, prot and level."""

    iova: np.ndarray
    phys: np.ndarray
    pgsize: np.ndarray
    count: np.ndarray
    prot: np.ndarray
    level: np.ndarray


def run_batches(domain: Domain, start: int, end: int, coalesce: bool = True) -> Iterator[RunBatch]:
    """Leaves overlapping [start, end) in IOVA order, merged into runs when `coalesce`, a batch
    of runs at a time: each batch's last run is held back until the next batch shows whether
    it goes on."""

    def join(held: RunBatch, rb: RunBatch) -> bool:
        h = [int(x[0]) for x in (held.iova, held.phys, held.pgsize, held.count, held.prot)]
        if not (coalesce and h[0] + h[2] * h[3] == int(rb.iova[0]) and h[1] + h[2] * h[3] == int(rb.phys[0])
                and h[2] == int(rb.pgsize[0]) and h[4] == int(rb.prot[0])):
            return False
        rb.iova[0], rb.phys[0], rb.level[0] = held.iova[0], held.phys[0], held.level[0]
        rb.count[0] += h[3]
        return True

    return hold_last((_runs_of(b, coalesce) for b in batches(domain, start, end) if len(b)), join)


def _runs_of(b: LeafBatch, coalesce: bool) -> RunBatch:
    """A leaf batch's runs (one per leaf without `coalesce`)."""
    n = len(b)
    if coalesce and n > 1:
        size = b.size
        brk = np.flatnonzero((b.iova[1:] != b.iova[:-1] + size[:-1]) | (b.phys[1:] != b.phys[:-1] + size[:-1])
                             | (size[1:] != size[:-1]) | (b.prot[1:] != b.prot[:-1])) + 1
        starts = np.concatenate(([0], brk))
    else:
        starts = np.arange(n)
    return RunBatch(b.iova[starts], b.phys[starts], np.asarray(b.size)[starts],
                    np.diff(np.append(starts, n)).astype(np.int64), np.asarray(b.prot)[starts].astype(np.int64),
                    np.full(len(starts), b.level, dtype=np.int64))


def leaf_runs(domain: Domain, start: int, end: int, coalesce: bool = True) -> Iterator[Run]:
    """run_batches as Run objects (for tables and small ranges)."""
    for rb in run_batches(domain, start, end, coalesce):
        for run in zip(rb.iova.tolist(), rb.phys.tolist(), rb.pgsize.tolist(), rb.count.tolist(), rb.prot.tolist(),
                       rb.level.tolist()):
            yield Run(*run)


def with_holes(runs: Iterator[Run], start: int, end: int) -> Iterator[Run | tuple[int, int]]:
    """Runs with the unmapped gaps of [start, end) between them as (start, end) tuples."""
    pos = start
    for r in runs:
        if r.iova > pos:
            yield (pos, r.iova)
        yield r
        pos = max(pos, r.end)
    if pos < end:
        yield (pos, end)


def summarise(domain: Domain, start: int, end: int) -> Summary:
    """Totals with array work only: bytes mapped inside [start, end), runs, leaves by size."""
    s = Summary()
    prev: tuple[int, int, int, int] | None = None  # (end iova, end phys, size, prot) of the last leaf
    for b in batches(domain, start, end):
        n = len(b)
        if n == 0:
            continue
        size = b.size
        s0 = int(size[0])
        if size.strides[0] == 0 or int(size.min()) == s0 == int(size.max()):
            # one leaf size (the usual batch): scalar steps, and the IOVAs need no compare when
            # the batch spans exactly n leaves (sorted, non-overlapping: every step is then s0)
            step = np.uint64(s0)
            brk = b.phys[1:] != b.phys[:-1] + step
            if int(b.iova[-1]) - int(b.iova[0]) != (n - 1) * s0:
                brk |= b.iova[1:] != b.iova[:-1] + step
            if b.prot.strides[0] != 0:
                brk |= b.prot[1:] != b.prot[:-1]
            s.leaves[s0] += n
            s.mapped += n * s0
        else:
            brk = ((b.iova[1:] != b.iova[:-1] + size[:-1]) | (b.phys[1:] != b.phys[:-1] + size[:-1])
                   | (size[1:] != size[:-1]) | (b.prot[1:] != b.prot[:-1]))
            sizes, counts = np.unique(size, return_counts=True)
            for sz, c in zip(sizes.tolist(), counts.tolist()):
                s.leaves[sz] += c
            s.mapped += int(size.sum(dtype=np.uint64))
        s.runs += int(np.count_nonzero(brk))
        first = (int(b.iova[0]), int(b.phys[0]), s0, int(b.prot[0]))
        if prev is None or prev != first:
            s.runs += 1
        last_size = int(size[-1])
        prev = (int(b.iova[-1]) + last_size, int(b.phys[-1]) + last_size, last_size, int(b.prot[-1]))
        # only the edge leaves can stick out of the range
        for i in {0, n - 1}:
            lo, hi = int(b.iova[i]), int(b.iova[i]) + int(size[i])
            s.mapped -= max(0, start - lo) + max(0, hi - end)
    return s


@click.command()
@click.argument("domain")
@click.option("--range", "range_", metavar="R", help="START:END (exclusive) or START+LENGTH.")
@click.option("--leaves", is_flag=True, help="One row per leaf instead of coalesced runs.")
@click.option("--holes", is_flag=True, help="Also list the unmapped gaps.")
@click.option("--summary", is_flag=True, help="Only the totals.")
@click.option("--phys-range", metavar="R",
              help="Only leaves whose output overlaps the physical range R (START:END or START+LENGTH). A table "
                   "entry does not bound its subtree's outputs, so every leaf table in --range is still read; "
                   "each is filtered with one numpy mask.")
@click.option("--aliases", is_flag=True,
              help="Physical ranges mapped at more than one IOVA, and page tables the domain itself maps.")
@json_option
def walk(domain: str, range_: str | None, leaves: bool, holes: bool, summary: bool, as_json: bool,
         phys_range: str | None = None, aliases: bool = False) -> None:
    """The leaves in a range, coalesced into runs (IOVA- and PA-contiguous, same size and prot)."""
    from formats.base import prot_str

    from .numbers import fmt_size
    from .output import emit_json, table

    dom = load(domain)
    start, end = parse_range(range_, dom)
    view: Any = dom  # walk --phys-range: the domain seen through a physical window (iommuctl.analysis)
    if phys_range is not None or aliases:
        from .analysis import PhysWindow, parse_phys_range, print_aliases

        window = parse_phys_range(phys_range) if phys_range is not None else None
        if aliases:
            if leaves or holes or summary:
                raise UserError("--aliases does not combine with --leaves, --holes or --summary")
            print_aliases(dom, start, end, as_json, window)
            return
        if holes:
            raise UserError("--holes does not combine with --phys-range")
        assert window is not None
        view = PhysWindow(dom, *window)
    from .run_rows import json_runs, text_runs

    got: Summary | None = None
    if summary:
        got = summarise(view, start, end)
    elif as_json:
        got = json_runs(view, start, end, not leaves, holes)
    else:
        got = text_runs(view, start, end, not leaves, holes)
    if got is not None:
        total = got
    else:  # a small table for rich on a terminal, or runs reaching 2**64: one row at a time
        total = Summary()
        rows: list[list[Any]] = []
        items: Any = leaf_runs(view, start, end, coalesce=not leaves)
        for item in with_holes(items, start, end) if holes else items:
            if isinstance(item, Run):
                total.runs += 1
                total.leaves[item.pgsize] += item.count
                total.mapped += max(0, min(item.end, end) - max(item.iova, start))
                rows.append([f"{item.iova:#x}", f"{item.end:#x}", f"{item.phys:#x}", fmt_size(item.pgsize),
                             item.count, item.level, prot_str(item.prot)])
            else:
                rows.append([f"{item[0]:#x}", f"{item[1]:#x}", "hole", "", "", "", ""])
        table(None, ["iova", "end", "phys", "pgsize", "count", "level", "prot"], rows,
              justify_right=("pgsize", "count"))
    total.mapped -= getattr(view, "excess", 0)  # --phys-range: bytes of straddling leaves outside the window
    leaves_by_size = {str(k): v for k, v in sorted(total.leaves.items())}
    if as_json:
        emit_json({"summary": {"mapped": total.mapped, "runs": total.runs, "leaves": leaves_by_size,
                               "range": {"iova": f"{start:#x}", "end": f"{end:#x}"}}})
    else:
        from .output import say

        sizes = ", ".join(f"{fmt_size(int(k))}: {v}" for k, v in leaves_by_size.items()) or "none"
        say(f"mapped {total.mapped:#x} bytes ({fmt_size(total.mapped)}) in {total.runs} runs; "
                        f"leaves {sizes}; range [{start:#x}, {end:#x})")
