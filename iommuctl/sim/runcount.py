"""Run-based counting: the callers' counts from the leaves of the range, without a Python call
per page (callers.md section 7, generalised to real tables).

One range walk gives the leaves (numpy batches, with the depth of each leaf's walk) and the
shape of the tables: the entries a single range walk reads (the floor) and, per walk depth, the
bytes of the range that are holes. From those:

VFIO, per vfio_dma (N pages, M mapped, H = N - M hole pages, E extents = maximal runs that are
IOVA- and physically contiguous, T leaves, `probes` = extents that do not end at the dma's end):
  legacy       translations N + probes           entries  sum(pages x depth) + holes + probes
  length-aware translations T + H + probes       entries  sum(depth) + holes + probes
  both         unmaps E, syncs ceil(E / 512), unpin calls E, pages M
A probe reads the page after the extent: the next leaf's depth, or a hole's (walked once).

IOMMUFD, per area (N pages, R pfn runs = extents, A = batch capacity, B = ceil(R / A)):
  legacy       translations N + B - 1            length-aware  T + B - 1
  both         unmaps B, syncs B, unpin calls R, pages N
The B - 1 extra reads are of the first leaf of every A-th run (the page a full batch refused).

These hold when the fast unmaps all succeed, which they do when each unit holds whole leaves.
A unit edge inside a leaf is counted as the kernel handles it (io-pgtable refuses to unmap part
of a large IOPTE): VFIO stops at a cut first leaf after one refused fast and one refused slow
unmap, and comes back once to a cut last leaf before giving up; an IOMMUFD batch whose unmap is
refused still unpins (iommu_unmap_nofail only WARNs). Both are reported as the replay reports
them (the block stays mapped). Every leaf must be at least PAGE_SIZE and the legacy op the
plain one (0 only on a miss: no leaf may map physical address 0, which the legacy loops take
for a hole); anything else, and any cut edge on an iommupt domain, raises NotRunnable and the
explicit replay takes over. The tests hold the two against each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from formats.base import INVALID, TABLE, PageTable, WalkError
from formats.builder import iommu_pgsize
from formats.lazy import np
from iommuctl.errors import UserError

from .core import Counts, caps_unmap_at_table_end, is_iommupt
from .gpu import SZ_2M, gpu_steps
from .iommufd import MAX_NPFNS, batch_capacity
from .vfio import VFIO_IOMMU_TLB_SYNC_MAX

CHUNK = 1 << 16


class NotRunnable(Exception):
    """The run-based model does not cover this unit; the explicit replay must be used."""


@dataclass
class Shape:
    """What one range walk over [lo, hi) sees besides the leaves."""

    floor: int = 0
    hole_bytes: dict[int, int] = field(default_factory=dict)  # walk depth -> bytes (upper levels)
    leaf_table_bytes: dict[int, int] = field(default_factory=dict)  # depth -> bytes under leaf tables


def _add(d: dict[int, int], k: int, v: int) -> None:
    if v:
        d[k] = d.get(k, 0) + v


def table_shape(walker: Any, lo: int, hi: int) -> Shape:
    """Walk the non-leaf levels of [lo, hi): the floor (entries a range walk reads, each
    once), the upper-level holes by depth, and the bytes under last-level tables by depth.
    Last-level tables are counted from their parents' entries, never read here."""
    fmt: PageTable = walker.fmt
    sh = Shape()
    last = len(fmt.levels) - 1
    seen = {t.table for t in walker.tops}  # as the walker: a table reached twice is an error
    try:
        for top in walker.tops:
            a, b = max(lo, top.start), min(hi, top.end)
            if a < b:
                _shape(walker, fmt, top.table, top.level_index, top.level_index, top.base, a, b, sh, last, seen)
    except WalkError as e:
        raise UserError(f"{walker.fmt.name} tables: {e}") from None
    return sh


