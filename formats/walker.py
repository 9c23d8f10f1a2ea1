"""The one walker every command shares: translate (with optional step record for explain),
range iteration by tables (numpy per table, holes skipped at the highest level), and the
kernel-like unmap used by the caller simulations.

Walks are bounded by construction: a translation reads at most one entry per level, and a range
walk visits each table at most once (a table reached twice is a WalkError, which also stops
cycles), so no table content can make a walk loop or grow without bound. A leaf size the format
decodes must be a power of two within its table, so a hostile descriptor cannot inflate a walk.

`walk_tables` is the one range traversal: `leaves()` takes its leaf batches, `visit_tables()`
(iommuctl check) its TableVisit / TableFault events, with faults reported instead of raised.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from formats.lazy import np
from iommuctl.memory import MemoryFault, PhysMem

from .base import (
    INVALID,
    LEAF,
    TABLE,
    U64,
    LeafBatch,
    Level,
    PageTable,
    Step,
    TopTable,
    Translation,
    WalkError,
)


def leaf_size_ok(size: int, lvl: Level) -> bool:
    """A leaf is a power of two no larger than the table holding it (a replicated or contiguous
    leaf spans several entries of one table): what a hostile descriptor cannot talk us out of."""
    try:
        n = int(size)
    except (TypeError, ValueError, OverflowError):
        return False
    return 0 < n <= lvl.span and n & (n - 1) == 0


def bad_leaf_sizes(size: np.ndarray, lvl: Level) -> np.ndarray | None:
    """leaf_size_ok over a uint64 array: None when every size is fine (the usual case, two
    reductions), else True where the size is absurd."""
    if not len(size):
        return None
    lo, hi = int(size.min()), int(size.max())
    if lo == hi and leaf_size_ok(lo, lvl):
        return None
    bad = (size == 0) | ((size & (size - np.uint64(1))) != 0) | (size > np.uint64(min(lvl.span, U64)))
    return bad if bad.any() else None


@dataclass
class TableVisit:
    """A table a range walk entered: `entries` is the whole table (a view over the image),
    entries [i0, i1) are the ones inside the range; `parent` is (entry address, level index,
    index, raw) of the descriptor that points here, None for a root."""

    table: int
    level_index: int
    level: Level
    base: int
    i0: int
    i1: int
    entries: np.ndarray
    parent: tuple[int, int, int, int] | None


@dataclass
class TableFault:
    """A table the walk could not enter: "outside-memory", "cycle" (it is the table holding the
    pointer or one of its ancestors) or "shared" (already reached from another parent)."""

    table: int
    level_index: int
    base: int
    parent: tuple[int, int, int, int] | None
    reason: str


@dataclass
class _WalkState:
    leaves: bool
    tables: bool
    strict: bool
    seen: set[int]
    path: list[int] = field(default_factory=list)


class Walker:
    """A format bound to its memory and roots."""

    def __init__(self, fmt: PageTable, mem: PhysMem, roots: list[int]) -> None:
        self.fmt = fmt
        self.mem = mem
        self.roots = roots
        self.tops: list[TopTable] = fmt.top_tables(roots) if fmt.has_tables and roots else []
        if fmt.has_tables and roots:
            fmt.bind(mem, roots)
        self.entries_read = 0  # running count over every walk (unmap-sim reads it)

    # -- single translation -----------------------------------------------------------------
    def top_for(self, iova: int) -> TopTable | None:
        for t in self.tops:
            if t.start <= iova < t.end:
                return t
        return None

    def read_entry(self, addr: int) -> int:
        try:
            return self.mem.read_uint(addr, self.fmt.entry_size, self.fmt.byteorder)
        except MemoryFault as e:
            raise WalkError(addr, f"table entry at {addr:#x} is outside memory") from e

    def translate(self, iova: int, steps: list[Step] | None = None) -> Translation:
        fmt = self.fmt
        top = self.top_for(iova)
        if top is None:
            return Translation(iova)
        table = top.table
        levels = fmt.levels
        read = 0
        for li in range(top.level_index, len(levels)):
            lvl = levels[li]
            idx = fmt.index(iova, lvl)
            entry = table + idx * fmt.entry_size
            raw = self.read_entry(entry)
            read += 1
            kind = fmt.classify(raw, lvl)
            if steps is not None:
                steps.append(Step(lvl.num, table, idx, entry, raw, fmt.kind_name(raw, lvl, kind),
                                  fmt.fields(raw, lvl, kind), fmt.note(raw, lvl, kind)))
            if kind == LEAF:
                size = fmt.leaf_size(raw, lvl)
                if not leaf_size_ok(size, lvl):
                    raise WalkError(entry, f"level {lvl.num} entry at {entry:#x} ({raw:#x}) decodes to a leaf "
                                           f"of {size:#x} bytes, not a power of two within its table")
                phys = fmt.leaf_phys(raw, lvl) + (iova & (size - 1))
                self.entries_read += read
                return Translation(iova, phys, size, lvl.num, fmt.leaf_prot(raw, lvl), raw, entry, read)
            if kind != TABLE or li == len(levels) - 1:
                break
            table = fmt.next_table(raw, lvl)
        self.entries_read += read
        return Translation(iova, entries_read=read)

    # -- range iteration --------------------------------------------------------------------
    def leaves(self, start: int, end: int) -> Iterator[LeafBatch]:
        """Leaf batches overlapping [start, end) in IOVA order. A leaf that straddles `start`
        is yielded whole (its iova may be below start)."""
        return self.walk_tables(start, end)  # type: ignore[return-value]

    def visit_tables(self, start: int, end: int, leaves: bool = False
                     ) -> Iterator[TableVisit | TableFault | LeafBatch]:
        """The same range walk, for analyses (check): a TableVisit as each table is entered
        (pre-order, before its leaves and children), and a TableFault instead of a WalkError
        for a table outside memory or reached twice (that table is skipped, the walk goes on).
        LeafBatches are included only with `leaves`."""
        return self.walk_tables(start, end, leaves=leaves, tables=True, strict=False)

    def walk_tables(self, start: int, end: int, leaves: bool = True, tables: bool = False,
                    strict: bool = True) -> Iterator[TableVisit | TableFault | LeafBatch]:
        """The one range traversal behind leaves() and visit_tables(). Bounded: every table is
        entered at most once (root tables are known up front, so a pointer back at a root is
        caught too) and the depth is the number of levels."""
        st = _WalkState(leaves, tables, strict, {t.table for t in self.tops})
        for top in self.tops:
            lo, hi = max(start, top.start), min(end, top.end)
            if lo < hi:
                yield from self._table(top.table, top.level_index, top.base, lo, hi, st, None)

    def _table(self, table: int, li: int, base: int, lo: int, hi: int, st: _WalkState,
               parent: tuple[int, int, int, int] | None) -> Iterator[TableVisit | TableFault | LeafBatch]:
        fmt = self.fmt
        lvl = fmt.levels[li]
        if parent is not None:  # roots may serve several windows (sign-extended halves)
            if table in st.seen:
                cycle = table in st.path
                if st.strict:
                    raise WalkError(table, f"table at {table:#x} is reached twice (a cycle or a shared table)")
                yield TableFault(table, li, base, parent, "cycle" if cycle else "shared")
                return
            st.seen.add(table)
        i0 = (lo - base) >> lvl.shift
        i1 = min(((hi - 1 - base) >> lvl.shift) + 1, lvl.entries)
        try:
            full = self.mem.array(table, lvl.entries, fmt.dtype)
        except MemoryFault as e:
            if st.strict:
                raise WalkError(table, f"level {lvl.num} table at {table:#x} is outside memory") from e
            yield TableFault(table, li, base, parent, "outside-memory")
            return
        if st.tables:
            yield TableVisit(table, li, lvl, base, i0, i1, full, parent)
        ents = full[i0:i1]
        nz = np.flatnonzero(ents) if fmt.classify(0, lvl) == INVALID else np.arange(len(ents))
        if len(nz) == 0:
            return
        raw = ents[nz]
        kinds = fmt.classify_vec(raw, lvl)
        valid = kinds != INVALID
        if not valid.all():
            nz, raw, kinds = nz[valid], raw[valid], kinds[valid]
        if len(nz) == 0:
            return
        is_table = kinds == TABLE
        if li == len(fmt.levels) - 1 and is_table.any():
            # a table pointer at the last level is not a translation
            keep = ~is_table
            nz, raw, kinds, is_table = nz[keep], raw[keep], kinds[keep], is_table[keep]
        if not is_table.any():
            if st.leaves:
                yield from self._leaf_batch(raw, nz + i0, lvl, base, i0, table)
            return
        # interleave: runs of leaves between tables, in index order
        tpos = np.flatnonzero(is_table)
        fuse = self._fusable(li, st, tpos)
        prev = 0
        st.path.append(table)
        for p in tpos.tolist():
            if p < prev:  # already walked by a fused run
                continue
            if p > prev and st.leaves:
                yield from self._leaf_batch(raw[prev:p], nz[prev:p] + i0, lvl, base, i0, table)
            if fuse:
                # consecutive table entries whose leaf tables lie wholly in range: one batch
                q = p
                while q + 1 < len(nz) and is_table[q + 1] and nz[q + 1] == nz[q] + 1:
                    q += 1
                first, last = int(nz[p]) + i0, int(nz[q]) + i0
                if q > p and base + (first << lvl.shift) >= lo and base + ((last + 1) << lvl.shift) <= hi:
                    batch = self._fused_leaves(raw[p:q + 1], base + (first << lvl.shift), lvl, li + 1, st)
                    if batch is not None:
                        if len(batch):
                            yield batch
                        prev = q + 1
                        continue
            idx = int(nz[p]) + i0
            cbase = (base + (idx << lvl.shift)) & U64
            child_lo, child_hi = max(lo, cbase), min(hi, cbase + lvl.block)
            praw = int(raw[p])
            yield from self._table(fmt.next_table(praw, lvl), li + 1, cbase, child_lo, child_hi, st,
                                   (table + idx * fmt.entry_size, li, idx, praw))
            prev = p + 1
        st.path.pop()
        if prev < len(nz) and st.leaves:
            yield from self._leaf_batch(raw[prev:], nz[prev:] + i0, lvl, base, i0, table)

    def _fusable(self, li: int, st: _WalkState, tpos: np.ndarray) -> bool:
        """Children are leaf tables and nobody wants per-table visits: fuse runs of them."""
        return (st.leaves and not st.tables and st.strict and len(tpos) > 1
                and li + 2 == len(self.fmt.levels))

    def _fused_leaves(self, praw: np.ndarray, cbase: int, plvl: Level, li: int, st: _WalkState) -> LeafBatch | None:
        """The leaves of len(praw) consecutive last-level tables, read as one 2-D gather.
        None when the tables cannot be read that way (the caller walks them one by one, which
        also reports what is wrong with them)."""
        fmt = self.fmt
        lvl = fmt.levels[li]
        children = fmt.next_table_vec(praw, plvl).astype(np.uint64, copy=False)
        kids = children.tolist()
        if len(set(kids)) != len(kids) or not st.seen.isdisjoint(kids):
            return None
        rows = self.mem.table_rows(children, lvl.entries, fmt.dtype)
        if rows is None:
            return None
        raw = rows.reshape(-1)
        nz: np.ndarray | None = None  # None: every slot holds a leaf (dense tables, the usual case)
        if fmt.classify(0, lvl) == INVALID and np.count_nonzero(raw) != len(raw):
            nz = np.flatnonzero(raw)
            raw = raw[nz]
        leaf = fmt.classify_vec(raw, lvl) == LEAF
        if not leaf.all():
            nz = np.flatnonzero(leaf) if nz is None else nz[leaf]
            raw = raw[leaf]
        if fmt.leaf_size_is_block:
            size = np.broadcast_to(np.uint64(lvl.block), (len(raw),))
        else:
            size = fmt.leaf_size_vec(raw, lvl).astype(np.uint64, copy=False)
            if bad_leaf_sizes(size, lvl) is not None:
                return None
            span = (size >> np.uint64(lvl.shift)).astype(np.int64)
            if len(span) and int(span.max()) > 1:
                if nz is None:
                    nz = np.arange(len(raw))
                first = nz - nz % np.maximum(span, 1)
                keep = np.concatenate(([True], first[1:] != first[:-1]))
                raw, size, nz = raw[keep], size[keep], first[keep]
        phys = fmt.leaf_phys_vec(raw, lvl).astype(np.uint64, copy=False)
        # every table covers plvl.block, so flat index k is IOVA cbase + k * lvl.block
        iova = np.arange(len(raw), dtype=np.uint64) if nz is None else nz.astype(np.uint64)
        iova <<= np.uint64(lvl.shift)
        iova += np.uint64(cbase)
        st.seen.update(kids)  # only now: on None the caller walks (and marks) them one by one
        return LeafBatch(iova, phys, size, self._prot(raw, lvl), raw.astype(np.uint64, copy=False), lvl.num)

    def _prot(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        """leaf_prot over a batch: computed once when every leaf has the same attribute bits."""
        fmt = self.fmt
        mask = fmt.prot_key_mask
        if mask is not None and len(raw):
            key = raw & np.uint64(mask)
            if int(key.min()) == int(key.max()):  # a read-only view: consumers only read batches
                return np.broadcast_to(np.int64(fmt.leaf_prot(int(raw[0]), lvl)), (len(raw),))
        return fmt.leaf_prot_vec(raw, lvl).astype(np.int64, copy=False)

    def _leaf_batch(self, raw: np.ndarray, idx: np.ndarray, lvl: Level, base: int, i0: int,
                    table: int) -> Iterator[LeafBatch]:
        fmt = self.fmt
        idx = idx.astype(np.int64)
        if fmt.leaf_size_is_block:
            size = np.broadcast_to(np.uint64(lvl.block), (len(raw),))
            span = None
        else:
            size = fmt.leaf_size_vec(raw, lvl).astype(np.uint64)
            bad = bad_leaf_sizes(size, lvl)
            if bad is not None:
                k = int(np.flatnonzero(bad)[0])
                addr = table + int(idx[k]) * fmt.entry_size
                raise WalkError(addr, f"level {lvl.num} entry at {addr:#x} ({int(raw[k]):#x}) decodes to a leaf "
                                      f"of {int(size[k]):#x} bytes, not a power of two within its table")
            span = (size >> np.uint64(lvl.shift)).astype(np.int64)
        phys = fmt.leaf_phys_vec(raw, lvl).astype(np.uint64)
        if span is not None and (span > 1).any():
            # replicated leaves: report each once, from its first slot (or the range's first slot)
            first = idx - (idx % np.maximum(span, 1))
            keep = (idx == first) | (idx == i0)
            if len(idx):
                # a continuation at i0 whose group start is not in range: keep; drop later copies
                keep &= ~np.concatenate(([False], first[1:] == first[:-1]))
            raw, phys, size, idx = raw[keep], phys[keep], size[keep], first[keep]
        iova = np.uint64(base) + (idx.astype(np.uint64) << np.uint64(lvl.shift))
        yield LeafBatch(iova.astype(np.uint64, copy=False), phys, size, self._prot(raw, lvl),
                        raw.astype(np.uint64, copy=False), lvl.num)

    def iter_leaves(self, start: int, end: int) -> Iterator[tuple[int, int, int, int, int, int]]:
        """Plain tuples (iova, phys, size, level, prot, raw): for small ranges and tests."""
        for b in self.leaves(start, end):
            for i in range(len(b)):
                yield (int(b.iova[i]), int(b.phys[i]), int(b.size[i]), b.level, int(b.prot[i]), int(b.raw[i]))

    # -- unmap (kernel semantics, for the caller simulations) ----------------------------------
    def unmap_leaf(self, iova: int, pgsize: int) -> int:
        """Clear the leaf mapping `iova` if its size is `pgsize`; bytes unmapped (0 otherwise,
        as current kernels refuse to split a larger leaf)."""
        fmt = self.fmt
        top = self.top_for(iova)
        if top is None:
            return 0
        table = top.table
        parent: int | None = None  # the entry that points at `table`
        for li in range(top.level_index, len(fmt.levels)):
            lvl = fmt.levels[li]
            idx = fmt.index(iova, lvl)
            raw = self.read_entry(table + idx * fmt.entry_size)
            kind = fmt.classify(raw, lvl)
            if kind == LEAF:
                size = fmt.leaf_size(raw, lvl)
                if size != pgsize:
                    return 0
                n = size >> lvl.shift
                first = idx - idx % n
                for k in range(first, first + max(n, 1)):
                    addr = table + k * fmt.entry_size
                    self.mem.write_uint(addr, fmt.entry_size, fmt.invalidate(self.read_entry(addr), lvl),
                                        fmt.byteorder)
                if parent is not None and fmt.frees_empty_tables:
                    if not self.mem.array(table, lvl.entries, fmt.dtype).any():
                        self.mem.write_uint(parent, fmt.entry_size, 0, fmt.byteorder)
                return size
            if kind != TABLE:
                return 0
            parent = table + idx * fmt.entry_size
            table = fmt.next_table(raw, lvl)
        return 0
