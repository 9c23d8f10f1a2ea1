"""The iommufd selftest's mock-domain check (drivers/iommu/iommufd/selftest.c,
iommufd_test_md_check_pa): step through [iova, iova+length) in the mock domain's smallest page
size (the lowest bit of its pgsize_bitmap, not PAGE_SIZE), translate each step with the domain's
iova_to_phys op and compare it with the user page pinned behind it; the first mismatch ends the
check with -EINVAL. Here the user pages are the domain's own mappings, so the check fails exactly
at the first unmapped step. Not an unmap path: only translations are counted.

Length-aware (UNCONFIRMED: "iommufd/selftest: switch to iommu_iova_to_phys_length" was not
found): one iova_to_phys_length per PTE, the user pages inside the PTE compared by arithmetic
(phys + k * page_size).
"""

from __future__ import annotations

from formats.base import PHYS_ADDR_MAX

from .core import AlgoResult, SimDomain


def md_check_pa(sim: SimDomain, iova: int, length: int, length_aware: bool, res: AlgoResult) -> int:
    """Returns the bytes checked before the first failing step (== length when it passes)."""
    bitmap = sim.fmt.pgsize_bitmap
    page = bitmap & -bitmap
    done = 0
    while done < length:
        at = iova + done
        if length_aware:
            phys, pte = sim.iova_to_phys_length(at)
            if phys == PHYS_ADDR_MAX:
                res.stop = at
                sim.c.hole_pages += 1
                return done
            step = max(min(pte - (at & (pte - 1)), length - done), page)
        else:
            if sim.iova_to_phys(at) == 0:
                res.stop = at
                sim.c.hole_pages += 1
                return done
            step = page
        done += step
    return done
