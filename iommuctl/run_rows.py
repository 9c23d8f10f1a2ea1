"""`walk`'s rows in bulk: the runs (and holes) of each RunBatch written as JSON lines or as the
aligned plain-text table with numpy (bulk.Rows), a chunk at a time, never a Python object per
run. Memory stays bounded by the chunk however many runs a range holds: the plain table gets
its column widths from a first pass that only counts, then a second pass writes.

Batches holding a run that ends at 2**64 (the top of a 64-bit space: 17 hex digits, beyond
uint64) are formatted row by row in Python; the plain table then falls back to the caller's
per-row path."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from .walk import RunBatch, Summary, run_batches
from .writer import Job, write_chunks

ROWS_CHUNK = 1 << 15  # runs formatted at a time: a batch can hold 256 K runs
COLUMNS = ("iova", "end", "phys", "pgsize", "count", "level", "prot")


def _ends(rb: RunBatch) -> np.ndarray:
    return rb.iova + rb.pgsize * rb.count.astype(np.uint64)  # type: ignore[no-any-return]


def _count(total: Summary, rb: RunBatch, ends: np.ndarray, start: int, end: int) -> None:
    """Add a batch's runs, leaves by size and bytes inside [start, end) to the totals."""
    total.runs += len(rb)
    for size, c in zip(*_per_size(rb)):
        total.leaves[size] += c
    lo = np.maximum(rb.iova, np.uint64(start))
    hi = np.minimum(ends - np.uint64(1), np.uint64(end - 1))
    total.mapped += int((hi - lo).sum(dtype=np.uint64)) + len(rb)


def _per_size(rb: RunBatch) -> tuple[list[int], list[int]]:
    """(page sizes, leaves of each) of a run batch."""
    if int(rb.pgsize.min()) == int(rb.pgsize.max()):
        return [int(rb.pgsize[0])], [int(rb.count.sum())]
    sizes, inv = np.unique(rb.pgsize, return_inverse=True)
    counts = np.bincount(inv.reshape(-1), weights=rb.count, minlength=len(sizes))
    return sizes.tolist(), counts.astype(np.int64).tolist()


def _wraps(ends: np.ndarray, pos: int) -> bool:
    # a run ending at 2**64 (in a corrupt table not always the batch's last), or a reach already there
    return bool(pos >> 64) or bool((ends == 0).any())


def _reach(ends: np.ndarray, pos: list[int]) -> np.ndarray:
    """Where the runs before each one (and `pos`) reach: a hole precedes a run starting beyond
    it. Runs come in IOVA order, but a corrupt table can make one overlap the one before."""
    reach = np.maximum.accumulate(np.concatenate((np.array([pos[0]], dtype=np.uint64), ends)))
    pos[0] = int(reach[-1])
    return reach[:-1]


# -- JSON lines ---------------------------------------------------------------------------------

def json_runs(view: Any, start: int, end: int, coalesce: bool, holes: bool) -> Summary:
    """walk --json: each batch's rows written while the next batch is walked; the totals
    counted on the arrays."""

    total = Summary()
    pos = [start]  # where the runs so far reach: a hole before the next run starts there

    def chunks() -> Iterator[Job]:
        for rb in run_batches(view, start, end, coalesce):
            ends = _ends(rb)
            _count(total, rb, ends, start, end)
            if _wraps(ends, pos[0]):
                yield _python_json(rb, pos, holes)
                continue
            for k in range(0, len(rb), ROWS_CHUNK):
                part = slice(k, k + ROWS_CHUNK)
                yield partial(_json_rows, rb[part], ends[part], _reach(ends[part], pos), holes)
        if holes and pos[0] < end:
            yield f'{{"iova": "{pos[0]:#x}", "end": "{end:#x}", "hole": true}}\n'.encode()

    write_chunks(chunks())
    return total


