"""The counted machinery the caller simulations run on: translations through the domain's walker
(each counted with the table entries its walk reads), the core's unmap paths (iommu_unmap,
iommu_unmap_fast, __iommu_unmap with its iommu_pgsize() split, or one unmap_range call for a
generic_pt "iommupt" domain), the driver's unmap_pages over a private copy of the tables,
iommu_iotlb_sync, and the unpins, recorded as PFN runs.

Everything here only calls the format hooks (classify, next_table, leaf_size, invalidate,
leaf_placement, index), so it works for every format the walker can walk. A table-less domain
(virtio-iommu: an interval tree of MAP requests, formats/virtio.py MappingWalker) runs the same
__iommu_unmap loop with the driver's unmap_pages being viommu_unmap_pages over the tree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from formats.base import INVALID, LEAF, PHYS_ADDR_MAX, TABLE, PageTable, WalkError
from formats.builder import iommu_pgsize
from formats.lazy import np
from iommuctl.errors import UserError
from iommuctl.memory import MemoryFault
from iommuctl.resolver import translate as resolver_translate

MAIN_KEYS = ("translations", "entries_read", "unmaps", "syncs", "unpin_calls", "unpinned_pages")


@dataclass
class Counts:
    """What one algorithm did, counted as SPEC section 6 defines it. The first six are the
    contract; the rest are the finer, driver-level detail."""

    translations: int = 0  # calls of the translation op
    entries_read: int = 0  # table entries those walks read
    unmaps: int = 0  # iommu_unmap + iommu_unmap_fast calls (GPU callers: ops->unmap_pages calls)
    syncs: int = 0  # iommu_iotlb_sync calls (GPU callers: their TLB flush commands)
    unpin_calls: int = 0  # calls that unpin a run of pages
    unpinned_pages: int = 0
    driver_unmaps: int = 0  # ops->unmap_pages / pt unmap_range calls under those unmaps
    driver_syncs: int = 0  # iotlb_sync calls that reach the driver (gather not empty)
    warns: int = 0  # WARN_ONs the kernel code would print
    hole_pages: int = 0  # pages the loop found unmapped

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Gather:
    """struct iommu_iotlb_gather: the range pending invalidation (empty when start >= end)."""

    start: int = (1 << 64) - 1
    end: int = 0

    def empty(self) -> bool:
        return self.start >= self.end

    def add_range(self, iova: int, size: int) -> None:
        # iommu_iotlb_gather_add_range
        self.start = min(self.start, iova)
        self.end = max(self.end, iova + size - 1)

    def reset(self) -> None:
        self.start, self.end = (1 << 64) - 1, 0


def is_iommupt(fmt: PageTable) -> bool:
    """generic_pt formats back iommupt domains: __iommu_unmap makes one unmap_range call."""
    return type(fmt).__module__.startswith("formats.generic_pt")


def caps_unmap_at_table_end(fmt: PageTable) -> bool:
    """io-pgtable-arm (arm_lpae_max_entries) and dart handle one table's entries per
    unmap_pages call and return short; io-pgtable-arm-v7s loops over pgcount itself."""
    return not fmt.name.startswith("arm-v7s")


TraceFn = Callable[[str], None]


class SimDomain:
    """A private copy of a domain's tables with counted kernel operations on it."""

    def __init__(self, domain: Any, page_size: int, trace: TraceFn | None = None) -> None:
        self.domain = domain.copy()
        self.fmt: PageTable = self.domain.fmt
        self.walker = self.domain.walker
        self.page = page_size
        self.shift = page_size.bit_length() - 1
        self.c = Counts()
        self.trace = trace
        self.unpins: list[tuple[int, int, int]] = []  # (iova, pfn, npages) per unpin call
        self.iommupt = is_iommupt(self.fmt)
        self.table_cap = caps_unmap_at_table_end(self.fmt)
        self.legacy_hook = self.fmt.legacy_iova_to_phys
        self.tick: Callable[[int], None] | None = None  # progress: called every 65536 translations
        self._zero_invalidate = type(self.fmt).invalidate is PageTable.invalidate
        self.tableless = not self.fmt.has_tables

    # -- translation --------------------------------------------------------------------------
    def _translate(self, iova: int) -> Any:
        # through the resolver, on this private copy (a WalkError becomes the user's error).
        # A table-less domain's lookup (viommu_iova_to_phys: interval_tree_iter_first over the
        # mapping tree) counts 1 entry read: the one node it lands on, as MappingWalker.translate
        # counts it (the tree's internal rb-node hops are not table entries).
        t = resolver_translate(self.domain, iova)
        self.c.translations += 1
        if self.tick is not None and not self.c.translations & 0xFFFF:
            self.tick(0x10000)
        self.c.entries_read += t.entries_read
        return t

    def iova_to_phys(self, iova: int) -> int:
        """The legacy op: phys, or 0 on a miss (plus the format driver's own quirks)."""
        t = self._translate(iova)
        phys = self.legacy_hook(iova, t)
        if self.trace:
            self.trace(f"iova_to_phys({iova:#x}) = {phys:#x}  [{t.entries_read} entries]")
        return phys

    def iova_to_phys_length(self, iova: int) -> tuple[int, int]:
        """The series' op: (phys, size of the backing PTE), (PHYS_ADDR_MAX, 0) on a miss."""
        t = self._translate(iova)
        res = (t.phys, t.size) if t.mapped else (PHYS_ADDR_MAX, 0)
        if self.trace:
            self.trace(f"iova_to_phys_length({iova:#x}) = {res[0]:#x}, {res[1]:#x}  [{t.entries_read} entries]")
        return res

    # -- core unmap paths (drivers/iommu/iommu.c) ---------------------------------------------
    def iommu_unmap(self, iova: int, size: int) -> int:
        self.c.unmaps += 1
        g = Gather()
        got = self._iommu_unmap(iova, size, g)
        if self.trace:
            self.trace(f"iommu_unmap({iova:#x}, {size:#x}) = {got:#x}")
        self.iommu_iotlb_sync(g)
        return got

    def iommu_unmap_fast(self, iova: int, size: int, g: Gather) -> int:
        self.c.unmaps += 1
        got = self._iommu_unmap(iova, size, g)
        if self.trace:
            self.trace(f"iommu_unmap_fast({iova:#x}, {size:#x}) = {got:#x}")
        return got

    def iommu_iotlb_sync(self, g: Gather) -> None:
        self.c.syncs += 1
        if not g.empty():
            self.c.driver_syncs += 1
        if self.trace:
            self.trace("iommu_iotlb_sync()" + ("" if not g.empty() else "  [gather empty: no driver sync]"))
        g.reset()

    def _iommu_unmap(self, iova: int, size: int, g: Gather) -> int:
        if self.iommupt:
            self.c.driver_unmaps += 1
            try:
                got = self.unmap_range(iova, size)
            except (WalkError, MemoryFault) as e:
                raise UserError(f"{self.domain.name}: unmapping {iova:#x}: {e}") from None
            if got:
                g.add_range(iova, got)
            return got
        # __iommu_unmap_domain_pgtbl (a table-less virtio domain takes this loop too: it is no
        # iommupt domain; its unmap_pages is viommu_unmap_pages, which may return more than
        # asked, ending the loop as "unmapped < size" no longer holds)
        bitmap = self.fmt.pgsize_bitmap
        minpg = bitmap & -bitmap
        if (iova | size) & (minpg - 1):
            return 0  # "unaligned" pr_err
        unmapped = 0
        while unmapped < size:
            pgsize, count = iommu_pgsize(bitmap, iova, iova, size - unmapped)
            got = self.unmap_pages(iova, pgsize, count)
            if not got:
                break
            if g.empty():
                g.add_range(iova, size)
            iova += got
            unmapped += got
        return unmapped

    # -- driver unmap_pages, io-pgtable style ------------------------------------------------
    def _read(self, addr: int) -> int:
        return self.walker.read_entry(addr)

    def _write(self, addr: int, raw: int, lvl: Any) -> None:
        fmt = self.fmt
        self.walker.mem.write_uint(addr, fmt.entry_size, fmt.invalidate(raw, lvl), fmt.byteorder)

    def unmap_pages(self, iova: int, pgsize: int, count: int) -> int:
        """ops->unmap_pages as io-pgtable-arm / -v7s / dart do it: walk down to the level of
        `pgsize`; a larger leaf on the way is a partial unmap, refused (0); at that level clear
        up to `count` pages (a table entry there is cleared whole, its table freed), stopping at
        an empty entry, and (arm, dart) at the end of that table."""
        fmt = self.fmt
        self.c.driver_unmaps += 1
        if self.tableless:
            return self._viommu_unmap_pages(iova, pgsize, count)
        if pgsize not in fmt.page_sizes or count <= 0:
            self.c.warns += 1
            return 0
        top = self.walker.top_for(iova)
        if top is None:
            self.c.warns += 1
            return 0
        target, n = fmt.leaf_placement(pgsize)
        table, parent = top.table, None
        try:
            for li in range(top.level_index, target):
                lvl = fmt.levels[li]
                entry = table + fmt.index(iova, lvl) * fmt.entry_size
                raw = self._read(entry)
                kind = fmt.classify(raw, lvl)
                if kind != TABLE or li == len(fmt.levels) - 1:
                    self.c.warns += 1  # empty entry, or "Unmap of a partial large IOPTE"
                    return 0
                parent, table = entry, fmt.next_table(raw, lvl)
            lvl = fmt.levels[target]
            idx = fmt.index(iova, lvl)
            num = count
            if self.table_cap:
                num = min(count, (lvl.entries - idx) // n)
            return self._clear_pages(table, lvl, idx, n, num, pgsize, parent)
        except (WalkError, MemoryFault) as e:
            raise UserError(f"{self.domain.name}: unmapping {iova:#x}: {e}") from None

    def _viommu_unmap_pages(self, iova: int, pgsize: int, count: int) -> int:
        """viommu_unmap_pages(domain, iova, pgsize, pgcount): viommu_del_mappings over
        [iova, iova + pgsize * pgcount - 1] removes every node starting inside it, whole (maybe
        more bytes than asked), stopping at one that starts before iova ("Trying to split a
        mapping?"); fewer bytes than asked is 0, the nodes already removed staying removed. The
        UNMAP request to the device is assumed sent and acknowledged (endpoints attached). The
        gather is not touched: the core's loop fills it, so iommu_iotlb_sync reaches
        viommu_iotlb_sync."""
        unmap_leaf = getattr(self.walker, "unmap_leaf", None)
        if unmap_leaf is None or count <= 0:
            self.c.warns += 1
            return 0
        size = pgsize * count
        got = int(unmap_leaf(iova, size))
        if self.trace:
            self.trace(f"viommu_unmap_pages({iova:#x}, {pgsize:#x}, {count}) = {got:#x}")
        return got

    def _clear_pages(self, table: int, lvl: Any, idx: int, n: int, num: int, pgsize: int, parent: int | None) -> int:
        fmt = self.fmt
        ents = self.walker.mem.array(table + idx * fmt.entry_size, num * n, fmt.dtype)
        kinds = fmt.classify_vec(ents, lvl).reshape(num, n)
        bad = (kinds == INVALID).any(axis=1)
        done = int(np.argmax(bad)) if bad.any() else num
        if done < num:
            self.c.warns += 1  # WARN_ON(!pte)
        if done and n == 1:
            # a larger (contiguous) leaf at this level: "Unmap of a partial large IOPTE"
            flat = ents[:done]
            leafy = kinds[:done, 0] == LEAF
            if leafy.any():
                sizes = fmt.leaf_size_vec(flat[leafy], lvl).astype(np.uint64)
                big = np.flatnonzero(sizes > np.uint64(pgsize))
                if len(big):
                    self.c.warns += 1
                    done = int(np.flatnonzero(leafy)[big[0]])
        k = done * n
        if k:
            if self._zero_invalidate and ents.flags.writeable and ents.base is not None:
                ents[:k] = 0
            else:
                for j in range(k):
                    addr = table + (idx + j) * fmt.entry_size
                    self._write(addr, int(ents[j]), lvl)
            if parent is not None and fmt.frees_empty_tables:
                whole = self.walker.mem.array(table, lvl.entries, fmt.dtype)
                if (fmt.classify_vec(whole, lvl) == INVALID).all():
                    self.walker.mem.write_uint(parent, fmt.entry_size, 0, fmt.byteorder)
        return done * pgsize

    # -- generic_pt unmap_range ----------------------------------------------------------------
    def unmap_range(self, iova: int, length: int) -> int:
        """pt unmap_range (generic_pt/iommu_pt.h __unmap_range): clear leaves from `iova` on in
        order, stopping at the first empty entry; a start inside a leaf is -EINVAL (0); a leaf
        reaching past the end is removed whole and counted whole; a table the range covers
        fully is cleared once its contents are."""
        end = iova + length
        top = self.walker.top_for(iova)
        if top is None or end > top.end:
            return 0  # make_range: the range must lie in one half of the address space
        got, _ = self._pt_unmap(top.table, top.level_index, top.base, iova, end)
        return got

    def _pt_unmap(self, table: int, li: int, base: int, lo: int, hi: int) -> tuple[int, bool]:
        fmt = self.fmt
        lvl = fmt.levels[li]
        i = (lo - base) >> lvl.shift
        unmapped = 0
        start_call = True
        while i < lvl.entries and base + (i << lvl.shift) < hi:
            addr = table + i * fmt.entry_size
            raw = self._read(addr)
            kind = fmt.classify(raw, lvl)
            if kind == LEAF:
                size = fmt.leaf_size(raw, lvl)
                n = max(size >> lvl.shift, 1)
                g0 = i - i % n
                if start_call and lo & (size - 1):
                    return unmapped, False  # -EINVAL: start inside a large IOPTE
                for k in range(g0, g0 + n):
                    a = table + k * fmt.entry_size
                    self._write(a, self._read(a), lvl)
                unmapped += size
                i = g0 + n
            elif kind == TABLE and li < len(fmt.levels) - 1:
                cbase = base + (i << lvl.shift)
                clo, chi = max(lo, cbase), min(hi, cbase + lvl.block)
                got, ok = self._pt_unmap(fmt.next_table(raw, lvl), li + 1, cbase, clo, chi)
                unmapped += got
                if not ok:
                    return unmapped, False
                if clo == cbase and chi == cbase + lvl.block:
                    self._write(addr, raw, lvl)
                i += 1
            else:
                return unmapped, False
            start_call = False
        return unmapped, True

    # -- unpin ----------------------------------------------------------------------------------
    def unpin(self, iova: int, pfn: int, npages: int, what: str = "unpin") -> None:
        self.c.unpin_calls += 1
        self.c.unpinned_pages += npages
        self.unpins.append((iova, pfn, npages))
        if self.trace:
            self.trace(f"{what}(pfn {pfn:#x}, {npages} pages)  [iova {iova:#x}]")

    def warn(self, message: str) -> None:
        self.c.warns += 1
        if self.trace:
            self.trace(f"WARN: {message}")

    # -- after the teardown ----------------------------------------------------------------------
    def leaves(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """(iova, phys, size) of the leaves still mapped over [lo, hi)."""
        try:
            return [(v, p, s) for v, p, s, _, _, _ in self.walker.iter_leaves(lo, hi)]
        except WalkError as e:
            raise UserError(f"{self.domain.name}: after the teardown: {e}") from None


def leaf_list(domain: Any, lo: int, hi: int) -> list[tuple[int, int, int]]:
    try:
        return [(v, p, s) for v, p, s, _, _, _ in domain.walker.iter_leaves(lo, hi)]
    except WalkError as e:
        raise UserError(f"{domain.name}: {e}") from None


def pfn_profile(unpins: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The unpinned PFN multiset as (first pfn, end pfn, times) segments, from the runs alone
    (a 512G leaf unpinned whole is one run, not 134 M pages)."""
    events: dict[int, int] = {}
    for _, pfn, n in unpins:
        if n > 0:
            events[pfn] = events.get(pfn, 0) + 1
            events[pfn + n] = events.get(pfn + n, 0) - 1
    out: list[tuple[int, int, int]] = []
    level = 0
    keys = sorted(events)
    for k, nxt in zip(keys, keys[1:]):
        level += events[k]
        if level:
            if out and out[-1][1] == k and out[-1][2] == level:
                out[-1] = (out[-1][0], nxt, level)
            else:
                out.append((k, nxt, level))
    return out


def _first_diff_pfn(a: list[tuple[int, int, int]], b: list[tuple[int, int, int]]) -> int | None:
    """Lowest pfn whose multiplicity differs between two profiles."""
    import bisect

    starts_a, starts_b = [x[0] for x in a], [x[0] for x in b]

    def mult(prof: list[tuple[int, int, int]], starts: list[int], pfn: int) -> int:
        i = bisect.bisect_right(starts, pfn) - 1
        return prof[i][2] if i >= 0 and pfn < prof[i][1] else 0

    cands = sorted({x for s0, s1, _ in a + b for x in (s0, s1)})
    for x in cands:
        if mult(a, starts_a, x) != mult(b, starts_b, x):
            return x
    return None


def first_pfn_difference(a: list[tuple[int, int, int]], b: list[tuple[int, int, int]], shift: int = 12) -> int | None:
    """The lowest IOVA whose unpinned PFN is in one multiset and not the other, or None."""
    pa, pb = pfn_profile(a), pfn_profile(b)
    if pa == pb:
        return None
    pfn = _first_diff_pfn(pa, pb)
    if pfn is None:
        return None
    # The IOVAs at which each side holds that PFN; with aliases (one PFN at several IOVAs) the
    # culprit is an IOVA on one side only, not merely the lowest IOVA of the PFN.
    at_a = Counter(iova + ((pfn - first) << shift) for iova, first, n in a if first <= pfn < first + n)
    at_b = Counter(iova + ((pfn - first) << shift) for iova, first, n in b if first <= pfn < first + n)
    odd = (at_a - at_b) + (at_b - at_a)
    if odd:
        return min(odd)
    return min(at_a + at_b) if at_a or at_b else None


def floor_entries(domain: Any, spans: list[tuple[int, int]]) -> int:
    """Entries one range walk per span reads to enumerate its leaves: in every table it enters,
    the entries inside the span, each once (last-level tables counted from their parents)."""
    if not domain.fmt.has_tables:
        # an interval-tree range walk (interval_tree_iter_first/next) visits each node
        # overlapping the span once: one entry per node, as a lookup counts one
        return sum(sum(1 for _ in domain.walker.iter_leaves(lo, hi)) for lo, hi in spans)
    from .runcount import table_shape

    return sum(table_shape(domain.walker, lo, hi).floor for lo, hi in spans)


@dataclass
class AlgoResult:
    """One algorithm's run over a caller's units."""

    counts: Counts = field(default_factory=Counts)
    unpins: list[tuple[int, int, int]] = field(default_factory=list)
    left: list[tuple[int, int, int]] = field(default_factory=list)  # leaves still mapped in the units
    removed: list[tuple[int, int, int]] = field(default_factory=list)  # leaves the teardown removed
    holes: list[tuple[int, int]] = field(default_factory=list)  # hole ranges the loop stepped through
    stop: int | None = None  # where the loop stopped early (break / -EINVAL), if it did
    sim: SimDomain | None = None
