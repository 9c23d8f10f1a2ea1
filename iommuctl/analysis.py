"""Analyses over translations, not bytes: `reverse` (physical -> IOVA), `walk --phys-range`
(leaves filtered by output address) and `walk --aliases` (physical ranges mapped at several
IOVAs, and table pages the device can reach through its own mappings); the clipped leaf
segments `diff` (iommuctl/diff.py) compares.

Everything consumes the shared walker's LeafBatch arrays and works per batch with numpy; only
results (hits, aliases) become Python objects. Addresses stay uint64 and IOVA
extents are kept as (start, length) pairs, never as an exclusive end, because a leaf can end at
2^64 (the top of a sign-extended address space) and that end does not fit in a uint64.

Output addresses cannot prune the walk above the leaf tables: a table entry says where the next
table is, not where that table's leaves point, so a physical query reads every leaf table of the
IOVA range and filters each one with a numpy mask on the leaves' output addresses.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
import numpy as np

from formats.base import LeafBatch, prot_str
from formats.walker import TableVisit

from .cli import json_option, load
from .domain import Domain
from .errors import UserError
from .numbers import fmt_size, parse_number
from .walk import Summary, batches, parse_range, parse_span

U64 = np.uint64
TOP = 1 << 64
HALF = 1 << 63


# ---------------------------------------------------------------------------------------------
# Segments: leaves clipped to a range, as parallel arrays.


@dataclass
class Segs:
    """Pieces of leaves, in IOVA order: [s, s + ln) maps to p; pg is the backing leaf's page
    size (the PTE's, not the piece's), pr its IOMMU_* prot, lv its level number."""

    s: np.ndarray
    ln: np.ndarray
    p: np.ndarray
    pg: np.ndarray
    pr: np.ndarray
    lv: np.ndarray

    def __len__(self) -> int:
        return len(self.s)

    def __getitem__(self, k: Any) -> Segs:
        return Segs(self.s[k], self.ln[k], self.p[k], self.pg[k], self.pr[k], self.lv[k])

    @staticmethod
    def empty() -> Segs:
        z = np.zeros(0, dtype=np.uint64)
        return Segs(z, z, z, z, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int16))

    @staticmethod
    def concat(parts: Sequence[Segs]) -> Segs:
        if not parts:
            return Segs.empty()
        if len(parts) == 1:
            return parts[0]
        return Segs(*(np.concatenate([getattr(x, f) for x in parts]) for f in ("s", "ln", "p", "pg", "pr", "lv")))


def segs_of(b: LeafBatch, start: int, end: int) -> Segs:
    """A leaf batch clipped to [start, end). The walker yields only leaves overlapping the
    range, in IOVA order, so only the first can start below `start` and only the last can
    reach past `end`."""
    n = len(b)
    s, size, p = b.iova.astype(np.uint64), b.size.astype(np.uint64), b.phys.astype(np.uint64)
    ln = size
    if n:
        lead = int(s[0]) < start
        tail = end < TOP and int(s[-1]) + int(size[-1]) > end
        if lead or tail:
            s, ln, p = s.copy(), size.copy(), p.copy()
            if lead:
                cut = start - int(s[0])
                s[0], ln[0], p[0] = start, int(ln[0]) - cut, int(p[0]) + cut
            if tail:
                ln[-1] = min(int(ln[-1]), end - int(s[-1]))
            if not (ln > 0).all():  # a straddler that does not reach into the range at all
                keep = ln > 0
                s, ln, p, size = s[keep], ln[keep], p[keep], size[keep]
                return Segs(s, ln, p, size, b.prot[keep].astype(np.int64),
                            np.full(len(s), b.level, dtype=np.int16))
    return Segs(s, ln, p, size, b.prot.astype(np.int64), np.full(len(s), b.level, dtype=np.int16))


def _leaves(dom: Domain, start: int, end: int, bar: bool = False) -> Iterator[Segs]:
    """Clipped leaf pieces; `bar`: with walk's progress bar (one bar at a time: rich allows one
    live display)."""
    for b in (batches(dom, start, end) if bar else dom.leaves(start, end)):
        if len(b):
            sg = segs_of(b, start, end)
            if len(sg):
                yield sg


def _halves(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) split at 2^63, so IOVA offsets from a chunk's first address fit in uint64."""
    if start < HALF < end:
        return [(start, HALF), (HALF, end)]
    return [(start, end)]


