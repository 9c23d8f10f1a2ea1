"""Build tables from mappings as the kernel would: `iommu_pgsize()` splits each mapping
(drivers/iommu/iommu.c), the format's map walks down allocating zeroed tables on demand and
writes leaf descriptors (several identical ones for a contiguous page size).

Tables come from an arena of physical memory owned by the builder; allocations are naturally
aligned to their size, like iommu_alloc_pages_node_sz().
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iommuctl.memory import PhysMem

from .base import INVALID, LEAF, TABLE, PageTable
from .lazy import np
from .walker import Walker

ARENA_CHUNK = 2 << 20
BULK_PAGES = 64  # contiguous pages of one size from which Builder.map fills leaf tables with numpy
BULK_ENCODE = 1 << 16  # pages encoded per encode_leaf_vec call on that path


def iommu_pgsize(pgsize_bitmap: int, iova: int, paddr: int, size: int) -> tuple[int, int]:
    """(pgsize, count) as iommu_pgsize() picks them: the largest supported size that fits the
    remaining length and the alignment of iova|paddr; count up to the next larger supported
    size's boundary when iova and paddr are congruent modulo it, else all that fit."""
    addr_merge = paddr | iova
    pgsizes = pgsize_bitmap & ((1 << size.bit_length()) - 1)  # sizes <= size
    if addr_merge:
        pgsizes &= (addr_merge & -addr_merge) * 2 - 1  # sizes <= alignment
    if not pgsizes:
        raise ValueError(f"no page size fits iova {iova:#x} phys {paddr:#x} size {size:#x}")
    pgsize = 1 << (pgsizes.bit_length() - 1)
    bigger = pgsize_bitmap & ~((pgsize << 1) - 1)
    count = size // pgsize
    if bigger:
        nxt = bigger & -bigger
        if (iova ^ paddr) & (nxt - 1) == 0:
            offset = nxt - (iova & (nxt - 1))
            if offset + nxt <= size:  # only when the remaining length reaches the larger size
                count = offset // pgsize
    return pgsize, count