def _json_rows(rb: RunBatch, ends: np.ndarray, prev: np.ndarray, holes: bool) -> np.ndarray:
    """The rows of a batch part; prev: where the rows before each reach (_reach)."""
    from .bulk import Rows

    rows = Rows(len(rb))
    if holes:  # a row may hold two lines: the gap before the run, then the run
        gap = rb.iova > prev
        rows.text('{"iova": "0x', gap)
        rows.hex(prev, gap)
        rows.text('", "end": "0x', gap)
        rows.hex(rb.iova, gap)
        rows.text('", "hole": true}\n', gap)
    put_run_json(rows, "{", rb.iova, ends, rb.phys, rb.pgsize, rb.count, rb.prot, rb.level)
    return rows.array()


def put_run_json(rows: Any, prefix: str, iova: np.ndarray, end: np.ndarray, phys: np.ndarray, pgsize: np.ndarray,
                 count: np.ndarray, prot: np.ndarray, level: np.ndarray) -> None:
    """A run's JSON object (walk's shape, also reverse --range's after its "range" key), each row
    starting with `prefix`."""
    from formats.base import prot_str

    from .bulk import pow2_codes, small_codes

    rows.text(prefix + '"iova": "0x')
    rows.hex(iova)
    rows.text('", "end": "0x')
    rows.hex(end)
    rows.text('", "phys": "0x')
    rows.hex(phys)
    rows.text('", "pgsize": ')
    rows.words(*pow2_codes(pgsize))
    rows.text(', "count": ')
    rows.decimal(count.astype(np.uint64))
    rows.text(', "prot": "')
    codes, words = small_codes(prot)
    rows.words(codes, [prot_str(int(w)) for w in words])
    rows.text('", "level": ')
    rows.words(*small_codes(level))
    rows.text("}\n")


def run_json_line(prefix: str, iova: int, end: int, phys: int, pgsize: int, count: int, prot: int,
                  level: int) -> str:
    """put_run_json's line for one run, in Python (ends at 2**64 do not fit the arrays)."""
    from formats.base import prot_str

    return (f'{prefix}"iova": "{iova:#x}", "end": "{end:#x}", "phys": "{phys:#x}", "pgsize": {pgsize}, '
            f'"count": {count}, "prot": "{prot_str(prot)}", "level": {level}}}\n')


def put_run_tail(rows: Any, pgsize: np.ndarray, count: np.ndarray, level: np.ndarray, prot: np.ndarray,
                 widths: Sequence[int]) -> None:
    """A run's last plain-table cells, pgsize, count, level and prot (widths of the first three),
    and the newline. Level and prot are one word, so the line ends in prot and plain_table's
    strip of trailing spaces changes nothing."""
    from formats.base import prot_str

    from .bulk import pow2_codes
    from .numbers import fmt_size

    w_size, w_count, w_level = widths
    codes, sizes = pow2_codes(pgsize)
    rows.words(codes, [fmt_size(int(s)).rjust(w_size) for s in sizes])
    rows.text("  ")
    rows.decimal_cell(count.astype(np.uint64), w_count)
    rows.text("  ")
    keys, inv = np.unique((level << 32) | prot, return_inverse=True)
    rows.words(inv.reshape(-1), [(str(k >> 32).ljust(w_level) + "  " + prot_str(k & 0xFFFFFFFF)).rstrip()
                                 for k in keys.tolist()])
    rows.text("\n")


def _python_json(rb: RunBatch, pos: list[int], holes: bool) -> bytes:
    """The same rows one by one, for a batch reaching 2**64."""
    lines = []
    for iova, phys, size, count, prot, level in zip(rb.iova.tolist(), rb.phys.tolist(), rb.pgsize.tolist(),
                                                    rb.count.tolist(), rb.prot.tolist(), rb.level.tolist()):
        if holes and iova > pos[0]:
            lines.append(f'{{"iova": "{pos[0]:#x}", "end": "{iova:#x}", "hole": true}}\n')
        run_end = iova + size * count
        pos[0] = max(pos[0], run_end)
        lines.append(run_json_line("{", iova, run_end, phys, size, count, prot, level))
    return "".join(lines).encode()


# -- the plain-text table -----------------------------------------------------------------------

