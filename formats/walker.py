"""The one walker every command shares: translate (with optional step record for explain),
range iteration by tables (numpy per table, holes skipped at the highest level), and the
kernel-like unmap used by the caller simulations.

Walks are bounded by construction: a translation reads at most one entry per level, and a range
walk visits each table at most once (a table reached twice is a WalkError, which also stops
cycles), so no table content can make a walk loop or grow without bound.
"""

from __future__ import annotations

from collections.abc import Iterator

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
        seen: set[int] = set()
        for top in self.tops:
            lo, hi = max(start, top.start), min(end, top.end)
            if lo < hi:
                yield from self._table(top.table, top.level_index, top.base, lo, hi, seen)

    def _table(self, table: int, li: int, base: int, lo: int, hi: int, seen: set[int]) -> Iterator[LeafBatch]:
        fmt = self.fmt
        lvl = fmt.levels[li]
        if table in seen:
            raise WalkError(table, f"table at {table:#x} is reached twice (a cycle or a shared table)")
        seen.add(table)
        i0 = (lo - base) >> lvl.shift
        i1 = min(((hi - 1 - base) >> lvl.shift) + 1, lvl.entries)
        try:
            ents = self.mem.array(table, lvl.entries, fmt.dtype)
        except MemoryFault as e:
            raise WalkError(table, f"level {lvl.num} table at {table:#x} is outside memory") from e
        ents = ents[i0:i1]
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
            yield from self._leaf_batch(raw, nz + i0, lvl, base, i0)
            return
        # interleave: runs of leaves between tables, in index order
        tpos = np.flatnonzero(is_table)
        prev = 0
        for p in tpos:
            p = int(p)
            if p > prev:
                yield from self._leaf_batch(raw[prev:p], nz[prev:p] + i0, lvl, base, i0)
            idx = int(nz[p]) + i0
            cbase = (base + (idx << lvl.shift)) & U64
            child_lo, child_hi = max(lo, cbase), min(hi, cbase + lvl.block)
            yield from self._table(fmt.next_table(int(raw[p]), lvl), li + 1, cbase, child_lo, child_hi, seen)
            prev = p + 1
        if prev < len(nz):
            yield from self._leaf_batch(raw[prev:], nz[prev:] + i0, lvl, base, i0)

    def _leaf_batch(self, raw: np.ndarray, idx: np.ndarray, lvl: Level, base: int, i0: int) -> Iterator[LeafBatch]:
        fmt = self.fmt
        size = fmt.leaf_size_vec(raw, lvl).astype(np.uint64)
        phys = fmt.leaf_phys_vec(raw, lvl).astype(np.uint64)
        span = (size >> np.uint64(lvl.shift)).astype(np.int64)
        idx = idx.astype(np.int64)
        if (span > 1).any():
            # replicated leaves: report each once, from its first slot (or the range's first slot)
            first = idx - (idx % np.maximum(span, 1))
            keep = (idx == first) | (idx == i0)
            if len(idx):
                # a continuation at i0 whose group start is not in range: keep; drop later copies
                keep &= ~np.concatenate(([False], first[1:] == first[:-1]))
            raw, phys, size, idx = raw[keep], phys[keep], size[keep], first[keep]
        iova = np.uint64(base) + (idx.astype(np.uint64) << np.uint64(lvl.shift))
        yield LeafBatch(iova.astype(np.uint64), phys, size, fmt.leaf_prot_vec(raw, lvl).astype(np.int64),
                        raw.astype(np.uint64), lvl.num)

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
                return size
            if kind != TABLE:
                return 0
            table = fmt.next_table(raw, lvl)
        return 0