def _shape(walker: Any, fmt: PageTable, table: int, li: int, top_li: int, base: int, lo: int, hi: int,
           sh: Shape, last: int, seen: set[int]) -> None:
    lvl = fmt.levels[li]
    depth = li - top_li + 1
    i0 = (lo - base) >> lvl.shift
    i1 = min(((hi - 1 - base) >> lvl.shift) + 1, lvl.entries)
    sh.floor += i1 - i0
    if li == last:
        _add(sh.leaf_table_bytes, depth, hi - lo)
        return
    try:
        ents = walker.mem.array(table, lvl.entries, fmt.dtype)[i0:i1]
    except Exception as e:  # MemoryFault
        raise WalkError(table, f"level {lvl.num} table at {table:#x} is outside memory") from e
    kinds = fmt.classify_vec(ents, lvl)
    inv = np.flatnonzero(kinds == INVALID)
    if len(inv):
        # clipped bytes of the invalid entries: whole blocks, minus what sticks out at the edges
        total = len(inv) << lvl.shift
        if inv[0] == 0:
            total -= lo - (base + (i0 << lvl.shift))
        if inv[-1] == i1 - i0 - 1:
            total -= max(0, base + (i1 << lvl.shift) - hi)
        _add(sh.hole_bytes, depth, total)
    tab = np.flatnonzero(kinds == TABLE)
    if not len(tab):
        return
    nxt = fmt.next_table_vec(ents[tab], lvl).astype(np.uint64) if hasattr(fmt, "next_table_vec") else \
        np.array([fmt.next_table(int(ents[k]), lvl) for k in tab.tolist()], dtype=np.uint64)
    kids = nxt.tolist()
    if len(set(kids)) != len(kids) or not seen.isdisjoint(kids):
        dup = next(k for i, k in enumerate(kids) if k in seen or k in kids[:i])
        raise WalkError(dup, f"table at {dup:#x} is reached twice (a cycle or a shared table)")
    seen.update(kids)
    if li + 1 == last:
        # last-level tables: their entries in range follow from the parent's index alone
        child = fmt.levels[last]
        for j, k in enumerate(tab.tolist()):
            if 0 < j < len(tab) - 1:
                continue
            cbase = base + ((i0 + k) << lvl.shift)
            clo, chi = max(lo, cbase), min(hi, cbase + lvl.block)
            sh.floor += (((chi - 1 - cbase) >> child.shift) + 1) - ((clo - cbase) >> child.shift)
            _add(sh.leaf_table_bytes, depth + 1, chi - clo)
        middle = max(len(tab) - 2, 0)
        sh.floor += middle * child.entries
        _add(sh.leaf_table_bytes, depth + 1, middle << lvl.shift)
        return
    for j, k in enumerate(tab.tolist()):
        idx = i0 + k
        cbase = base + (idx << lvl.shift)
        _shape(walker, fmt, int(kids[j]), li + 1, top_li, cbase, max(lo, cbase), min(hi, cbase + lvl.block), sh,
               last, seen)


def table_addresses(walker: Any) -> set[int]:
    """Every table reachable from the roots over the whole input space: upper tables read,
    last-level tables known from their parents' pointers."""
    fmt: PageTable = walker.fmt
    out: set[int] = set()
    last = len(fmt.levels) - 1

    def visit(table: int, li: int) -> None:
        if table in out:
            return
        out.add(table)
        if li == last:
            return
        lvl = fmt.levels[li]
        try:
            ents = walker.mem.array(table, lvl.entries, fmt.dtype)
        except Exception:  # a table outside memory holds nothing to write
            return
        tab = np.flatnonzero(fmt.classify_vec(ents, lvl) == TABLE)
        for k in tab.tolist():
            visit(fmt.next_table(int(ents[k]), lvl), li + 1)

    for top in walker.tops:
        visit(top.table, top.level_index)
    return out


