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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from formats.base import LeafBatch, prot_str
from formats.walker import TableVisit

from .columns import Columns
from .domain import Domain
from .errors import UserError
from .numbers import fmt_size
from .walk import Summary, batches, parse_span

U64 = np.uint64
TOP = 1 << 64
HALF = 1 << 63


# ---------------------------------------------------------------------------------------------
# Segments: leaves clipped to a range, as parallel arrays.


@dataclass
class Segs(Columns):
    """Pieces of leaves, in IOVA order: [s, s + ln) maps to p; pg is the backing leaf's page
    size (the PTE's, not the piece's), pr its IOMMU_* prot, lv its level number."""

    s: np.ndarray
    ln: np.ndarray
    p: np.ndarray
    pg: np.ndarray
    pr: np.ndarray
    lv: np.ndarray

    @staticmethod
    def empty() -> Segs:
        z = np.zeros(0, dtype=np.uint64)
        return Segs(z, z, z, z, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int16))

    @classmethod
    def concat(cls, parts: Sequence[Segs]) -> Segs:
        return super().concat(parts) if parts else Segs.empty()


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
    whose output lies outside it (subtract it from the IOVA-clipped total). It is the last
    walk's: a command walking twice (widths, then rows) still subtracts it once."""

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
        self.excess = 0
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