def _breaks(s: np.ndarray, ln: np.ndarray, p: np.ndarray, pg: np.ndarray, pr: np.ndarray) -> np.ndarray:
    """Indices i >= 1 where piece i does not continue piece i-1 (IOVA- and PA-contiguous, same
    page size and prot). i-1 never ends at 2^64 when a piece i follows, so s + ln is exact."""
    if len(s) < 2:
        return np.zeros(0, dtype=np.int64)
    cont = ((s[1:] == s[:-1] + ln[:-1]) & (p[1:] == p[:-1] + ln[:-1]) & (pg[1:] == pg[:-1])
            & (pr[1:] == pr[:-1]))
    return np.flatnonzero(~cont) + 1


def parse_phys_range(text: str, option: str = "--phys-range") -> tuple[int, int]:
    """A physical range START:END (END exclusive) or START+LENGTH."""
    start, end = parse_span(text, option)
    if end > TOP:
        raise UserError(f"{option} {text!r}: [{start:#x}, {end:#x}) passes 2^64")
    return start, end


def _phys_overlap(p: np.ndarray, size: np.ndarray, plo: int, phi: int) -> np.ndarray:
    """Mask of leaves whose output [p, p + size) overlaps [plo, phi). Output addresses are below
    2^oas, so p + size does not wrap."""
    m = p + size > U64(plo)
    if phi < TOP:
        m &= p < U64(phi)
    return m  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# walk --phys-range


class PhysWindow:
    """A Domain seen through a physical window: `leaves()` yields only the leaves whose output
    overlaps [plo, phi), whole (as `walk` shows a leaf straddling the range start whole), so
    walk's run and summary code works on it unchanged. Every leaf table of the IOVA range is
    still read (see the module note); each is filtered with one numpy mask.

    `excess` is what walk's byte totals count beyond the window: the parts of straddling leaves
    whose output lies outside it (subtract it from the IOVA-clipped total)."""

    def __init__(self, dom: Domain, plo: int, phi: int) -> None:
        self.dom = dom
        self.plo, self.phi = plo, phi
        self.name = dom.name
        self.fmt = dom.fmt
        self.excess = 0

    @property
    def windows(self) -> list[tuple[int, int]]:
        return self.dom.windows

    def leaves(self, start: int, end: int) -> Iterator[LeafBatch]:
        plo, phi = self.plo, self.phi
        for b in self.dom.leaves(start, end):
            if not len(b):
                continue
            m = _phys_overlap(b.phys, b.size, plo, phi)
            if not m.any():
                continue
            if not m.all():
                b = LeafBatch(b.iova[m], b.phys[m], b.size[m], b.prot[m], b.raw[m], b.level)
            # only leaves reaching outside the window need the byte correction
            out = (b.phys < U64(plo)) | ((b.phys + b.size > U64(phi)) if phi < TOP else False)
            if np.any(out):
                for i in np.flatnonzero(out).tolist():
                    v, p, sz = int(b.iova[i]), int(b.phys[i]), int(b.size[i])
                    iova_lo, iova_hi = max(v, start), min(v + sz, end)
                    counted = max(0, iova_hi - iova_lo)
                    lo = max(iova_lo, v + plo - p)
                    hi = min(iova_hi, v + phi - p)
                    self.excess += counted - max(0, hi - lo)
            yield b


def phys_summary(dom: Domain, start: int, end: int, plo: int, phi: int) -> Summary:
    """walk --summary restricted to leaves whose output overlaps [plo, phi); `mapped` counts
    only the bytes of [start, end) whose output lies in the window."""
    from .walk import summarise

    view = PhysWindow(dom, plo, phi)
    s = summarise(view, start, end)  # type: ignore[arg-type]
    s.mapped -= view.excess
    return s


# ---------------------------------------------------------------------------------------------
# reverse


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