@dataclass
class Arena:
    """A bump allocator of zeroed, naturally aligned table memory inside a PhysMem."""

    mem: PhysMem
    base: int
    next: int = 0
    chunk_end: int = 0
    allocations: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.next = self.chunk_end = self.base

    def alloc(self, size: int, align: int) -> int:
        align = max(align, 1)
        addr = -(-self.next // align) * align
        if addr + size > self.chunk_end:
            grow = max(ARENA_CHUNK, -(-(addr + size - self.chunk_end) // ARENA_CHUNK) * ARENA_CHUNK)
            self.mem.add_bytes(self.chunk_end, bytes(grow), origin="built tables")
            self.chunk_end += grow
        self.next = addr + size
        self.allocations.append((addr, size))
        return addr

    def image(self) -> bytes:
        """The arena's used bytes, from `base` on."""
        out = bytearray()
        pos = self.base
        while pos < self.next:  # chunk by chunk: each chunk is its own segment
            n = min(self.next, (pos - self.base) // ARENA_CHUNK * ARENA_CHUNK + self.base + ARENA_CHUNK) - pos
            seg_end = next(s.end for s in self.mem.segments if s.base <= pos < s.end)
            n = min(self.next, seg_end) - pos
            out += self.mem.read(pos, n)
            pos += n
        return bytes(out)


class Builder:
    """Maps pages into a format's tables held in `mem` (an Arena's or a copy of an image)."""

    def __init__(self, fmt: PageTable, arena: Arena, roots: list[int] | None = None) -> None:
        self.fmt = fmt
        self.arena = arena
        self.mem = arena.mem
        if roots is None:
            roots = [arena.alloc(size, align) for size, align in fmt.root_alloc()]
            fmt.init_tables(self.mem, roots, arena.alloc)
        self.roots = roots
        self.walker = Walker(fmt, self.mem, roots)

    def map(self, iova: int, phys: int, size: int, prot: int) -> list[tuple[int, int, int, int]]:
        """Map [iova, iova+size) to phys, split as iommu_map() splits; returns the chunks
        (iova, phys, pgsize, count) actually written."""
        fmt = self.fmt
        if size <= 0:
            raise ValueError("size must be positive")
        minpg = min(fmt.page_sizes)
        if (iova | phys | size) & (minpg - 1):
            raise ValueError(f"iova {iova:#x}, phys {phys:#x} and size {size:#x} must be "
                             f"aligned to the smallest page size {minpg:#x}")
        for s, e in fmt.windows:
            if s <= iova and iova + size <= e:
                break
        else:
            raise ValueError(f"iova range {iova:#x}+{size:#x} is outside the input address space")
        fmt.check_map(iova, phys, size, prot)
        chunks = []
        while size:
            pgsize, count = iommu_pgsize(fmt.pgsize_bitmap, iova, phys, size)
            self._grow(iova, size, pgsize)
            if count < BULK_PAGES or not self._map_bulk(iova, phys, pgsize, count, prot):
                for k in range(count):
                    self.map_page(iova + k * pgsize, phys + k * pgsize, pgsize, prot)
            chunks.append((iova, phys, pgsize, count))
            iova += pgsize * count
            phys += pgsize * count
            size -= pgsize * count
        return chunks

    def _map_bulk(self, iova: int, phys: int, pgsize: int, count: int, prot: int) -> bool:
        """`count` contiguous pages of one size, a leaf table at a time with numpy: the same
        descriptors map_page writes (n identical entries per page as leaf_placement says,
        encode_leaf_vec checked against encode_leaf),
        so 16 M pages of a misaligned 64G mapping cost table fills, not 16 M Python calls.
        False (nothing written) when the format's pages are not one plain entry each."""
        fmt = self.fmt
        target, n = fmt.leaf_placement(pgsize)
        if type(fmt).encode_leaves is not PageTable.encode_leaves or phys + count * pgsize > 1 << 64:
            return False  # a format that steps the address per copy (rockchip) keeps the page path
        lvl = fmt.levels[target]
        if n < 1 or lvl.entries % n or fmt.index(iova, lvl) % n:
            return False
        ends = np.array([phys, phys + (count - 1) * pgsize], dtype=np.uint64)
        if fmt.encode_leaf_vec(ends, pgsize, lvl, prot).tolist() != [fmt.encode_leaf(int(p), pgsize, lvl, prot)
                                                                     for p in ends.tolist()]:
            return False
        done = 0
        raws, raws_at = np.zeros(0, dtype=np.uint64), 0  # descriptors of pages [raws_at, raws_at + len)
        while done < count:
            va = iova + done * pgsize
            idx = fmt.index(va, lvl)
            k = min(count - done, (lvl.entries - idx) // n)  # pages (of n identical entries each)
            table = self._table_for(va, target)
            view = self.mem.array(table + idx * fmt.entry_size, k * n, fmt.dtype)
            if (fmt.classify_vec(view, lvl) != INVALID).any():
                for j in range(k):  # something is there: the page path's exact -EEXIST / replace rules
                    self.map_page(va + j * pgsize, phys + (done + j) * pgsize, pgsize, prot)
            else:
                if done + k > raws_at + len(raws):  # encode a block of pages at once (encode_leaf_vec
                    raws_at = done                  # may cost a fixed ~1 ms a call)
                    n_enc = max(k, min(count - done, BULK_ENCODE))
                    pa = np.uint64(phys + done * pgsize) + np.arange(n_enc, dtype=np.uint64) * np.uint64(pgsize)
                    raws = fmt.encode_leaf_vec(pa, pgsize, lvl, prot)
                part = raws[done - raws_at:done - raws_at + k]
                view[:] = part if n == 1 else np.repeat(part, n)
            done += k
        return True

    def map_scattered(self, iova: int, pages: np.ndarray, page: int, prot: int) -> None:
        """Map consecutive IOVA pages of `page` bytes to the physical pages in `pages`, each its
        own mapping as iommu_map() would get them. Leaf tables are filled with numpy, so 16 M
        scattered pages cost table allocations, not a Python call per page."""
        fmt = self.fmt
        if len(pages) and page in fmt.page_sizes:
            self._grow(iova, page * len(pages), page)
        target, n = fmt.leaf_placement(page) if page in fmt.page_sizes else (-1, 0)
        if n != 1 or len(pages) == 0:
            for i, p in enumerate(pages.tolist()):
                self.map(iova + i * page, p, page, prot)
            return
        lvl = fmt.levels[target]
        end = iova + page * len(pages)
        for s, e in fmt.windows:
            if s <= iova and end <= e:
                break
        else:
            raise ValueError(f"iova range {iova:#x}+{end - iova:#x} is outside the input address space")
        if (iova | page) & (min(fmt.page_sizes) - 1) or int((pages & np.uint64(page - 1)).any()):
            raise ValueError(f"scattered pages must be aligned to {page:#x}")
        fmt.check_map(iova, int(pages.max()), page, prot)
        raws = fmt.encode_leaf_vec(pages, page, lvl, prot)
        done = 0
        while done < len(pages):
            va = iova + done * page
            idx = fmt.index(va, lvl)
            count = min(len(pages) - done, lvl.entries - idx)
            table = self._table_for(va, target)
            view = self.mem.array(table + idx * fmt.entry_size, count, fmt.dtype)
            if (fmt.classify_vec(view, lvl) != INVALID).any():  # not view.any(): exynos ZERO_LV2LINK
                raise ValueError(f"iova {va:#x}+{count * page:#x} is already mapped (-EEXIST)")
            view[:] = raws[done:done + count]
            done += count

    def _grow(self, iova: int, size: int, pgsize: int) -> None:
        """Let a dynamic-top format add top levels before the map (generic_pt increase_top)."""
        roots = self.fmt.grow_top(self.mem, self.roots, self.arena.alloc, iova, size, pgsize)
        if roots is not None:
            self.roots = roots
            self.walker = Walker(self.fmt, self.mem, roots)

    def _table_for(self, iova: int, target: int) -> int:
        """The table at level index `target` that maps `iova`, allocating tables on the way."""
        fmt = self.fmt
        top = self.walker.top_for(iova)
        if top is None:
            raise ValueError(f"iova {iova:#x} has no root table")
        table = top.table
        for li in range(top.level_index, target):
            lvl = fmt.levels[li]
            entry = table + fmt.index(iova, lvl) * fmt.entry_size
            raw = self.walker.read_entry(entry)
            kind = fmt.classify(raw, lvl)
            if kind == TABLE:
                table = fmt.next_table(raw, lvl)
                continue
            if kind == LEAF:
                raise ValueError(f"iova {iova:#x} is already mapped by a larger page (-EEXIST)")
            size, align = fmt.table_alloc(fmt.levels[li + 1])
            new = self.arena.alloc(size, align)
            fill = fmt.table_fill(fmt.levels[li + 1])
            if fill:
                self.mem.array(new, size // fmt.entry_size, fmt.dtype)[:] = fill
            self.mem.write_uint(entry, fmt.entry_size, fmt.encode_table(new, lvl), fmt.byteorder)
            table = new
        return table

    def map_page(self, iova: int, phys: int, pgsize: int, prot: int) -> None:
        fmt = self.fmt
        target, n = fmt.leaf_placement(pgsize)
        table = self._table_for(iova, target)
        lvl = fmt.levels[target]
        idx = fmt.index(iova, lvl)
        raws = fmt.encode_leaves(phys, pgsize, lvl, prot, n)
        for k in range(idx, idx + n):
            entry = table + k * fmt.entry_size
            kind = fmt.classify(self.walker.read_entry(entry), lvl)
            # io-pgtable (LPAE __arm_lpae_map, v7s __arm_v7s_map) frees a table found where a
            # leaf goes and writes the leaf: whatever was mapped below it is gone. generic_pt
            # does so only for a table with no leaf below.
            if kind == TABLE and fmt.leaf_replaces_empty_table:
                va = iova + (k - idx) * (1 << lvl.shift)
                if any(len(b) for b in self.walker.leaves(va, va + (1 << lvl.shift))):
                    raise ValueError(f"iova {va:#x}: a table with mappings below is where the {pgsize:#x} leaf "
                                     f"goes (-EADDRINUSE)")
            elif kind != INVALID and not (kind == TABLE and fmt.leaf_replaces_table):
                raise ValueError(f"iova {iova:#x} is already mapped (-EEXIST)")
        for k in range(idx, idx + n):
            self.mem.write_uint(table + k * fmt.entry_size, fmt.entry_size, raws[k - idx], fmt.byteorder)