def _space(dom: Domain, start: int | None, end: int | None) -> tuple[int, int]:
    lo = min(s for s, _ in dom.windows) if start is None else start
    hi = max(e for _, e in dom.windows) if end is None else end
    return lo, hi


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
    the range walk enters) that some leaf maps.

    Memory stays at two words per run (its output interval) whatever the domain holds: a first
    leaf pass keeps only those; from them come the physical ranges reached twice, and whether
    any run reaches a table; only then, if so, a second pass gathers IOVA, page size and prot
    of just the runs that reach those ranges."""
    lo, hi = _space(dom, start, end)
    ps: list[np.ndarray] = []
    es: list[np.ndarray] = []
    for sg in _alias_runs(dom, lo, hi, phys_window, bar=True):
        ps.append(sg.p)
        es.append(sg.p + sg.ln)
    if not ps:
        return [], []
    p = np.concatenate(ps)
    del ps
    e = np.concatenate(es)
    del es
    tables = _tables(dom, lo, hi)
    t_lo = np.array([t[0] for t in tables], dtype=np.uint64)
    t_hi = t_lo + np.array([t[1] for t in tables], dtype=np.uint64)
    reach_tables = _any_overlap(p, e, t_lo, np.maximum.accumulate(t_hi)) if tables else False
    # Some byte is reached twice iff the j-th smallest start lies below the (j-1)-th smallest end:
    # two plain sorts (in place: the pairs are not needed together any more) settle the usual
    # no-alias case without an argsort.
    p.sort()
    e.sort()
    twice = bool((p[1:] < e[:-1]).any())
    a_lo, a_hi = _twice_ranges(p, e) if twice else (np.zeros(0, np.uint64), np.zeros(0, np.uint64))
    del p, e
    if not twice and not reach_tables:
        return [], []
    # the second pass: the columns of the runs that reach a range reached twice, or a table
    r_lo, r_hi = _disjoint(np.concatenate((a_lo, t_lo if reach_tables else t_lo[:0])),
                           np.concatenate((a_hi, t_hi if reach_tables else t_hi[:0])))
    cols: dict[str, list[np.ndarray]] = {"s": [], "p": [], "e": [], "pg": [], "pr": []}
    for sg in _alias_runs(dom, lo, hi, phys_window):
        keep = _overlaps(sg.p, sg.p + sg.ln, r_lo, r_hi)
        if keep.any():
            for k, col in (("s", sg.s), ("p", sg.p), ("e", sg.p + sg.ln), ("pg", sg.pg), ("pr", sg.pr)):
                cols[k].append(col[keep])
    if not cols["s"]:
        return [], []
    s_, p_, e_, pg, pr = (np.concatenate(cols[k]) for k in ("s", "p", "e", "pg", "pr"))
    tabs = _table_aliases(_ByPhys(p_, e_, None, s_, pg, pr), tables) if reach_tables else []
    if not twice:
        return [], tabs
    order = np.argsort(p_)
    return _phys_aliases(_ByPhys(p_[order], e_[order], order, s_, pg, pr)), tabs


def _alias_runs(dom: Domain, lo: int, hi: int, phys_window: tuple[int, int] | None,
                bar: bool = False) -> Iterator[Segs]:
    """The leaves of [lo, hi) merged into runs (the usual contiguous buffer costs one interval,
    not one per page), optionally only those reaching `phys_window`. Both passes of
    find_aliases see the same runs."""
    for sg in _leaves(dom, lo, hi, bar=bar):
        if phys_window is not None:
            sg = sg[_phys_overlap(sg.p, sg.ln, *phys_window)]
            if not len(sg):
                continue
        brk = np.concatenate(([0], _breaks(sg.s, sg.ln, sg.p, sg.pg, sg.pr)))
        if len(brk) < len(sg):
            ends = np.concatenate((brk[1:], [len(sg)])) - 1
            sg = Segs(sg.s[brk], (sg.s[ends] - sg.s[brk]) + sg.ln[ends], sg.p[brk], sg.pg[brk], sg.pr[brk],
                      sg.lv[brk])
        yield sg


def _any_overlap(p: np.ndarray, e: np.ndarray, t_lo: np.ndarray, t_reach: np.ndarray) -> bool:
    """Whether some interval [p, e) overlaps some table [t_lo, t_hi) (t_lo sorted, t_reach the
    running maximum of the ends), in slices so the index arrays stay small."""
    for k in range(0, len(p), 1 << 20):
        first = np.searchsorted(t_reach, p[k:k + (1 << 20)], "right")
        last = np.searchsorted(t_lo, e[k:k + (1 << 20)], "left")
        if (last > first).any():
            return True
    return False


def _twice_ranges(p: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The maximal physical ranges [lo, hi) that two or more intervals reach, from their starts
    p and ends e (in any order, not paired: a sweep over the sorted events)."""
    pos = np.concatenate((p, e))
    delta = np.concatenate((np.ones(len(p), dtype=np.int64), -np.ones(len(e), dtype=np.int64)))
    order = np.argsort(pos, kind="stable")
    pos, delta = pos[order], delta[order]
    del order
    last = np.ones(len(pos), dtype=bool)  # the depth after all events at one position
    last[:-1] = pos[1:] != pos[:-1]
    depth = np.cumsum(delta)[last]
    upos = pos[last]
    deep = depth[:-1] >= 2  # [upos[k], upos[k+1]) is reached at least twice
    edge = np.diff(np.concatenate(([0], deep.astype(np.int8), [0])))
    return upos[np.flatnonzero(edge == 1)], upos[np.flatnonzero(edge == -1)]


def _disjoint(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranges merged into sorted, disjoint ones."""
    if not len(lo):
        return lo, hi
    order = np.argsort(lo)
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    new = np.ones(len(lo), dtype=bool)
    new[1:] = lo[1:] > reach[:-1]
    firsts = np.flatnonzero(new)
    return lo[firsts], reach[np.append(firsts[1:], len(lo)) - 1]


def _overlaps(p: np.ndarray, e: np.ndarray, r_lo: np.ndarray, r_hi: np.ndarray) -> np.ndarray:
    """Which intervals [p, e) overlap one of the sorted disjoint ranges [r_lo, r_hi)."""
    k = np.searchsorted(r_lo, e, "left") - 1  # the last range starting below e
    kc = np.maximum(k, 0)
    return (k >= 0) & (r_hi[kc] > p)  # type: ignore[no-any-return]


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