def clipped(v: np.ndarray, s: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Bytes of each leaf inside [lo, hi); inclusive ends, so a leaf or range ending at 2^64
    (the top of a sign-extended space) does not overflow."""
    u64 = np.uint64
    if len(v) and int(v[0]) >= lo and int(v[-1]) + int(s[-1]) - 1 <= hi - 1:
        return s  # sorted leaves: when neither edge sticks out, none does
    last = v + (s - u64(1))
    return np.minimum(last, u64(hi - 1)) - np.maximum(v, u64(lo)) + u64(1)  # type: ignore[no-any-return]


@dataclass
class Leaves:
    iova: np.ndarray
    phys: np.ndarray
    size: np.ndarray
    depth: np.ndarray

    def __len__(self) -> int:
        return len(self.iova)


def leaf_chunks(walker: Any, lo: int, hi: int) -> Iterator[Leaves]:
    """The leaves over [lo, hi) in IOVA order, in chunks of about CHUNK, with walk depths."""
    fmt = walker.fmt
    num_to_index = {lvl.num: i for i, lvl in enumerate(fmt.levels)}
    parts: list[Leaves] = []
    count = 0
    try:
        for b in walker.leaves(lo, hi):
            if not len(b):
                continue
            top = walker.top_for(int(b.iova[0])) or walker.top_for(lo)
            depth = num_to_index[b.level] - (top.level_index if top else 0) + 1
            parts.append(Leaves(b.iova, b.phys, b.size, np.full(len(b), depth, dtype=np.int64)))
            count += len(b)
            if count >= CHUNK:
                yield _cat(parts)
                parts, count = [], 0
    except WalkError as e:
        raise UserError(f"{fmt.name} tables: {e}") from None
    if parts:
        yield _cat(parts)


def _cat(parts: list[Leaves]) -> Leaves:
    if len(parts) == 1:
        return parts[0]
    return Leaves(np.concatenate([p.iova for p in parts]), np.concatenate([p.phys for p in parts]),
                  np.concatenate([p.size for p in parts]), np.concatenate([p.depth for p in parts]))


LEGACY_SAMPLE = 32


def check_legacy(walker: Any, ch: Leaves, page: int) -> None:
    """The legacy op must answer like the translation (it differs only for descriptors with
    quirks, e.g. RES0 output bits OR'ed in): checked on a sample of each chunk's leaves, at a
    page inside each; a format without its own legacy op needs no check."""
    fmt = walker.fmt
    if type(fmt).legacy_iova_to_phys is PageTable.legacy_iova_to_phys:
        return
    n = len(ch)
    rng = np.random.default_rng(n)
    picks = range(n) if n <= LEGACY_SAMPLE else rng.integers(0, n, LEGACY_SAMPLE).tolist()
    for i in picks:
        v, s = int(ch.iova[i]), int(ch.size[i])
        q = v + (int(rng.integers(0, max(s // page, 1))) * page if s > page else 0)
        t = _translate(walker, q)
        if fmt.legacy_iova_to_phys(q, t) != t.phys:
            raise NotRunnable(f"{fmt.name}'s legacy iova_to_phys differs from the translation at {q:#x}")


def _translate(walker: Any, q: int) -> Any:
    try:
        return walker.translate(q)
    except WalkError as e:
        raise UserError(f"{walker.fmt.name} tables: walking {q:#x}: {e}") from None


def mapped_stretches(walker: Any, lo: int, hi: int) -> list[tuple[int, int]]:
    """IOVA-contiguous mapped stretches of [lo, hi), clipped to it."""
    out: list[tuple[int, int]] = []
    for ch in leaf_chunks(walker, lo, hi):
        v, e = ch.iova, ch.iova + ch.size
        brk = np.flatnonzero(v[1:] != e[:-1]) + 1 if len(v) > 1 else np.zeros(0, dtype=np.int64)
        starts = [0] + brk.tolist()
        ends = brk.tolist() + [len(v)]
        for a, b in zip(starts, ends):
            s0, s1 = max(int(v[a]), lo), min(int(v[b - 1]) + int(ch.size[b - 1]), hi)
            if out and out[-1][1] == s0:
                out[-1] = (out[-1][0], s1)
            else:
                out.append((s0, s1))
    return out


def check_runnable(fmt: PageTable, page: int) -> None:
    if page > fmt.levels[-1].block:
        raise NotRunnable(f"PAGE_SIZE {page:#x} is larger than the last level's {fmt.levels[-1].block:#x}")


def _probe_depth(walker: Any, q: int) -> int:
    try:
        t = walker.translate(q)
    except WalkError as e:
        raise UserError(f"{walker.fmt.name} tables: walking {q:#x}: {e}") from None
    return t.entries_read


def hole_entries(sh: Shape, leaf_bytes_by_depth: dict[int, int], page: int) -> tuple[int, int]:
    """(hole pages inside tables, entries their walks read): upper-level holes, plus the parts
    of last-level tables no leaf covers."""
    pages = entries = 0
    for d, b in sh.hole_bytes.items():
        pages += b // page
        entries += (b // page) * d
    for d, b in sh.leaf_table_bytes.items():
        free = b - leaf_bytes_by_depth.get(d, 0)
        pages += free // page
        entries += (free // page) * d
    return pages, entries


class UnitLeaves:
    """Streams one unit's leaves and checks the run-based preconditions on the way."""

    def __init__(self, walker: Any, lo: int, hi: int, page: int, allow_cut: bool = False) -> None:
        self.walker, self.lo, self.hi, self.page = walker, lo, hi, page
        self.allow_cut = allow_cut
        self.leaf_bytes_last: dict[int, int] = {}  # depth -> clipped bytes of last-level leaves
        self.last_depth = len(walker.fmt.levels)

    def __iter__(self) -> Iterator[Leaves]:
        for ch in leaf_chunks(self.walker, self.lo, self.hi):
            v, s = ch.iova, ch.size
            if not self.allow_cut and (int(v[0]) < self.lo or int(v[-1]) + int(s[-1]) > self.hi):
                raise NotRunnable("a leaf is cut by the unit's edge")
            if True:
                if int(s.min()) < self.page:
                    raise NotRunnable("a leaf is smaller than PAGE_SIZE")
                if not (ch.phys != 0).all():
                    raise NotRunnable("a leaf maps physical address 0 (the legacy op's 'unmapped')")
                check_legacy(self.walker, ch, self.page)
            yield ch

    def note_last_level(self, ch: Leaves) -> None:
        """Record clipped bytes of leaves that live in last-level tables (for the holes there)."""
        cl = clipped(ch.iova, ch.size, self.lo, self.hi).astype(np.int64)
        # a leaf's depth tells where it lives only relative to its top; last-level leaves are
        # those whose table is a last-level table: depth == its top's depth of the last level
        dmin, dmax = int(ch.depth.min()), int(ch.depth.max())
        if dmin == dmax:  # the usual chunk: every leaf at one depth
            _add(self.leaf_bytes_last, dmin, int(cl.sum()))
            return
        for d in np.unique(ch.depth).tolist():
            _add(self.leaf_bytes_last, int(d), int(cl[ch.depth == d].sum()))


def _leaf_bytes_in_leaf_tables(sh: Shape, ul: UnitLeaves) -> dict[int, int]:
    # only depths that have last-level tables: leaves at other depths are upper-level blocks
    return {d: b for d, b in ul.leaf_bytes_last.items() if d in sh.leaf_table_bytes}


def classic_calls(fmt: PageTable, iova: int, size: int) -> int:
    """ops->unmap_pages calls one __iommu_unmap over fully mapped [iova, iova+size) makes."""
    if is_iommupt(fmt):
        return 1
    bitmap = fmt.pgsize_bitmap
    cap = caps_unmap_at_table_end(fmt)
    calls = 0
    while size:
        pgsize, count = iommu_pgsize(bitmap, iova, iova, size)
        if cap:
            li, n = fmt.leaf_placement(pgsize)
            lvl = fmt.levels[li]
            count = min(count, (lvl.entries - fmt.index(iova, lvl)) // n)
        calls += 1
        iova += pgsize * count
        size -= pgsize * count
    return calls


# ---------------------------------------------------------------------------------------------
# VFIO


HOLE_LIST_MAX = 4096


def edge_leaf(walker: Any, at: int, lo: int, hi: int) -> tuple[int, int, int] | None:
    """(start, size, walk depth) of the leaf holding `at` when it sticks out of [lo, hi)."""
    t = _translate(walker, at)
    if not t.mapped:
        return None
    start = at - (at & (t.size - 1))
    if start < lo or start + t.size > hi:
        return start, t.size, t.entries_read
    return None


def _first_extent(walker: Any, lo: int, hi: int, page: int) -> tuple[Counts, Counts]:
    """A unit whose first leaf starts before it: the fast unmap from inside that leaf is
    refused (0), vfio_sync_unpin syncs, the slow unmap is refused too, WARN, break. Only the
    first extent is ever translated."""
    leg, la = Counts(), Counts()
    u64 = np.uint64
    for ch in UnitLeaves(walker, lo, hi, page, allow_cut=True):
        v, p, s, d = ch.iova, ch.phys, ch.size, ch.depth
        e = v + s
        brk = np.flatnonzero((v[1:] != e[:-1]) | (p[1:] != p[:-1] + s[:-1])) if len(v) > 1 else np.zeros(0, int)
        j = int(brk[0]) if len(brk) else len(v) - 1
        cp = (clipped(v[:j + 1], s[:j + 1], lo, hi) // u64(page)).astype(np.int64)
        leg.translations += int(cp.sum())
        leg.entries_read += int((cp * d[:j + 1]).sum())
        la.translations += j + 1
        la.entries_read += int(d[:j + 1].sum())
        q = int(v[j]) + int(s[j])
        if len(brk) or q >= hi:
            if q < hi:  # the failing probe
                dep = int(d[j + 1]) if int(v[j + 1]) == q else _probe_depth(walker, q)
                for c in (leg, la):
                    c.translations += 1
                    c.entries_read += dep
            break
        nxt = next(iter(leaf_chunks(walker, q, hi)), None)
        if nxt is None or int(nxt.iova[0]) != q or int(nxt.phys[0]) != int(p[j]) + int(s[j]):
            dep = _probe_depth(walker, q)
            for c in (leg, la):
                c.translations += 1
                c.entries_read += dep
            break
        # the extent runs on into the next chunk: continue from there
        lo = q
    for c in (leg, la):
        c.unmaps, c.syncs, c.driver_unmaps, c.warns = 2, 2, 2, 3
    return leg, la


def vfio_unit(walker: Any, lo: int, hi: int, page: int, holes_out: list[tuple[int, int]] | None = None,
              problems: list[tuple[int, str]] | None = None) -> tuple[Counts, Counts]:
    fmt = walker.fmt
    check_runnable(fmt, page)
    cut_start = edge_leaf(walker, lo, lo, hi)
    cut_end = edge_leaf(walker, hi - 1, lo, hi)
    if (cut_start or cut_end) and is_iommupt(fmt):
        raise NotRunnable("an iommupt unmap_range over a leaf cut by the unit's edge")
    if cut_start:
        if problems is not None:
            problems.append((lo, f"legacy leaves {cut_start[1]:#x} mapped at {cut_start[0]:#x} in the range"))
        return _first_extent(walker, lo, hi, page)
    sh = table_shape(walker, lo, hi)
    ul = UnitLeaves(walker, lo, hi, page, allow_cut=True)
    n_pages = (hi - lo) // page
    E = probes = 0
    mapped = 0
    leg_ent = la_ent = la_tr = probe_ent = 0
    drv = 0
    cur_start: int | None = None  # IOVA where the extent being built started
    cur_single = True
    prev_end = prev_pend = None
    u64 = np.uint64

    def close(start: int, end: int, single: bool) -> int:
        if single:
            return 1
        return classic_calls(fmt, start, end - start)

    gaps: list[tuple[int, int]] = holes_out if holes_out is not None else []
    for ch in ul:
        ul.note_last_level(ch)
        v, p, s, d = ch.iova, ch.phys, ch.size, ch.depth
        e = v + s
        if len(gaps) < HOLE_LIST_MAX:
            first_gap = [(prev_end if prev_end is not None else lo, int(v[0]))]
            inner: list[int] = np.flatnonzero(v[1:] != e[:-1]).tolist() if len(v) > 1 else []
            for a, b in first_gap + [(int(e[j]), int(v[j + 1])) for j in inner[:HOLE_LIST_MAX]]:
                if a < b:
                    gaps.append((a, b))
        cs = clipped(v, s, lo, hi)  # only the last leaf can stick out (a cut start returned above)
        mapped += int(cs.sum(dtype=u64))
        leg_ent += int(((cs // u64(page)).astype(np.int64) * d).sum())
        la_ent += int(d.sum())
        la_tr += len(v)
        # does the first leaf continue the previous chunk's extent?
        if prev_end is not None:
            if not (prev_end == int(v[0]) and prev_pend == int(p[0])):
                E += 1
                drv += close(cur_start, prev_end, cur_single)  # type: ignore[arg-type]
                probes += 1
                probe_ent += int(d[0]) if int(v[0]) == prev_end else _probe_depth(walker, prev_end)
                cur_start, cur_single = int(v[0]), True
            else:
                cur_single = False
        else:
            cur_start, cur_single = int(v[0]), True
        if len(v) > 1:
            brk = (v[1:] != e[:-1]) | (p[1:] != p[:-1] + s[:-1])
            idx = np.flatnonzero(brk)
            if len(idx):
                E += len(idx)
                probes += len(idx)
                adj = v[idx + 1] == e[idx]
                probe_ent += int(d[idx + 1][adj].sum())
                for q in e[idx][~adj].tolist():
                    probe_ent += _probe_depth(walker, int(q))
                # driver calls: extents made of one leaf are one unmap_pages each
                starts = np.concatenate(([0], idx + 1))
                ends = np.concatenate((idx, [len(v) - 1]))
                single = starts == ends
                # the first extent of the chunk may have begun in an earlier chunk
                first_single = cur_single and bool(single[0])
                drv += close(cur_start, int(e[idx[0]]), first_single)  # type: ignore[arg-type]
                mid_s, mid_e, mid_single = starts[1:-1], ends[1:-1], single[1:-1]
                drv += int(mid_single.sum())
                if not mid_single.all() and len(mid_s):
                    for a, b in zip(mid_s[~mid_single].tolist(), mid_e[~mid_single].tolist()):
                        drv += classic_calls(fmt, int(v[a]), int(e[b]) - int(v[a]))
                cur_start, cur_single = int(v[starts[-1]]), bool(single[-1])
            else:
                cur_single = False
        prev_end, prev_pend = int(v[-1]) + int(s[-1]), int(p[-1]) + int(s[-1])
    if prev_end is not None:
        E += 1
        if not cut_end:
            drv += close(cur_start, prev_end, cur_single)  # type: ignore[arg-type]
        if prev_end < hi:
            probes += 1
            probe_ent += _probe_depth(walker, prev_end)
    if (prev_end if prev_end is not None else lo) < hi and len(gaps) < HOLE_LIST_MAX:
        gaps.append((prev_end if prev_end is not None else lo, hi))
    hole_pages, hole_ent = hole_entries(sh, _leaf_bytes_in_leaf_tables(sh, ul), page)
    mapped_pages = mapped // page
    holes = n_pages - mapped_pages  # includes pages outside every window (walks read nothing)
    if hole_pages > holes:
        raise NotRunnable("table shape and leaves disagree")
    syncs = -(-E // VFIO_IOMMU_TLB_SYNC_MAX)
    leg = Counts(n_pages + probes, leg_ent + hole_ent + probe_ent, E, syncs, E, mapped_pages,
                 drv, syncs, holes, holes)
    la = Counts(la_tr + holes + probes, la_ent + hole_ent + probe_ent, E, syncs, E, mapped_pages,
                drv, syncs, holes, holes)
    if cut_end:
        # the last extent [x, hi) ends inside the leaf [L, L+S): the fast unmap stops short at L
        # (the partial large IOPTE is refused), the loop comes back to L, translates [L, hi)
        # again, and both the fast and the slow unmap of it are refused: sync, WARN, break
        big, size, dep = cut_end
        x = cur_start if cur_start is not None else lo
        tail = (hi - big) // page
        ok_extents = E if big > x else E - 1
        for c, extra_tr, extra_ent in ((leg, tail, tail * dep), (la, 1, dep)):
            if big > x:
                c.translations += extra_tr
                c.entries_read += extra_ent
                c.unmaps = E + 2
                c.driver_unmaps += classic_calls(fmt, x, big - x) + 3
                c.warns += 4
            else:
                c.unmaps = E + 1
                c.driver_unmaps += 2
                c.warns += 3
            c.syncs = ok_extents // VFIO_IOMMU_TLB_SYNC_MAX + 2
            c.driver_syncs = ok_extents // VFIO_IOMMU_TLB_SYNC_MAX + (1 if ok_extents % VFIO_IOMMU_TLB_SYNC_MAX else 0)
            c.unpin_calls = ok_extents
            c.unpinned_pages = mapped_pages - tail
        if problems is not None:
            problems.append((big, f"legacy leaves {size:#x} mapped at {big:#x} in the range"))
    return leg, la


# ---------------------------------------------------------------------------------------------
# IOMMUFD


class AreaAcc:
    """Counts of one iopt_area being fed its leaves in order (no holes inside)."""

    def __init__(self, fmt: PageTable, page: int, start: int, first_index: int = 0) -> None:
        self.fmt, self.page, self.start, self.first_index = fmt, page, start, first_index
        self.bytes = 0
        self.runs = 0
        self.run_len = 0  # pages of the current run (for the U32_MAX split)
        self.leaves = 0
        self.pages_depth = 0
        self.leaf_depth = 0
        self.run_first: list[tuple[int, int, int]] = []  # (rank, iova, depth) of every 5461st run
        self.end = start
        self.pend: int | None = None

    def feed(self, v: np.ndarray, p: np.ndarray, s: np.ndarray, d: np.ndarray, cs: np.ndarray) -> None:
        """Leaves (iova, phys, size, depth) and the bytes of each inside the area (`cs`)."""
        page = self.page
        u64 = np.uint64
        new = np.empty(len(v), dtype=bool)
        new[0] = self.pend is None or int(p[0]) != self.pend
        if len(v) > 1:
            new[1:] = p[1:] != p[:-1] + s[:-1]
        starts = np.flatnonzero(new)
        rank = self.runs + np.arange(len(starts))
        cap = 65536 // 12
        sel = (rank > 0) & (rank % cap == 0)
        for r, j in zip(rank[sel].tolist(), starts[sel].tolist()):
            self.run_first.append((int(r), int(v[j]), int(d[j])))
        self.runs += len(starts)
        npages = (cs >> u64(page.bit_length() - 1)).astype(np.int64)  # PAGE_SIZE is a power of two
        # longest run in pages, for MAX_NPFNS
        if len(starts):
            seg = npages if len(starts) == len(v) else np.add.reduceat(npages, starts)
            if int(seg.max()) + (self.run_len if not new[0] else 0) > MAX_NPFNS:
                raise NotRunnable("a pfn run longer than U32_MAX pages")
            self.run_len = int(seg[-1])
        else:
            self.run_len += int(npages.sum())
        self.bytes += int(cs.sum(dtype=u64))
        self.leaves += len(v)
        self.pages_depth += int((npages * d).sum())
        self.leaf_depth += int(d.sum())
        self.end = int(v[-1]) + int(cs[-1]) if int(v[-1]) >= self.start else self.start + int(cs[-1])
        self.pend = int(p[-1]) + int(s[-1])

    def counts(self, cut_start: bool = False, cut_end: int | None = None) -> tuple[Counts, Counts, list[int]]:
        """(legacy, length-aware, batch start IOVAs after the first). `cut_start`: the area
        starts inside a leaf, so its first batch's iommu_unmap is refused at once (WARN in
        iommu_unmap_nofail); `cut_end`: it ends inside the leaf starting there, so the last
        batch's unmap stops short at it (WARN)."""
        n = self.bytes // self.page
        cap = batch_capacity(self.first_index + n - 1)
        runs = self.runs
        batches = -(-runs // cap) if runs else 0
        extra = [(r, iova, dep) for r, iova, dep in self.run_first if r % cap == 0 and r < runs]
        if cap != 65536 // 12:
            extra = []  # a smaller capacity: one batch holds every run (runs <= pages)
        extra_ent = sum(dep for _, _, dep in extra)
        cuts = [iova for _, iova, _ in extra]
        bounds = [self.start] + cuts + [self.end]
        drv = warns = 0
        syncs_driver = batches  # each batch's iommu_unmap syncs; the driver only if it unmapped
        spans = list(zip(bounds, bounds[1:]))
        for k, (a, b) in enumerate(spans):
            # a refused unmap_pages WARNs ("partial large IOPTE"), then iommu_unmap_nofail does
            if k == 0 and cut_start:
                drv += 1
                warns += 2
                syncs_driver -= 1
            elif k == len(spans) - 1 and cut_end is not None:
                drv += (classic_calls(self.fmt, a, cut_end - a) if cut_end > a else 0) + 1
                warns += 2
                syncs_driver -= 0 if cut_end > a else 1
            else:
                drv += classic_calls(self.fmt, a, b - a)
        leg = Counts(n + batches - 1, self.pages_depth + extra_ent, batches, batches, runs, n, drv, syncs_driver,
                     warns)
        la = Counts(self.leaves + batches - 1, self.leaf_depth + extra_ent, batches, batches, runs, n, drv,
                    syncs_driver, warns)
        return leg, la, cuts


def iommufd_areas(walker: Any, lo: int, hi: int, page: int, implicit: bool, first_index: int = 0,
                  problems: list[tuple[int, str]] | None = None) -> tuple[Counts, Counts, list[tuple[int, int]]]:
    """Tear down the areas of [lo, hi): `implicit` -- every IOVA-contiguous mapped stretch is
    an area (IOAS_UNMAP over a range: the gaps between areas are never visited); else
    [lo, hi) is one area, which must have no hole."""
    fmt = walker.fmt
    check_runnable(fmt, page)
    cut_start = edge_leaf(walker, lo, lo, hi)
    cut_end = edge_leaf(walker, hi - 1, lo, hi)
    if (cut_start or cut_end) and is_iommupt(fmt):
        raise NotRunnable("an iommupt unmap_range over a leaf cut by the unit's edge")
    if problems is not None:
        for cut, at in ((cut_start, lo), (cut_end, max(cut_end[0], lo) if cut_end else 0)):
            if cut:
                problems.append((at, f"legacy leaves {cut[1]:#x} mapped at {cut[0]:#x} in the range"))
    ul = UnitLeaves(walker, lo, hi, page, allow_cut=True)
    leg_t, la_t = Counts(), Counts()
    areas: list[tuple[int, int]] = []
    acc: AreaAcc | None = None

    def finish() -> None:
        nonlocal acc
        if acc is not None:
            a, b, _ = acc.counts(bool(cut_start) and acc.start == lo,
                                 cut_end[0] if cut_end and acc.end == hi else None)
            leg_t.add(a)
            la_t.add(b)
            areas.append((acc.start, acc.end))
            acc = None

    for ch in ul:
        v, p, s, d = ch.iova, ch.phys, ch.size, ch.depth
        e = v + s
        cs = clipped(v, s, lo, hi)
        gaps = np.flatnonzero(v[1:] != e[:-1]) + 1 if len(v) > 1 else np.zeros(0, dtype=np.int64)
        cuts = [0] + gaps.tolist() + [len(v)]
        for a, b in zip(cuts, cuts[1:]):
            if a == b:
                continue
            if acc is not None and acc.end != int(v[a]):
                if not implicit:
                    raise NotRunnable(f"the area has a hole at {acc.end:#x}")
                finish()
            if acc is None:
                first = max(int(v[a]), lo)
                if not implicit and first != lo:
                    raise NotRunnable(f"the area has a hole at {lo:#x}")
                acc = AreaAcc(fmt, page, first, first_index)
            acc.feed(v[a:b], p[a:b], s[a:b], d[a:b], cs[a:b])
    if acc is not None and not implicit and acc.end != hi:
        raise NotRunnable(f"the area has a hole at {acc.end:#x}")
    if acc is None and not implicit:
        raise NotRunnable("the area is not mapped")
    finish()
    return leg_t, la_t, areas


# ---------------------------------------------------------------------------------------------
# GPU and selftest


def gpu_unit(walker: Any, lo: int, hi: int, page: int) -> tuple[Counts, Counts]:
    """panfrost (non-heap) / panthor over a fully mapped unit of leaves no larger than 2M."""
    fmt = walker.fmt
    check_runnable(fmt, page)
    ul = UnitLeaves(walker, lo, hi, page)
    end = lo
    for ch in ul:
        v, s = ch.iova, ch.size
        if int(v[0]) != end or (len(v) > 1 and (v[1:] != v[:-1] + s[:-1]).any()):
            raise NotRunnable("the unit has a hole")
        if int(s.max()) > SZ_2M:
            raise NotRunnable("a leaf larger than 2M (get_pgsize never unmaps one)")
        end = int(v[-1]) + int(s[-1])
    if end != hi:
        raise NotRunnable("the unit has a hole")
    steps = gpu_steps(lo, hi - lo)
    c = Counts(0, 0, steps, 1, 0, 0, steps, 1)
    return c, Counts(**c.as_dict())


def selftest_unit(walker: Any, lo: int, hi: int) -> tuple[Counts, Counts, int | None]:
    """md_check_pa over [lo, hi): (legacy, length-aware, IOVA of the failing step or None)."""
    fmt = walker.fmt
    bitmap = fmt.pgsize_bitmap
    page = bitmap & -bitmap
    leg, la = Counts(), Counts()
    pos = lo
    u64 = np.uint64
    for ch in leaf_chunks(walker, lo, hi):
        check_legacy(walker, ch, page)
        v, s, d = ch.iova, ch.size, ch.depth
        e = v + s
        # stop at the first gap
        ok = np.empty(len(v), dtype=bool)
        ok[0] = int(v[0]) <= pos
        if len(v) > 1:
            ok[1:] = v[1:] == e[:-1]
        bad = np.flatnonzero(~ok)
        k = int(bad[0]) if len(bad) else len(v)
        if k:
            pages = (clipped(v[:k], s[:k], pos, hi) // u64(page)).astype(np.int64)
            leg.translations += int(pages.sum())
            leg.entries_read += int((pages * d[:k]).sum())
            la.translations += k
            la.entries_read += int(d[:k].sum())
            pos = min(int(v[k - 1]) + int(s[k - 1]), hi)
        if k < len(v):
            break
    if pos < hi:
        dep = _probe_depth(walker, pos)
        for c in (leg, la):
            c.translations += 1
            c.entries_read += dep
            c.hole_pages += 1
        return leg, la, pos
    return leg, la, None