@dataclass
class _Layout:
    """What the first pass learns: totals, rows, and the largest value of each column."""

    total: Summary = field(default_factory=Summary)
    rows: int = 0
    wraps: bool = False
    top: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # iova, end, phys, count
    sizes: set[int] = field(default_factory=set)
    levels: set[int] = field(default_factory=set)

    def widths(self) -> list[int]:
        from .numbers import fmt_size

        iova, end, phys, count = self.top
        return [max(4, len(f"{iova:#x}")), max(3, len(f"{end:#x}")), max(4, len(f"{phys:#x}")),
                max([6] + [len(fmt_size(s)) for s in self.sizes]), max(5, len(str(count))),
                max([5] + [len(str(v)) for v in self.levels])]


def _layout(view: Any, start: int, end: int, coalesce: bool, holes: bool) -> _Layout:
    lay = _Layout()
    pos = [start]
    for rb in run_batches(view, start, end, coalesce):
        ends = _ends(rb)
        _count(lay.total, rb, ends, start, end)
        if lay.wraps or _wraps(ends, pos[0]):
            lay.wraps = True  # the caller's per-row path prints it; only the totals still count
            continue
        prev = _reach(ends, pos)
        tops = [int(rb.iova.max()), int(ends.max()), int(rb.phys.max()), int(rb.count.max())]
        lay.rows += len(rb)
        if holes:
            gap = rb.iova > prev
            if gap.any():
                lay.rows += int(gap.sum())
                tops[0] = max(tops[0], int(prev[gap].max()))
        lay.top = [max(a, b) for a, b in zip(lay.top, tops)]
        lay.sizes.update(np.unique(rb.pgsize).tolist())
        lay.levels.update(np.unique(rb.level).tolist())
    if holes and not lay.wraps and pos[0] < end:
        lay.rows += 1
        lay.top[0], lay.top[1] = max(lay.top[0], pos[0]), max(lay.top[1], end)
    return lay


def text_runs(view: Any, start: int, end: int, coalesce: bool, holes: bool) -> Summary | None:
    """The human table of runs as output.plain_table lays it out, written in chunks; the totals.
    None (nothing written) when the caller's per-row path should print it: a table small
    enough for rich on a terminal, or runs reaching 2**64."""
    from .output import PLAIN_ROWS, plain_line, styled

    lay = _layout(view, start, end, coalesce, holes)
    if lay.wraps or (styled() and lay.rows <= PLAIN_ROWS):
        return None
    widths = lay.widths()
    head = plain_line(COLUMNS, COLUMNS, widths, ("pgsize", "count"))

    def chunks() -> Iterator[Job]:
        yield head.encode()
        pos = [start]
        for rb in run_batches(view, start, end, coalesce):
            ends = _ends(rb)
            for k in range(0, len(rb), ROWS_CHUNK):
                part = slice(k, k + ROWS_CHUNK)
                yield partial(_text_rows, rb[part], ends[part], _reach(ends[part], pos), holes, widths)
        if holes and pos[0] < end:
            yield f"{f'{pos[0]:#x}'.ljust(widths[0])}  {f'{end:#x}'.ljust(widths[1])}  hole\n".encode()

    write_chunks(chunks())
    return lay.total


def _text_rows(rb: RunBatch, ends: np.ndarray, prev: np.ndarray, holes: bool, widths: list[int]) -> np.ndarray:
    from .bulk import Rows

    w_iova, w_end, w_phys = widths[:3]
    rows = Rows(len(rb))
    if holes:
        gap = rb.iova > prev
        rows.hex_cell(prev, w_iova, gap)
        rows.text("  ", gap)
        rows.hex_cell(rb.iova, w_end, gap)
        rows.text("  hole\n", gap)
    rows.hex_cell(rb.iova, w_iova)
    rows.text("  ")
    rows.hex_cell(ends, w_end)
    rows.text("  ")
    rows.hex_cell(rb.phys, w_phys)
    rows.text("  ")
    put_run_tail(rows, rb.pgsize, rb.count, rb.level, rb.prot, widths[3:])
    return rows.array()
