"""Unisoc (Spreadtrum) IOMMU page table (drivers/iommu/sprd-iommu.c).

One flat table of u32 page numbers: entry i holds the PPN (PA >> SPRD_IOMMU_PAGE_SHIFT) that
IOVA aperture_start + i * 4K maps to. No valid or permission bits: 0 means unmapped and `prot`
is ignored (`sprd_iommu_map`). The hardware takes the table from FIRST_PPN (table PA >> 12),
the first IOVA page from FIRST_VPN and the number of pages - 1 from VPN_RANGE; the driver
hard-codes the aperture to [0, SZ_256M) (`sprd_iommu_domain_alloc_paging`), so the table is
65536 entries (`sprd_iommu_pgt_size`). The EX and VAU IP versions differ only in register offsets.

The legacy `sprd_iommu_iova_to_phys` adds the in-page offset to `entry << 12` without testing the
entry, so a miss returns the in-page offset rather than 0; outside the aperture it WARNs and
returns 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import (
    INVALID,
    IOMMU_READ,
    IOMMU_WRITE,
    LEAF,
    ConfigError,
    Descriptor,
    Level,
    PageTable,
    TopTable,
    Translation,
)
from .lazy import np

SPRD_IOMMU_PAGE_SHIFT = 12
SPRD_IOMMU_PAGE_SIZE = 1 << SPRD_IOMMU_PAGE_SHIFT
U32 = 0xFFFF_FFFF
SZ_256M = 256 << 20

PPN = Descriptor("sprd_pte", 32, ("ppn", 31, 0))


def get_order_bytes(size: int) -> int:
    """Bytes of the 2^order pages dma_alloc_coherent() hands out for `size` (get_order)."""
    pages = max(1, -(-size // 4096))
    return 4096 << (pages - 1).bit_length()


class Sprd(PageTable):
    leaf_size_is_block = True  # one flat level of 4K pages
    name = "sprd"
    description = "Unisoc sprd IOMMU: one flat table of u32 PPNs over the aperture, 4K pages, no valid bit"
    kernel_source = "drivers/iommu/sprd-iommu.c"
    entry_size = 4
    config_defaults = {"aperture_start": 0, "aperture_size": SZ_256M, "pa_bits": 32}
    root_register = "first_ppn"
    # leaf_prot is the base's read/write: sprd_iommu_map ignores prot (no permission bits).

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        start, size, pa_bits = config["aperture_start"], config["aperture_size"], config["pa_bits"]
        if start % SPRD_IOMMU_PAGE_SIZE:
            raise ConfigError("aperture_start", f"{start:#x} is not 4K aligned (FIRST_VPN holds a page number)")
        if start >> SPRD_IOMMU_PAGE_SHIFT > U32:
            raise ConfigError("aperture_start", f"{start:#x}: FIRST_VPN is a 32-bit page number")
        if size == 0 or size % SPRD_IOMMU_PAGE_SIZE:
            raise ConfigError("aperture_size", f"{size:#x} is not a positive multiple of 4K")
        if (size - 1) >> SPRD_IOMMU_PAGE_SHIFT > U32:
            raise ConfigError("aperture_size", f"{size:#x}: VPN_RANGE is a 32-bit page count")
        if start + size > 1 << 64:
            raise ConfigError("aperture_size", f"aperture {start:#x}+{size:#x} passes 2^64")
        if not 13 <= pa_bits <= 44:
            raise ConfigError("pa_bits", f"{pa_bits}: an entry holds a 32-bit PPN, so 13..44 bits")
        self.start = start
        self.size = size
        self.nentries = size >> SPRD_IOMMU_PAGE_SHIFT
        # The table has nentries entries; the level's power-of-two index width covers them. The
        # walker never reads past index nentries-1 of the window, and reading the rounded-up
        # table stays inside the 2^order pages dma_alloc_coherent gave it.
        self.levels = [Level(1, SPRD_IOMMU_PAGE_SHIFT, max(1, (self.nentries - 1).bit_length()))]
        self.page_sizes = [SPRD_IOMMU_PAGE_SIZE]
        self.oas = pa_bits
        self.windows = [(start, start + size)]

    # -- roots ----------------------------------------------------------------------------------
    def root_from_register(self, value: int) -> list[int]:
        """SPRD_EX_FIRST_PPN / SPRD_VAU_FIRST_PPN hold the table PA >> 12 (`sprd_iommu_first_ppn`)."""
        if value > U32:
            raise ValueError(f"first_ppn {value:#x} does not fit the 32-bit FIRST_PPN register")
        return [value << SPRD_IOMMU_PAGE_SHIFT]

    def top_tables(self, roots: Sequence[int]) -> list[TopTable]:
        # entry 0 maps aperture_start: the hardware subtracts FIRST_VPN
        return [TopTable(roots[0], 0, self.start, self.start, self.start + self.size)]

    def root_alloc(self) -> list[tuple[int, int]]:
        size = get_order_bytes(self.nentries * self.entry_size)  # dma_alloc_coherent on first attach
        return [(size, size)]

    def index(self, iova: int, lvl: Level) -> int:
        return (iova - self.start) >> SPRD_IOMMU_PAGE_SHIFT

    # -- decode -----------------------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        return LEAF if raw else INVALID  # no valid bit: 0 is the only "unmapped"

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        return raw << SPRD_IOMMU_PAGE_SHIFT

    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        return PPN

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == LEAF:
            return f"4 KiB page at PA {self.leaf_phys(raw, lvl):#x} (PPN {raw:#x}; no permission bits)"
        return "0: unmapped (a miss is redirected to the DEFAULT_PPN protect page)"

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        # PPN bits beyond pa_bits (sprd_iommu_map stores (u32)paddr >> 12: at most 20 bits)
        return raw & ~((1 << (self.oas - SPRD_IOMMU_PAGE_SHIFT)) - 1) & U32

    def legacy_iova_to_phys(self, iova: int, t: Translation) -> int:
        """`sprd_iommu_iova_to_phys`: (entry << 12) + ((iova - start) & 0xfff); 0 (and a WARN)
        outside the aperture. A miss reads entry 0, so it returns the in-page offset."""
        if not self.start <= iova < self.start + self.size:
            return 0
        off = (iova - self.start) & (SPRD_IOMMU_PAGE_SIZE - 1)
        return t.phys if t.mapped else off

    def legacy_iova_to_phys_vec(self, iova: np.ndarray, phys: np.ndarray, size: np.ndarray, level: np.ndarray,
                                raw: np.ndarray) -> np.ndarray:
        inside = (iova >= np.uint64(self.start)) & (iova - np.uint64(self.start) < np.uint64(self.size))
        off = (iova - np.uint64(self.start)) & np.uint64(SPRD_IOMMU_PAGE_SIZE - 1)
        return np.where(inside, np.where(size != 0, phys, off), np.uint64(0)).astype(np.uint64)  # type: ignore[no-any-return]

    # -- vectorised ---------------------------------------------------------------------------------
    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.where(raw != 0, LEAF, INVALID).astype(np.int8)

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return raw.astype(np.uint64) << np.uint64(SPRD_IOMMU_PAGE_SHIFT)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), SPRD_IOMMU_PAGE_SIZE, dtype=np.uint64)

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), IOMMU_READ | IOMMU_WRITE, dtype=np.int64)

    # -- encode (sprd_iommu_map) ------------------------------------------------------------------
    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        return (phys & U32) >> SPRD_IOMMU_PAGE_SHIFT  # pabase = (u32)paddr; prot ignored

    def encode_leaf_vec(self, phys: np.ndarray, pgsize: int, lvl: Level, prot: int) -> np.ndarray:
        return (phys.astype(np.uint64) & np.uint64(U32)) >> np.uint64(SPRD_IOMMU_PAGE_SHIFT)

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        # prot is ignored, so no r/w requirement; the PA is truncated to u32 by the driver
        if phys >> SPRD_IOMMU_PAGE_SHIFT == 0:
            raise ValueError("PA page 0 would be written as PPN 0, which reads as unmapped (no valid bit)")
        if (phys + size - 1) >> min(self.oas, 32):
            raise ValueError(f"phys {phys:#x}+{size:#x} does not fit: sprd_iommu_map truncates the PA "
                             f"to 32 bits (pa_bits {self.oas})")


DRIVERS = {
    "sprd": {
        "format": "sprd",
        "config": {},
        "description": "Unisoc IOMMU, EX and VAU (sprd-iommu.c): aperture [0, 256M)",
    },
}
