"""The DRM GPU unmap loops over io-pgtable ARM_MALI_LPAE, replayed call by call.

panfrost_mmu_unmap() (drivers/gpu/drm/panfrost/panfrost_mmu.c): get_pgsize() steps (4K to the
next 2M boundary, then 2M pages up to each 1G boundary), one ops->unmap_pages() per step with no
gather; a heap BO forces count 1 and unmaps a step only when ops->iova_to_phys() finds it mapped
(never-faulted 2M chunks); then one panfrost_mmu_flush_range() (AS_COMMAND_FLUSH_PT).

panthor_vm_unmap_pages() (drivers/gpu/drm/panthor/panthor_mmu.c): the same steps with no
translation, except when unmap_pages() returns short: then it probes ops->iova_to_phys() 4K at a
time from `iova + unmapped_sz` (the op's start, not the step's: reproduced as the kernel has it)
while unmapped, marks the VM unusable, and gives up if nothing was unmapped. The TLB flush is the
caller's panthor_vm_unlock_region() (one cache flush + AS_COMMAND_UNLOCK), counted as one sync.

Length-aware: the series' v1 patch (dri-devel msg610101) swaps each ops->iova_to_phys() for
ops->iova_to_phys_length(ops, iova, NULL) one for one, so the counts do not change.
"""

from __future__ import annotations

from formats.base import PHYS_ADDR_MAX

from .core import AlgoResult, SimDomain

SZ_4K, SZ_2M, SZ_1G = 1 << 12, 1 << 21, 1 << 30


def get_pgsize(addr: int, size: int) -> tuple[int, int]:
    """(pgsize, count) as panfrost's / panthor's get_pgsize()."""
    blk_offset = -addr % SZ_2M
    if blk_offset or size < SZ_2M:
        return SZ_4K, (min(blk_offset, size) if blk_offset else size) // SZ_4K
    blk_offset = -addr % SZ_1G or SZ_1G
    return SZ_2M, min(blk_offset, size) // SZ_2M


def gpu_steps(iova: int, size: int) -> int:
    """Number of get_pgsize() steps over [iova, iova+size) (non-heap): head of 4K pages up to
    the first 2M boundary, one step per 1G window of 2M pages, a 4K tail."""
    n = 0
    done = 0
    while done < size:
        pg, cnt = get_pgsize(iova + done, size - done)
        if pg == SZ_2M and cnt == SZ_1G // SZ_2M:
            # whole 1G windows: count them at once
            whole = (size - done) // SZ_1G
            n += whole
            done += whole * SZ_1G
            continue
        n += 1
        done += pg * cnt
    return n


def _mapped(sim: SimDomain, iova: int, length_aware: bool) -> bool:
    if length_aware:
        return sim.iova_to_phys_length(iova)[0] != PHYS_ADDR_MAX
    return sim.iova_to_phys(iova) != 0


def panfrost_unmap(sim: SimDomain, iova: int, length: int, length_aware: bool, res: AlgoResult,
                   heap: bool = False) -> None:
    done = 0
    while done < length:
        pgsize, count = get_pgsize(iova, length - done)
        if heap:
            count = 1
        if not heap or _mapped(sim, iova, length_aware):
            sim.c.unmaps += 1
            got = sim.unmap_pages(iova, pgsize, count)
            if sim.trace:
                sim.trace(f"unmap_pages({iova:#x}, {pgsize:#x}, {count}) = {got:#x}")
            if got != pgsize * count:
                sim.warn(f"unmap_pages({iova:#x}, {pgsize:#x}, {count}) returned {got:#x}")
                if res.stop is None:
                    res.stop = iova + got
        elif heap:
            sim.c.hole_pages += pgsize // sim.page
            res.holes.append((iova, iova + pgsize))
        iova += pgsize * count
        done += pgsize * count
    sim.c.syncs += 1  # panfrost_mmu_flush_range: AS_COMMAND_FLUSH_PT
    sim.c.driver_syncs += 1
    if sim.trace:
        sim.trace(f"panfrost_mmu_flush_range({iova - length:#x}, {length:#x})")


def panthor_unmap(sim: SimDomain, iova: int, size: int, length_aware: bool, res: AlgoResult) -> None:
    offset = 0
    while offset < size:
        pgsize, count = get_pgsize(iova + offset, size - offset)
        sim.c.unmaps += 1
        got = sim.unmap_pages(iova + offset, pgsize, count)
        if sim.trace:
            sim.trace(f"unmap_pages({iova + offset:#x}, {pgsize:#x}, {count}) = {got:#x}")
        if got != pgsize * count:
            sim.warn(f"unmap_pages({iova + offset:#x}, {pgsize:#x}, {count}) returned {got:#x}: VM unusable")
            if res.stop is None:
                res.stop = iova + offset + got
            # the kernel probes from iova + unmapped_sz, iova being the op's start
            # while (!ops->iova_to_phys(ops, iova + unmapped_sz) && unmapped_sz < pgsize * pgcount):
            # the probe comes first, so it is made once more when the size test ends the loop
            while not _mapped(sim, iova + got, length_aware) and got < pgsize * count:
                got += SZ_4K
            if not got:
                sim.warn("no progress: panthor_vm_unmap_pages gives up")
                break
        offset += got
    sim.c.syncs += 1  # panthor_vm_unlock_region: cache flush + AS_COMMAND_UNLOCK
    sim.c.driver_syncs += 1
