"""IOMMUFD teardown of one iopt_area from its storage domain (drivers/iommu/iommufd/pages.c),
replayed call by call: __iopt_area_unfill_domain() -> iopt_area_unpin_domain() over the one hole
span (no in-kernel access, the area already out of domains_itree), batch_from_domain() filling a
pfn_batch one iommu_iova_to_phys() per page, one iommu_unmap() per batch (through
iommu_unmap_nofail, which WARNs on a short unmap), then batch_unpin(): one
unpin_user_page_range_dirty_lock() per batch entry.

The batch: __batch_init(last_index + 1 pages) through temp_kmalloc() with the 32-u64 stack
backup: a request under 256 bytes keeps its size on the backup (callers.md 0.3 correction 1),
else min(bytes, TEMP_MEMORY_LIMIT = 65536); an entry is 12 bytes (u64 pfn + u32 npfns).
batch_add_pfn_num() extends the last entry when the pfn continues it (up to U32_MAX pfns), else
takes a free entry, else fails: the lookup that failed is spent and the page is read again for
the next batch.

The length-aware batch_from_domain (UNCONFIRMED: the patch "iommufd: use iova_to_phys_length for
efficient unmap" was not found; callers.md 3.3) translates once per PTE and adds the pages left
in it as one batch_add_pfn_num(). Batching, cuts, unmap and unpin are unchanged.
"""

from __future__ import annotations

from formats.base import PHYS_ADDR_MAX

from .core import AlgoResult, SimDomain

TEMP_MEMORY_LIMIT = 65536
BATCH_BACKUP_BYTES = 32 * 8
BATCH_ELEM = 8 + 4
MAX_NPFNS = (1 << 32) - 1


def batch_capacity(last_index: int) -> int:
    """Entries of the unfill batch for an area whose last index in its iopt_pages is
    `last_index` (kmalloc assumed to succeed)."""
    size = (last_index + 1) * BATCH_ELEM
    if size < BATCH_BACKUP_BYTES:
        return size // BATCH_ELEM
    return min(size, TEMP_MEMORY_LIMIT) // BATCH_ELEM


class PfnBatch:
    """struct pfn_batch (CPU memory only)."""

    def __init__(self, array_size: int) -> None:
        self.array_size = array_size
        self.pfns: list[int] = []
        self.npfns: list[int] = []
        self.total = 0

    @property
    def end(self) -> int:
        return len(self.pfns)

    def add(self, pfn: int, nr: int) -> bool:
        if self.pfns and pfn == self.pfns[-1] + self.npfns[-1] and nr <= MAX_NPFNS - self.npfns[-1]:
            self.npfns[-1] += nr
        elif self.end < self.array_size:
            self.pfns.append(pfn)
            self.npfns.append(nr)
        else:
            return False
        self.total += nr
        return True

    def clear_carry(self, keep: int) -> None:
        if not keep:
            self.pfns, self.npfns, self.total = [], [], 0
            return
        last_pfn = self.pfns[-1] + self.npfns[-1] - keep
        self.pfns, self.npfns, self.total = [last_pfn], [keep], keep


def batch_from_domain(sim: SimDomain, batch: PfnBatch, area_iova: int, start: int, last: int,
                      length_aware: bool, res: AlgoResult) -> None:
    page = sim.page
    idx = start
    iova = area_iova + idx * page  # areas are PAGE_SIZE aligned here: page_offset 0
    while idx <= last:
        if length_aware:
            phys, pte = sim.iova_to_phys_length(iova)
            if phys == PHYS_ADDR_MAX:
                # the reconstruction has no rule for a hole (areas never have one): one page
                # with PHYS_PFN(PHYS_ADDR_MAX), where the legacy loop pushes pfn 0
                sim.c.hole_pages += 1
                res.holes.append((iova, iova + page))
                n = 1
            else:
                n = max((pte - (iova & (pte - 1))) // page, 1)
                n = min(n, last - idx + 1)
            if not batch.add(phys >> sim.shift, n):
                return
        else:
            phys = sim.iova_to_phys(iova)
            if phys == 0:
                sim.c.hole_pages += 1
                res.holes.append((iova, iova + page))
                sim.warn(f"hole at {iova:#x} inside an iopt_area: pfn 0 goes into the batch")
            n = 1
            if not batch.add(phys >> sim.shift, 1):
                return
        iova += n * page
        idx += n


def unfill_area(sim: SimDomain, area_iova: int, length: int, length_aware: bool, res: AlgoResult,
                first_index: int = 0) -> None:
    """iopt_area_unfill_domain() for an area of `length` bytes whose first page is index
    `first_index` of its iopt_pages (0: the area owns its pages)."""
    page = sim.page
    npages = length // page
    last_abs = first_index + npages - 1
    batch = PfnBatch(batch_capacity(last_abs))
    # indexes relative to the area from here on
    start_index = 0
    last = npages - 1
    unmapped_end = 0
    while start_index <= last:
        if unmapped_end <= last:
            batch_from_domain(sim, batch, area_iova, max(start_index, unmapped_end), last, length_aware, res)
            batch_last = start_index + batch.total - 1
        else:
            batch_last = last
        # batch_last == last == real last index: no batch_from_domain_continue
        if unmapped_end <= batch_last:
            u_iova = area_iova + unmapped_end * page
            want = (start_index + batch.total - unmapped_end) * page
            got = sim.iommu_unmap(u_iova, want)
            if got != want:  # iommu_unmap_nofail
                sim.warn(f"iommu_unmap({u_iova:#x}, {want:#x}) returned {got:#x}")
                if res.stop is None:
                    res.stop = u_iova + got
            unmapped_end = start_index + batch.total
        # batch_unpin(batch, pages, 0, batch_last - start_index + 1): one call per entry
        todo = batch_last - start_index + 1
        at = area_iova + start_index * page
        for pfn, n in zip(batch.pfns, batch.npfns):
            if todo <= 0:
                break
            k = min(n, todo)
            sim.unpin(at, pfn, k, "unpin_user_page_range_dirty_lock")
            at += k * page
            todo -= k
        start_index = batch_last + 1
        batch.clear_carry(unmapped_end - batch_last - 1)
