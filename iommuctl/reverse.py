"""`iommuctl reverse`: physical -> IOVA. For PAs, every IOVA mapping each one (one range walk
whatever their number); for a physical range (--range), the IOVA runs whose output lies in it,
then the window's coverage: bytes mapped, holes, bytes reached by more than one IOVA.

No page table bounds its leaves' outputs, so every leaf table of the IOVA range is read, each
filtered with one numpy mask on the output addresses. The runs of a window are built as arrays
(PhysRunBatch) and written with bulk.Rows, as JSON lines or the plain table (after a counting
pass for its widths), so a window of millions of runs costs array work and bounded memory.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import click
import numpy as np

from formats.base import prot_str

from .analysis import TOP, U64, _breaks, _phys_overlap, _space, _twice_ranges, parse_phys_range, segs_of
from .cli import json_option, load
from .columns import Columns, hold_last
from .domain import Domain
from .errors import UserError
from .numbers import fmt_size, parse_number
from .walk import batches, parse_range
from .writer import Chunk, Job, write_chunks

ROWS_CHUNK = 1 << 15  # runs formatted at a time


@dataclass
class Hit:
    """An IOVA that maps a physical address: `iova` exactly (pa's offset in the leaf), in the
    leaf [leaf_iova, leaf_iova + pgsize) whose output starts at `phys`."""

    pa: int
    iova: int
    leaf_iova: int
    phys: int
    pgsize: int
    prot: int
    level: int

    @property
    def leaf_end(self) -> int:
        return self.leaf_iova + self.pgsize


def reverse_pas(dom: Domain, pas: Iterable[int], start: int | None = None,
                end: int | None = None) -> dict[int, list[Hit]]:
    """Every IOVA in [start, end) (default: the whole input space) mapping each PA, found in one
    range walk whatever the number of PAs (per leaf table: a searchsorted of the sorted PAs)."""
    lo, hi = _space(dom, start, end)
    wanted = sorted(set(pas))
    out: dict[int, list[Hit]] = {pa: [] for pa in wanted}
    if not wanted:
        return out
    sp = np.array(wanted, dtype=np.uint64)
    single = len(wanted) == 1
    for b in batches(dom, lo, hi):
        if not len(b):
            continue
        p, size = b.phys, b.size
        if single:
            m = (p <= sp[0]) & (sp[0] - p < size)
            idx = np.flatnonzero(m)
            if not len(idx):
                continue
            first = np.zeros(len(idx), dtype=np.int64)
            last = np.ones(len(idx), dtype=np.int64)
        else:
            a = np.searchsorted(sp, p, "left")
            z = np.searchsorted(sp, p + size, "left")
            idx = np.flatnonzero(z > a)
            if not len(idx):
                continue
            first, last = a[idx], z[idx]
        for i, k0, k1 in zip(idx.tolist(), first.tolist(), last.tolist()):
            v, ph, sz, pr = int(b.iova[i]), int(b.phys[i]), int(b.size[i]), int(b.prot[i])
            for pa in wanted[k0:k1]:
                iova = v + (pa - ph)
                if lo <= iova < hi:  # a leaf straddling the range start maps some PAs from outside it
                    out[pa].append(Hit(pa, iova, v, ph, sz, pr, b.level))
    return out


@dataclass
class PhysRun:
    """IOVAs [iova, end) mapping physical [phys, phys + end - iova): IOVA- and PA-contiguous,
    backed by `count` leaves (or leaf pieces) of one page size and prot."""

    iova: int
    end: int
    phys: int
    pgsize: int
    count: int
    prot: int
    level: int

    @property
    def phys_end(self) -> int:
        return self.phys + (self.end - self.iova)


@dataclass
class PhysRunBatch(Columns):
    """PhysRuns as parallel arrays; `length` (uint64) rather than an end, which may be 2^64."""

    iova: np.ndarray
    length: np.ndarray
    phys: np.ndarray
    pgsize: np.ndarray
    count: np.ndarray
    prot: np.ndarray
    level: np.ndarray

    def run(self, i: int) -> PhysRun:
        v = int(self.iova[i])
        return PhysRun(v, v + int(self.length[i]), int(self.phys[i]), int(self.pgsize[i]), int(self.count[i]),
                       int(self.prot[i]), int(self.level[i]))

    def wraps(self) -> bool:
        """A run ending at 2^64 (IOVA or physical side): its end is beyond uint64."""
        return bool(((self.iova + self.length) == 0).any() or ((self.phys + self.length) == 0).any())


@dataclass
class ReverseRange:
    """reverse --range: the IOVA runs whose output lies in [plo, phi) (iterate `batches()` or
    `runs()`), then the coverage of the window: `mapped` bytes reached by at least one IOVA,
    the holes (`hole_lo`, `hole_last`: inclusive, as a hole may end at 2^64), and `aliased`
    bytes reached by more than one."""

    dom: Domain
    plo: int
    phi: int
    start: int
    end: int
    mapped: int = 0
    aliased: int = 0
    hole_lo: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    hole_last: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    _cover: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def holes(self) -> list[tuple[int, int]]:
        return [(a, z + 1) for a, z in zip(self.hole_lo.tolist(), self.hole_last.tolist())]

    def runs(self) -> Iterator[PhysRun]:
        for rb in self.batches():
            for i in range(len(rb)):
                yield rb.run(i)

    def batches(self, cover: bool = True) -> Iterator[PhysRunBatch]:
        """The runs a batch at a time, each batch's last held back until the next shows whether
        it goes on; with `cover`, the coverage is known once they are all out."""
        yield from hold_last(self._run_batches(cover), _join)
        if cover:
            self._coverage()

    def _run_batches(self, cover: bool) -> Iterator[PhysRunBatch]:
        plo, phi = self.plo, self.phi
        for b in batches(self.dom, self.start, self.end):
            if not len(b):
                continue
            m = _phys_overlap(b.phys, b.size, plo, phi)
            if not m.any():
                continue
            sg = segs_of(b, self.start, self.end)
            if len(sg) != len(b):  # the clip dropped a straddler: redo the mask on the pieces
                m = _phys_overlap(sg.p, sg.ln, plo, phi)
            sg = sg[m]
            if not len(sg):
                continue
            # clip each piece to the window on the physical side
            cut_lo = np.where(sg.p < U64(plo), U64(plo) - sg.p, U64(0))
            if phi < TOP:
                over = sg.p + sg.ln
                cut_hi = np.where(over > U64(phi), over - U64(phi), U64(0))
            else:
                cut_hi = np.zeros(len(sg), dtype=np.uint64)
            s, p = sg.s + cut_lo, sg.p + cut_lo
            ln = sg.ln - cut_lo - cut_hi
            starts = np.concatenate(([0], _breaks(s, ln, p, sg.pg, sg.pr))).astype(np.intp)
            last = np.append(starts[1:], len(s)) - 1
            rb = PhysRunBatch(s[starts], s[last] - s[starts] + ln[last], p[starts], sg.pg[starts],
                              np.diff(np.append(starts, len(s))).astype(np.int64), sg.pr[starts],
                              sg.lv[starts].astype(np.int64))
            if cover:  # a run is PA-contiguous: its output is one interval (new arrays: _join edits rb)
                self._cover.append((rb.phys.copy(), rb.phys + rb.length))
            yield rb

    def _coverage(self) -> None:
        """Union and double coverage of the runs' outputs, from their starts and ends sorted
        apart (in place; no pairing needed): two words per run."""
        plo, phi = self.plo, self.phi
        if not self._cover:
            self.hole_lo, self.hole_last = np.array([plo], dtype=np.uint64), np.array([phi - 1], dtype=np.uint64)
            return
        p = np.concatenate([c[0] for c in self._cover])
        e = np.concatenate([c[1] for c in self._cover])
        self._cover = []
        total = int(e.sum(dtype=np.uint64) - p.sum(dtype=np.uint64))  # the runs' bytes, aliases counted twice
        p.sort()
        e.sort()
        # An end x that no run covers, #(starts <= x) == #(ends <= x), opens a gap up to the next start.
        ns = np.searchsorted(p, e, "right")
        open_ = ns == np.searchsorted(e, e, "right")
        inner = open_ & (ns < len(p))
        g_lo = e[inner]
        g_hi = p[ns[inner]]
        keep = np.ones(len(g_lo), dtype=bool)
        keep[1:] = g_lo[1:] != g_lo[:-1]  # ends shared by several runs: one gap
        g_lo, g_hi = g_lo[keep], g_hi[keep]
        first, top = int(p[0]), int(e[-1])
        self.mapped = (top - first) - int((g_hi - g_lo).sum(dtype=np.uint64))
        lo = ([np.array([plo], dtype=np.uint64)] if first > plo else []) + [g_lo]
        hi = ([np.array([first], dtype=np.uint64)] if first > plo else []) + [g_hi]
        if top < phi:
            lo.append(np.array([top], dtype=np.uint64))
            hi.append(np.array([phi % TOP], dtype=np.uint64))  # 2^64 as 0: minus one below wraps back
        self.hole_lo = np.concatenate(lo)
        self.hole_last = np.concatenate(hi) - np.uint64(1)
        # bytes reached by two or more IOVAs: none when the runs add up to their union
        if total != self.mapped:
            a_lo, a_hi = _twice_ranges(p, e)
            self.aliased = int((a_hi - a_lo).sum(dtype=np.uint64))


def _parse_pas(args: Sequence[str]) -> list[int]:
    out = []
    for text in args:
        if text == "-":
            for lineno, line in enumerate(sys.stdin, 1):
                t = line.split("#", 1)[0].strip()
                if t:
                    out.append(_parse_pa(t, f"<stdin> line {lineno}: "))
        else:
            out.append(_parse_pa(text, ""))
    return out


def _parse_pa(text: str, where: str) -> int:
    try:
        n = parse_number(text)
    except ValueError as e:
        raise UserError(f"{where}PA {text!r}: {e}") from None
    if not 0 <= n < TOP:
        raise UserError(f"{where}PA {text!r} is not a 64-bit address")
    return n


@click.command("reverse")
@click.argument("domain")
@click.argument("pas", nargs=-1)
@click.option("--range", "range_", metavar="R",
              help="A physical range (START:END or START+LENGTH): every IOVA run whose output lies in it.")
@click.option("--iova-range", metavar="R", help="Only IOVAs in R (default: the whole input address space).")
@click.option("--holes", is_flag=True, help="With --range: also list the physical gaps no IOVA maps.")
@json_option
def reverse_cmd(domain: str, pas: tuple[str, ...], range_: str | None, iova_range: str | None, holes: bool,
                as_json: bool) -> None:
    """Every IOVA that maps each physical address PA (`-` reads PAs from stdin), with the page
    size and prot of the backing PTE; or, with --range, the IOVA runs mapping a physical range.

    One walk answers any number of PAs. No page table bounds its leaves' outputs, so every leaf
    table is read (each filtered with one numpy mask). Exit status 1 when some PA (or some byte of
    --range) is mapped by no IOVA.
    """
    from .output import emit_json, table

    if not pas and range_ is None:
        raise UserError("reverse needs physical addresses or --range")
    if holes and range_ is None:
        raise UserError("--holes goes with --range")
    dom = load(domain)
    values = _parse_pas(pas)
    start, end = parse_range(iova_range, dom)
    missed = False
    if values:
        hits = reverse_pas(dom, values, start, end)
        rows: list[list[Any]] = []
        for pa in values:
            found = hits.get(pa, [])
            if not found:
                missed = True
                if as_json:
                    emit_json({"pa": f"{pa:#x}", "mapped": False})
                else:
                    rows.append([f"{pa:#x}", "unmapped", "", "", "", "", "", ""])
            for h in sorted(found, key=lambda h: h.iova):
                if as_json:
                    emit_json({"pa": f"{pa:#x}", "mapped": True, "iova": f"{h.iova:#x}",
                               "leaf_iova": f"{h.leaf_iova:#x}", "leaf_end": f"{h.leaf_end:#x}",
                               "phys": f"{h.phys:#x}", "pgsize": h.pgsize, "prot": prot_str(h.prot),
                               "level": h.level})
                else:
                    rows.append([f"{pa:#x}", f"{h.iova:#x}", f"{h.leaf_iova:#x}", f"{h.leaf_end:#x}",
                                 f"{h.phys:#x}", fmt_size(h.pgsize), h.level, prot_str(h.prot)])
        if not as_json:
            table(f"{dom.name}: physical -> IOVA", ["pa", "iova", "leaf iova", "leaf end", "leaf phys", "pgsize",
                                                    "level", "prot"], rows, justify_right=("pgsize",))
    if range_ is not None:
        plo, phi = parse_phys_range(range_, "--range")
        missed |= _reverse_range(dom, plo, phi, start, end, holes, as_json)
    if missed:
        sys.exit(1)


def _reverse_range(dom: Domain, plo: int, phi: int, start: int, end: int, holes: bool, as_json: bool) -> bool:
    """reverse --range: the runs, the holes with --holes, the coverage line; True when some byte
    of the window is unmapped."""
    from .output import PLAIN_ROWS, emit_json, plain_line, say, styled, table
    from .run_rows import run_json_line

    rng = {"phys": f"{plo:#x}", "end": f"{phi:#x}"}
    rng_text = f'{{"range": {{"phys": "{plo:#x}", "end": "{phi:#x}"}}, '
    rr = ReverseRange(dom, plo, phi, start, end)
    nruns = 0
    if as_json:
        def json_chunks() -> Iterator[Job]:
            nonlocal nruns
            for rb in rr.batches():
                nruns += len(rb)
                if rb.wraps():
                    runs = (rb.run(i) for i in range(len(rb)))
                    yield "".join(run_json_line(rng_text, r.iova, r.end, r.phys, r.pgsize, r.count, r.prot, r.level)
                                  for r in runs).encode()
                    continue
                for k in range(0, len(rb), ROWS_CHUNK):
                    yield partial(_json_rows, rng_text, rb[k:k + ROWS_CHUNK])
            if holes:
                for k in range(0, len(rr.hole_lo), ROWS_CHUNK):
                    yield partial(_json_holes, rng_text, rr.hole_lo[k:k + ROWS_CHUNK], rr.hole_last[k:k + ROWS_CHUNK])

        write_chunks(json_chunks())
    else:
        title = f"{dom.name}: IOVAs mapping [{plo:#x}, {phi:#x})"
        lay = _layout(rr, holes)
        nruns = lay.runs
        if lay.wraps or (styled() and lay.rows <= PLAIN_ROWS):  # rich, or ends at 2^64: one row at a time
            rows: list[list[Any]] = [[f"{r.iova:#x}", f"{r.end:#x}", f"{r.phys:#x}", f"{r.phys_end:#x}",
                                      fmt_size(r.pgsize), r.count, r.level, prot_str(r.prot)]
                                     for r in ReverseRange(dom, plo, phi, start, end).runs()]
            if holes:
                rows += [["", "", f"{h0:#x}", f"{h1:#x}", "hole", "", "", ""] for h0, h1 in rr.holes]
            table(title, HEAD, rows, justify_right=("pgsize", "count"))
        else:
            w = lay.widths
            head = plain_line(HEAD, HEAD, w, ("pgsize", "count"))

            def text_chunks() -> Iterator[Job]:
                yield f"{title}\n{head}".encode()
                for rb in ReverseRange(dom, plo, phi, start, end).batches(cover=False):
                    for k in range(0, len(rb), ROWS_CHUNK):
                        yield partial(_text_rows, rb[k:k + ROWS_CHUNK], w)
                if holes:
                    for k in range(0, len(rr.hole_lo), ROWS_CHUNK):
                        yield partial(_text_holes, rr.hole_lo[k:k + ROWS_CHUNK], rr.hole_last[k:k + ROWS_CHUNK], w)

            write_chunks(text_chunks())
    unmapped = (phi - plo) - rr.mapped
    if as_json:
        emit_json({"summary": {"range": rng, "mapped": rr.mapped, "unmapped": unmapped, "aliased": rr.aliased,
                               "runs": nruns, "holes": len(rr.hole_lo)}})
    else:
        say(f"physical [{plo:#x}, {phi:#x}): {fmt_size(rr.mapped)} mapped in {nruns} IOVA runs, "
            f"{fmt_size(unmapped)} unmapped in {len(rr.hole_lo)} holes, "
            f"{fmt_size(rr.aliased)} reached by more than one IOVA")
    return unmapped > 0


# -- rows ---------------------------------------------------------------------------------------

def _join(held: PhysRunBatch, rb: PhysRunBatch) -> bool:
    """hold_last's merge: the held run goes on into rb's first (IOVA- and PA-contiguous, same
    page size and prot)."""
    h = held.run(0)
    if not (h.end == int(rb.iova[0]) and h.phys_end == int(rb.phys[0]) and h.pgsize == int(rb.pgsize[0])
            and h.prot == int(rb.prot[0])):
        return False
    rb.iova[0], rb.phys[0], rb.level[0] = held.iova[0], held.phys[0], held.level[0]
    rb.length[0] += held.length[0]
    rb.count[0] += held.count[0]
    return True


HEAD = ["iova", "end", "phys", "phys end", "pgsize", "count", "level", "prot"]


def _json_rows(rng_text: str, rb: PhysRunBatch) -> Chunk:
    from .bulk import Rows
    from .run_rows import put_run_json

    rows = Rows(len(rb))
    put_run_json(rows, rng_text, rb.iova, rb.iova + rb.length, rb.phys, rb.pgsize, rb.count, rb.prot, rb.level)
    return rows.array()


def _json_holes(rng_text: str, lo: np.ndarray, last: np.ndarray) -> Chunk:
    from .bulk import Rows

    if (last == np.uint64(TOP - 1)).any():  # a hole to 2^64
        return "".join(f'{rng_text}"phys": "{a:#x}", "end": "{z + 1:#x}", "hole": true}}\n'
                       for a, z in zip(lo.tolist(), last.tolist())).encode()
    rows = Rows(len(lo))
    rows.text(rng_text + '"phys": "0x')
    rows.hex(lo)
    rows.text('", "end": "0x')
    rows.hex(last + np.uint64(1))
    rows.text('", "hole": true}\n')
    return rows.array()


@dataclass
class _Layout:
    runs: int = 0
    rows: int = 0
    wraps: bool = False
    widths: list[int] = field(default_factory=lambda: [len(h) for h in HEAD[:-1]])


def _layout(rr: ReverseRange, holes: bool) -> _Layout:
    """The plain table's first pass: runs, rows and column widths (and rr's coverage)."""
    from .bulk import decimal_digits, hex_digits

    lay = _Layout()
    w = lay.widths
    for rb in rr.batches():
        lay.runs += len(rb)
        if lay.wraps or rb.wraps():
            lay.wraps = True
            continue
        w[0] = max(w[0], 2 + int(hex_digits(rb.iova).max()))
        w[1] = max(w[1], 2 + int(hex_digits(rb.iova + rb.length).max()))
        w[2] = max(w[2], 2 + int(hex_digits(rb.phys).max()))
        w[3] = max(w[3], 2 + int(hex_digits(rb.phys + rb.length).max()))
        w[4] = max([w[4]] + [len(fmt_size(int(x))) for x in np.unique(rb.pgsize).tolist()])
        w[5] = max(w[5], int(decimal_digits(rb.count.astype(np.uint64)).max()))
        w[6] = max([w[6]] + [len(str(x)) for x in np.unique(rb.level).tolist()])
    lay.rows = lay.runs
    if holes and len(rr.hole_lo):
        lay.rows += len(rr.hole_lo)
        if (rr.hole_last == np.uint64(TOP - 1)).any():
            lay.wraps = True
        w[2] = max(w[2], 2 + int(hex_digits(rr.hole_lo).max()))
        w[3] = max(w[3], 2 + int(hex_digits(rr.hole_last + np.uint64(1)).max()))
        w[4] = max(w[4], len("hole"))
    return lay


def _text_rows(rb: PhysRunBatch, w: list[int]) -> Chunk:
    from .bulk import Rows
    from .run_rows import put_run_tail

    rows = Rows(len(rb))
    for col, values in enumerate((rb.iova, rb.iova + rb.length, rb.phys, rb.phys + rb.length)):
        rows.hex_cell(values, w[col])
        rows.text("  ")
    put_run_tail(rows, rb.pgsize, rb.count, rb.level, rb.prot, w[4:7])
    return rows.array()


def _text_holes(lo: np.ndarray, last: np.ndarray, w: list[int]) -> Chunk:
    from .bulk import Rows

    rows = Rows(len(lo))
    rows.text(" " * (w[0] + 2 + w[1] + 2))
    rows.hex_cell(lo, w[2])
    rows.text("  ")
    rows.hex_cell(last + np.uint64(1), w[3])
    rows.text("  " + "hole".rjust(w[4]) + "\n")
    return rows.array()
