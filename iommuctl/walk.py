"""Range walking on top of the shared walker: leaves -> coalesced runs, holes, summaries.

Work stays per table: each LeafBatch is coalesced with numpy, and only run boundaries become
Python objects, so a range of 16 M contiguous 4K leaves costs array work, not 16 M objects.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from formats.base import LeafBatch

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


def leaf_runs(domain: Domain, start: int, end: int, coalesce: bool = True) -> Iterator[Run]:
    """Leaves overlapping [start, end) in IOVA order, merged into runs when `coalesce`."""
    cur: Run | None = None
    for b in batches(domain, start, end):
        n = len(b)
        if n == 0:
            continue
        if coalesce and n > 1:
            size = b.size
            brk = np.flatnonzero((b.iova[1:] != b.iova[:-1] + size[:-1]) | (b.phys[1:] != b.phys[:-1] + size[:-1])
                                 | (size[1:] != size[:-1]) | (b.prot[1:] != b.prot[:-1])) + 1
            starts = np.concatenate(([0], brk))
        else:
            starts = np.arange(n)
        ends = np.concatenate((starts[1:], [n]))
        for s, e in zip(starts.tolist(), ends.tolist()):
            iova, phys, size1, prot = int(b.iova[s]), int(b.phys[s]), int(b.size[s]), int(b.prot[s])
            if (coalesce and cur is not None and cur.end == iova and cur.phys + cur.pgsize * cur.count == phys
                    and cur.pgsize == size1 and cur.prot == prot):
                cur.count += e - s
                continue
            if cur is not None:
                yield cur
            cur = Run(iova, phys, size1, e - s, prot, b.level)
    if cur is not None:
        yield cur


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