def _space(dom: Domain, start: int | None, end: int | None) -> tuple[int, int]:
    lo = min(s for s, _ in dom.windows) if start is None else start
    hi = max(e for _, e in dom.windows) if end is None else end
    return lo, hi


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
class ReverseRange:
    """reverse --range: the IOVA runs whose output lies in [plo, phi) (iterate `runs()`), then
    the coverage of the window: `mapped` bytes reached by at least one IOVA, `holes`, and
    `aliased` bytes reached by more than one."""

    dom: Domain
    plo: int
    phi: int
    start: int
    end: int
    mapped: int = 0
    aliased: int = 0
    holes: list[tuple[int, int]] = field(default_factory=list)
    _cover: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def runs(self) -> Iterator[PhysRun]:
        plo, phi = self.plo, self.phi
        cur: PhysRun | None = None
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
            self._cover.append((p, ln))
            starts = np.concatenate(([0], _breaks(s, ln, p, sg.pg, sg.pr)))
            ends = np.concatenate((starts[1:], [len(s)]))
            for a, z in zip(starts.tolist(), ends.tolist()):
                v, ph, pg, pr = int(s[a]), int(p[a]), int(sg.pg[a]), int(sg.pr[a])
                e = int(s[z - 1]) + int(ln[z - 1])
                if (cur is not None and cur.end == v and cur.phys_end == ph and cur.pgsize == pg
                        and cur.prot == pr):
                    cur.end, cur.count = e, cur.count + (z - a)
                    continue
                if cur is not None:
                    yield cur
                cur = PhysRun(v, e, ph, pg, z - a, pr, int(sg.lv[a]))
        if cur is not None:
            yield cur
        self._coverage()

    def _coverage(self) -> None:
        """Union and double coverage of the pieces' outputs (sorted once, at the end)."""
        plo, phi = self.plo, self.phi
        if not self._cover:
            self.holes = [(plo, phi)]
            return
        p = np.concatenate([c[0] for c in self._cover])
        ln = np.concatenate([c[1] for c in self._cover])
        self._cover = []
        order = np.argsort(p, kind="stable")
        p, e = p[order], p[order] + ln[order]
        reach = np.maximum.accumulate(e)
        new = np.ones(len(p), dtype=bool)
        new[1:] = p[1:] >= reach[:-1]  # starts a new connected cluster
        firsts = np.flatnonzero(new)
        lasts = np.concatenate((firsts[1:], [len(p)])) - 1
        c_lo, c_hi = p[firsts], reach[lasts]
        self.mapped = int((c_hi - c_lo).sum(dtype=np.uint64))
        pos = plo
        holes = []
        for a, z in zip(c_lo.tolist(), c_hi.tolist()):
            if a > pos:
                holes.append((pos, a))
            pos = max(pos, z)
        if pos < phi:
            holes.append((pos, phi))
        self.holes = holes
        # bytes reached by two or more IOVAs: none when the pieces add up to their union
        total = int(ln.sum(dtype=np.uint64))
        if total != self.mapped:
            self.aliased = _multi_covered(p, e)


