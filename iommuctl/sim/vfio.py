"""VFIO type1 teardown (drivers/vfio/vfio_iommu_type1.c), replayed call by call.

vfio_unmap_unpin() for one vfio_dma: translate at iova (a 0 result is a hole: WARN, step one
PAGE_SIZE), grow the chunk while the next page's translation is physically contiguous (the
failing probe's result is thrown away), then unmap_unpin_fast(): iommu_unmap_fast() into the
dma's gather and queue the region; at VFIO_IOMMU_TLB_SYNC_MAX (512) regions, or when the fast
unmap returned 0, vfio_sync_unpin(): one iommu_iotlb_sync() then one vfio_unpin_pages_remote()
per queued region. When the fast unmap returned 0, unmap_unpin_slow(): iommu_unmap() (unmap +
sync) and, only if it unmapped something, an unpin; if that is 0 too, WARN and stop. After the
loop the regions still queued get their final vfio_sync_unpin().

The length-aware loop (UNCONFIRMED: the patch body "vfio: use iova_to_phys_length for efficient
unmap" was not found; callers.md 2.3) translates once per PTE: the chunk starts as the rest of the
PTE and grows by whole PTEs while the next PTE continues it physically. Batching, syncs and
unpins are unchanged.
"""

from __future__ import annotations

from formats.base import PHYS_ADDR_MAX

from .core import AlgoResult, Gather, SimDomain

VFIO_IOMMU_TLB_SYNC_MAX = 512


def vfio_unmap_unpin(sim: SimDomain, base: int, size: int, length_aware: bool, res: AlgoResult) -> None:
    """One vfio_dma [base, base+size), first (only) domain of the container. No accounting
    (vfio_lock_acct is one call per dma, not counted)."""
    page = sim.page
    pending: list[tuple[int, int, int]] = []  # unmapped_region_list: (iova, phys, len)
    gather = Gather()
    pos = 0
    while pos < size:
        iova = base + pos
        if length_aware:
            phys, pte = sim.iova_to_phys_length(iova)
            if phys == PHYS_ADDR_MAX:
                sim.warn(f"hole at {iova:#x}")
                sim.c.hole_pages += 1
                _note_hole(res, iova, page)
                pos += page
                continue
            ln = min(pte - (iova & (pte - 1)), size - pos)
            while pos + ln < size:
                nxt, pte2 = sim.iova_to_phys_length(iova + ln)
                if nxt != phys + ln:
                    break
                ln = min(ln + pte2, size - pos)
        else:
            phys = sim.iova_to_phys(iova)
            if phys == 0:  # WARN_ON(!phys)
                sim.warn(f"hole at {iova:#x}")
                sim.c.hole_pages += 1
                _note_hole(res, iova, page)
                pos += page
                continue
            ln = page
            while pos + ln < size:
                if sim.iova_to_phys(iova + ln) != phys + ln:
                    break
                ln += page
        # unmap_unpin_fast (kzalloc of the region entry assumed to succeed)
        got = sim.iommu_unmap_fast(iova, ln, gather)
        if got:
            pending.append((iova, phys, got))
        if len(pending) >= VFIO_IOMMU_TLB_SYNC_MAX or not got:
            _sync_unpin(sim, gather, pending)
        if not got:
            # unmap_unpin_slow
            got = sim.iommu_unmap(iova, ln)
            if got:
                sim.unpin(iova, phys >> sim.shift, got >> sim.shift, "vfio_unpin_pages_remote")
            else:
                sim.warn(f"unmap of {iova:#x}+{ln:#x} failed: vfio_unmap_unpin stops")
                res.stop = iova
                break
        pos += got
    if pending:
        _sync_unpin(sim, gather, pending)


def _sync_unpin(sim: SimDomain, gather: Gather, pending: list[tuple[int, int, int]]) -> None:
    """vfio_sync_unpin: one iommu_iotlb_sync, then unpin every queued region."""
    sim.iommu_iotlb_sync(gather)
    for iova, phys, ln in pending:
        sim.unpin(iova, phys >> sim.shift, ln >> sim.shift, "vfio_unpin_pages_remote")
    pending.clear()


def _note_hole(res: AlgoResult, iova: int, page: int) -> None:
    if res.holes and res.holes[-1][1] == iova:
        res.holes[-1] = (res.holes[-1][0], iova + page)
    else:
        res.holes.append((iova, iova + page))
