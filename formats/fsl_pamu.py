"""Freescale/NXP PowerPC PAMU domains (drivers/iommu/fsl_pamu_domain.c, fsl_pamu.c, fsl_pamu.h).

No page table and no map/unmap ops (`fsl_pamu_ops.default_domain_ops` has attach_dev,
iova_to_phys and free only). Attaching programs the LIODN's primary PAACE (`pamu_config_ppaace`)
with one window: base 0 (wbah, PPAACE_AF_WBAL), size 2^(WSE+1) with WSE =
map_addrspace_size_to_wse(1ULL << 36) = 35, i.e. 64 GiB, PAACE_ATM_WINDOW_XLATE to translated
base 0 (twbah, PAACE_WIN_TWBAL), no subwindows (PPAACE_AF_MW 0) and, from the second call in
`pamu_set_liodn`, PAACE_AF_AP = QUERY | UPDATE (read and write). The domain is therefore the
identity over [0, 2^36), the geometry `fsl_pamu_domain_alloc` sets, and `fsl_pamu_iova_to_phys`
returns the IOVA itself inside it, 0 outside.
"""

from __future__ import annotations

from typing import Any

from .base import Descriptor, PageTable, Step, Translation
from .lazy import np
from .virtio import MappingWalker

WINDOW_SIZE = 1 << 36  # fsl_pamu_domain_alloc: "default geometry 64 GB i.e. maximum system address"
PAACE_AP_PERMS_QUERY, PAACE_AP_PERMS_UPDATE = 0x1, 0x2
PAACE_PT_PRIMARY, PAACE_V_VALID, PAACE_DD_TO_HOST = 0x0, 0x1, 0x0
LEVEL = 1


def map_addrspace_size_to_wse(size: int) -> int:
    """fsl_pamu.c: the window size encoding, size = 2^(WSE+1) (fls64 - 2)."""
    if size & (size - 1):
        raise ValueError(f"window size {size:#x} is not a power of two")
    return size.bit_length() - 2


# struct paace addr_bitfields (PPAACE_AF_*, PAACE_AF_*)
ADDR_BITFIELDS = Descriptor("paace_addr_bitfields", 32, ("wbal", 31, 12), ("wse", 11, 6), ("mw", 5, 5),
                            ("ap", 4, 3), ("dd", 2, 2), ("pt", 1, 1), ("v", 0, 0))
# the word the driver leaves in the primary PAACE: base 0, WSE 35, AP read+write, primary, valid
PAACE_ADDR = ADDR_BITFIELDS.encode(wbal=0, wse=map_addrspace_size_to_wse(WINDOW_SIZE), mw=0,
                                   ap=PAACE_AP_PERMS_QUERY | PAACE_AP_PERMS_UPDATE, dd=PAACE_DD_TO_HOST,
                                   pt=PAACE_PT_PRIMARY, v=PAACE_V_VALID)


class WindowWalker(MappingWalker):
    def unmap_leaf(self, iova: int, pgsize: int) -> int:
        return 0  # no unmap_pages op: iommu_unmap unmaps nothing


class FslPamu(PageTable):
    name = "fsl-pamu"
    description = "Freescale PAMU: no page table, one identity window of 64 GiB per LIODN (PAACE)"
    kernel_source = "drivers/iommu/fsl_pamu_domain.c, drivers/iommu/fsl_pamu.c"
    root_register = None
    has_tables = False

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.levels = []
        self.page_sizes = [WINDOW_SIZE]  # no map op: the window is the one "page"
        self.oas = 36
        self.windows = [(0, WINDOW_SIZE)]

    def tableless_walker(self, mappings: list[tuple[int, int, int, int]]) -> WindowWalker:
        if mappings:
            raise ValueError("fsl-pamu has no map op (fsl_pamu_ops has no map_pages): the domain is the "
                             "identity window [0, 64 GiB); drop `mappings:`")
        # the window as one node: WBAL 0 -> TWBAL 0, read+write (flags in virtio's READ|WRITE bits)
        return WindowWalker(self, [(0, WINDOW_SIZE - 1, 0, 0x3)])

    def node_step(self, iova: int, w: MappingWalker, i: int) -> Step:
        fields = ADDR_BITFIELDS.decode(PAACE_ADDR)
        fields.update(atm="PAACE_ATM_WINDOW_XLATE", twba=0)
        if i < 0:
            return Step(LEVEL, 0, 0, 0, PAACE_ADDR, "invalid", fields,
                        f"{iova:#x} is outside the 64 GiB window (geometry 0..2^36-1)")
        return Step(LEVEL, 0, 0, 0, PAACE_ADDR, "window", fields,
                    "primary PAACE: window [0, 64 GiB) translated to base 0 (identity), read+write")

    def schema(self, lvl: Any, kind: int) -> Descriptor | None:
        return ADDR_BITFIELDS

    def legacy_iova_to_phys(self, iova: int, t: Translation) -> int:
        """fsl_pamu_iova_to_phys: the IOVA itself inside [aperture_start, aperture_end], else 0."""
        return iova if 0 <= iova < WINDOW_SIZE else 0

    def legacy_iova_to_phys_vec(self, iova: np.ndarray, phys: np.ndarray, size: np.ndarray, level: np.ndarray,
                                raw: np.ndarray) -> np.ndarray:
        return np.where(iova < np.uint64(WINDOW_SIZE), iova, np.uint64(0)).astype(np.uint64)  # type: ignore[no-any-return]

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        raise ValueError("fsl-pamu has no map op (fsl_pamu_ops has no map_pages)")


DRIVERS = {
    "fsl-pamu": {
        "format": "fsl-pamu",
        "config": {},
        "description": "Freescale/NXP PowerPC PAMU (fsl_pamu_domain.c): identity window, no map op",
    },
}