def _multi_covered(p: np.ndarray, e: np.ndarray) -> int:
    """Bytes covered by at least two of the intervals [p, e) (a sweep over sorted events)."""
    pos = np.concatenate((p, e))
    delta = np.concatenate((np.ones(len(p), dtype=np.int64), -np.ones(len(e), dtype=np.int64)))
    order = np.argsort(pos, kind="stable")
    pos, delta = pos[order], delta[order]
    # depth after all events at a position: the running sum at the last event of each position
    last = np.ones(len(pos), dtype=bool)
    last[:-1] = pos[1:] != pos[:-1]
    depth = np.cumsum(delta)[last]
    upos = pos[last]
    widths = upos[1:] - upos[:-1]
    return int(widths[depth[:-1] >= 2].sum(dtype=np.uint64))


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sorting (recent numpy's hash-based unique is far slower on uint64)."""
    x = np.sort(x)
    if len(x) < 2:
        return x
    keep = np.ones(len(x), dtype=bool)
    keep[1:] = x[1:] != x[:-1]
    return x[keep]


# ---------------------------------------------------------------------------------------------
# aliases


@dataclass
class PhysAlias:
    """Physical [phys, end) is mapped at more than one IOVA: `mappings` are the IOVA ranges
    (iova, end, phys of iova, pgsize, prot) reaching into it, `depth` the most IOVAs reaching
    one byte of it."""

    phys: int
    end: int
    depth: int
    mappings: list[tuple[int, int, int, int, int]]


@dataclass
class TableAlias:
    """A page table the walk used lies (partly) in memory the domain maps: IOVAs [iova, end)
    reach table bytes [phys, phys + end - iova) of the level `level` table at `table`."""

    table: int
    level: int
    nbytes: int
    iova: int
    end: int
    phys: int
    pgsize: int
    prot: int

    @property
    def writable(self) -> bool:
        return bool(self.prot & 2)  # IOMMU_WRITE: the device can rewrite its own translations


def find_aliases(dom: Domain, start: int | None = None, end: int | None = None,
                 phys_window: tuple[int, int] | None = None) -> tuple[list[PhysAlias], list[TableAlias]]:
    """Aliases among the leaves of [start, end) (optionally only those whose output overlaps
    `phys_window`): physical ranges mapped at more than one IOVA, and table pages (every table
    the range walk enters) that some leaf maps. Two passes of the shared walker: its leaves
    (batched across leaf tables) and its table visits."""
    lo, hi = _space(dom, start, end)
    cols: dict[str, list[np.ndarray]] = {"s": [], "ln": [], "p": [], "pg": [], "pr": []}
    for sg in _leaves(dom, lo, hi, bar=True):
        if phys_window is not None:
            sg = sg[_phys_overlap(sg.p, sg.ln, *phys_window)]
            if not len(sg):
                continue
        # merge runs first: the usual contiguous buffer costs one interval, not one per page
        brk = np.concatenate(([0], _breaks(sg.s, sg.ln, sg.p, sg.pg, sg.pr)))
        if len(brk) < len(sg):
            ends = np.concatenate((brk[1:], [len(sg)])) - 1
            sg = Segs(sg.s[brk], (sg.s[ends] - sg.s[brk]) + sg.ln[ends], sg.p[brk], sg.pg[brk], sg.pr[brk],
                      sg.lv[brk])
        for k in cols:
            cols[k].append(getattr(sg, k))
    if not cols["s"]:
        return [], []
    s, ln, p, pg, pr = (np.concatenate(cols[k]) for k in ("s", "ln", "p", "pg", "pr"))
    del cols
    e = p + ln
    tables = _table_aliases(_ByPhys(p, e, None, s, pg, pr), _tables(dom, lo, hi))  # any order will do
    # Some byte is reached twice iff the j-th smallest start lies below the (j-1)-th smallest end:
    # two plain sorts settle the usual no-alias case without an argsort.
    ps, es = np.sort(p), np.sort(e)
    if not (ps[1:] < es[:-1]).any():
        return [], tables
    del ps, es
    order = np.argsort(p)
    return _phys_aliases(_ByPhys(p[order], e[order], order, s, pg, pr)), tables


@dataclass
class _ByPhys:
    """Leaf intervals [p, e) of output, usually sorted by p: `order[i]` indexes the IOVA-ordered
    columns s (IOVA), pg (page size), pr (prot)."""

    p: np.ndarray
    e: np.ndarray
    order: np.ndarray | None  # None: p and e are in the columns' own order
    s: np.ndarray
    pg: np.ndarray
    pr: np.ndarray

    def _k(self, i: int) -> int:
        return i if self.order is None else int(self.order[i])

    def iova(self, i: int, phys: int) -> int:
        """The IOVA at which interval i outputs `phys`."""
        return int(self.s[self._k(i)]) + (phys - int(self.p[i]))

    def attrs(self, i: int) -> tuple[int, int]:
        k = self._k(i)
        return int(self.pg[k]), int(self.pr[k])


def _tables(dom: Domain, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """(address, bytes, level number) of every table the range walk enters, sorted. The leaf
    pass already reported any table it could not walk, so faults are not repeated here."""
    walker = dom.walker
    if not dom.fmt.has_tables or not hasattr(walker, "visit_tables"):
        return []
    tables: dict[int, tuple[int, int]] = {}  # a root may serve two windows
    for v in walker.visit_tables(lo, hi):
        if isinstance(v, TableVisit):
            tables[v.table] = (v.level.entries * dom.fmt.entry_size, v.level.num)
    return sorted((t, n, lv) for t, (n, lv) in tables.items())


def _phys_aliases(by: _ByPhys) -> list[PhysAlias]:
    """Clusters of overlapping outputs are found with one running maximum; only clusters with
    an overlap are looked at in Python."""
    n = len(by.p)
    reach = np.maximum.accumulate(by.e)
    overlap = np.zeros(n, dtype=bool)
    overlap[1:] = by.p[1:] < reach[:-1]
    if not overlap.any():
        return []
    firsts = np.flatnonzero(~overlap)
    lasts = np.concatenate((firsts[1:], [n]))
    out: list[PhysAlias] = []
    for a, z in zip(firsts.tolist(), lasts.tolist()):
        if z - a < 2:
            continue
        p = by.p[a:z].tolist()
        pe = by.e[a:z].tolist()
        # depth per elementary interval between the cluster's boundaries
        cuts = sorted(set(p) | set(pe))
        depth = [0] * (len(cuts) - 1)
        where = {c: i for i, c in enumerate(cuts)}
        for x, y in zip(p, pe):
            for k in range(where[x], where[y]):
                depth[k] += 1
        k = 0
        while k < len(depth):
            if depth[k] < 2:
                k += 1
                continue
            j = k
            while j + 1 < len(depth) and depth[j + 1] >= 2:
                j += 1
            rlo, rhi = cuts[k], cuts[j + 1]
            maps = []
            for i in range(a, z):
                x, y = p[i - a], pe[i - a]
                if x < rhi and y > rlo:
                    ov_lo, ov_hi = max(x, rlo), min(y, rhi)
                    v = by.iova(i, ov_lo)
                    maps.append((v, v + (ov_hi - ov_lo), ov_lo, *by.attrs(i)))
            out.append(PhysAlias(rlo, rhi, max(depth[k:j + 1]), sorted(maps)))
            k = j + 1
    return out


def _table_aliases(by: _ByPhys, tables: list[tuple[int, int, int]]) -> list[TableAlias]:
    if not tables:
        return []
    t_lo = np.array([t[0] for t in tables], dtype=np.uint64)
    t_hi = np.array([t[0] + t[1] for t in tables], dtype=np.uint64)
    t_reach = np.maximum.accumulate(t_hi)
    # per leaf: tables [first, last) may overlap it (every table before `first` ends at or below p)
    first = np.searchsorted(t_reach, by.p, "right")
    last = np.searchsorted(t_lo, by.e, "left")
    out: list[TableAlias] = []
    for i in np.flatnonzero(last > first).tolist():
        x, y = int(by.p[i]), int(by.e[i])
        for k in range(int(first[i]), int(last[i])):
            addr, nbytes, level = tables[k]
            ov_lo, ov_hi = max(x, addr), min(y, addr + nbytes)
            if ov_lo < ov_hi:
                v = by.iova(i, ov_lo)
                out.append(TableAlias(addr, level, nbytes, v, v + (ov_hi - ov_lo), ov_lo, *by.attrs(i)))
    out.sort(key=lambda t: (t.table, t.iova))
    return out


# ---------------------------------------------------------------------------------------------
# commands


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
    from .output import emit_json, say, table

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
        rr = ReverseRange(dom, plo, phi, start, end)
        rng = {"phys": f"{plo:#x}", "end": f"{phi:#x}"}
        rng_text = f'{{"phys": "{plo:#x}", "end": "{phi:#x}"}}'
        prot_text: dict[int, str] = {}
        rrows: list[list[Any]] = []
        lines: list[str] = []
        nruns = 0
        for r in rr.runs():
            nruns += 1
            if as_json:  # one f-string per run: a 1 GiB window of 4K pages is 256 K lines
                pt = prot_text.get(r.prot) or prot_text.setdefault(r.prot, prot_str(r.prot))
                lines.append(f'{{"range": {rng_text}, "iova": "{r.iova:#x}", "end": "{r.end:#x}", '
                             f'"phys": "{r.phys:#x}", "pgsize": {r.pgsize}, "count": {r.count}, "prot": "{pt}", '
                             f'"level": {r.level}}}\n')
                if len(lines) >= 4096:
                    sys.stdout.write("".join(lines))
                    lines.clear()
            else:
                rrows.append([f"{r.iova:#x}", f"{r.end:#x}", f"{r.phys:#x}", f"{r.phys_end:#x}",
                              fmt_size(r.pgsize), r.count, r.level, prot_str(r.prot)])
        sys.stdout.write("".join(lines))
        if holes:
            for h0, h1 in rr.holes:
                if as_json:
                    emit_json({"range": rng, "phys": f"{h0:#x}", "end": f"{h1:#x}", "hole": True})
                else:
                    rrows.append(["", "", f"{h0:#x}", f"{h1:#x}", "hole", "", "", ""])
        unmapped = (phi - plo) - rr.mapped
        missed |= unmapped > 0
        if as_json:
            emit_json({"summary": {"range": rng, "mapped": rr.mapped, "unmapped": unmapped, "aliased": rr.aliased,
                                   "runs": nruns, "holes": len(rr.holes)}})
        else:
            table(f"{dom.name}: IOVAs mapping [{plo:#x}, {phi:#x})",
                  ["iova", "end", "phys", "phys end", "pgsize", "count", "level", "prot"], rrows,
                  justify_right=("pgsize", "count"))
            say(f"physical [{plo:#x}, {phi:#x}): {fmt_size(rr.mapped)} mapped in {nruns} IOVA runs, "
                            f"{fmt_size(unmapped)} unmapped in {len(rr.holes)} holes, "
                            f"{fmt_size(rr.aliased)} reached by more than one IOVA")
    if missed:
        sys.exit(1)


def print_aliases(dom: Domain, start: int, end: int, as_json: bool,
                  phys_window: tuple[int, int] | None = None) -> None:
    """walk --aliases: physical ranges mapped at more than one IOVA, then table pages the domain
    maps (writable ones let the device rewrite its own translations)."""
    from .output import emit_json, say, table

    phys, tabs = find_aliases(dom, start, end, phys_window)
    if as_json:
        for a in phys:
            emit_json({"alias": "phys", "phys": f"{a.phys:#x}", "end": f"{a.end:#x}", "depth": a.depth,
                       "mappings": [{"iova": f"{v:#x}", "end": f"{e:#x}", "phys": f"{p:#x}", "pgsize": pg,
                                     "prot": prot_str(pr)} for v, e, p, pg, pr in a.mappings]})
        for t in tabs:
            emit_json({"alias": "table", "table": f"{t.table:#x}", "level": t.level, "bytes": t.nbytes,
                       "iova": f"{t.iova:#x}", "end": f"{t.end:#x}", "phys": f"{t.phys:#x}", "pgsize": t.pgsize,
                       "prot": prot_str(t.prot), "writable": t.writable})
        emit_json({"summary": {"phys_aliases": len(phys), "aliased_bytes": sum(a.end - a.phys for a in phys),
                               "mapped_tables": len({t.table for t in tabs}),
                               "writable_tables": len({t.table for t in tabs if t.writable}),
                               "range": {"iova": f"{start:#x}", "end": f"{end:#x}"}}})
        return
    if phys:
        table(f"{dom.name}: physical ranges mapped at more than one IOVA",
              ["phys", "end", "size", "depth", "iovas"],
              ([f"{a.phys:#x}", f"{a.end:#x}", fmt_size(a.end - a.phys), a.depth,
                " ".join(f"{v:#x}-{e:#x}({fmt_size(pg)},{prot_str(pr)})" for v, e, _p, pg, pr in a.mappings)]
               for a in phys), justify_right=("size", "depth"))
    if tabs:
        table(f"{dom.name}: page tables mapped by the domain",
              ["table", "level", "bytes", "iova", "end", "pgsize", "prot", "writable"],
              ([f"{t.table:#x}", t.level, t.nbytes, f"{t.iova:#x}", f"{t.end:#x}", fmt_size(t.pgsize),
                prot_str(t.prot), "yes" if t.writable else "no"] for t in tabs))
    say(f"{len(phys)} physical ranges mapped at more than one IOVA "
                    f"({fmt_size(sum(a.end - a.phys for a in phys))}); {len({t.table for t in tabs})} page tables "
                    f"mapped by the domain ({len({t.table for t in tabs if t.writable})} writable); "
                    f"range [{start:#x}, {end:#x})")
