"""NVIDIA Tegra memory-controller SMMU page tables (drivers/iommu/tegra-smmu.c).

Two levels of 1024 32-bit entries, one 4 KiB page each, over a 32-bit IOVA: the page directory
(PD) indexed by iova[31:22] (`iova_pd_index`, SMMU_PDE_SHIFT), page tables (PT) by iova[21:12]
(`iova_pt_index`, SMMU_PTE_SHIFT). Only 4 KiB pages.

Address fields hold a page frame number, not an address: `pfn_mask` =
BIT_MASK(num_address_bits - 12) - 1 (`tegra_smmu_probe`), 20 bits on Tegra30/114 (32 address
bits) and 22 on Tegra124/210 (34). Attribute bits: READABLE 31, WRITABLE 30, NONSECURE 29, and
for PDEs NEXT 28 (SMMU_PDE_*/SMMU_PTE_*).

There is no valid bit: a PTE of 0 is unmapped (`__tegra_smmu_unmap`, `tegra_smmu_iova_to_phys`),
and a mapped PTE is never 0 because NONSECURE is always set (`__tegra_smmu_map`).
"""

from __future__ import annotations

from typing import Any

from .base import (
    INVALID,
    IOMMU_READ,
    IOMMU_WRITE,
    LEAF,
    TABLE,
    ConfigError,
    Descriptor,
    Level,
    PageTable,
    prot_str,
)
from .lazy import np

SMMU_PTE_SHIFT = 12
SPAGE_SIZE = 1 << SMMU_PTE_SHIFT
U32 = 0xFFFF_FFFF
SMMU_PDE_READABLE = SMMU_PTE_READABLE = 1 << 31
SMMU_PDE_WRITABLE = SMMU_PTE_WRITABLE = 1 << 30
SMMU_PDE_NONSECURE = SMMU_PTE_NONSECURE = 1 << 29
SMMU_PDE_NEXT = 1 << 28
SMMU_PDE_ATTR = SMMU_PDE_READABLE | SMMU_PDE_WRITABLE | SMMU_PDE_NONSECURE


class TegraSmmu(PageTable):
    leaf_size_is_block = True  # 4K pages only
    name = "tegra-smmu"
    description = "NVIDIA Tegra30..210 SMMU: PD/PT of 1024 PFN entries, 4K pages, no valid bit"
    kernel_source = "drivers/iommu/tegra-smmu.c"
    entry_size = 4
    frees_empty_tables = True  # tegra_smmu_pte_put_use: a PT whose use count drops to 0 is freed, its PDE zeroed
    config_defaults = {"address_bits": 32}
    root_register = "ptb_data"
    prot_key_mask = SMMU_PTE_READABLE | SMMU_PTE_WRITABLE  # leaf_prot reads only these
    # legacy_iova_to_phys is the base's: tegra_smmu_iova_to_phys finds the PT through the software
    # as->pts[] (non-NULL exactly when the driver wrote a PDE), gives 0 when there is none or the PTE
    # is 0, else SMMU_PFN_PHYS(pte & pfn_mask) + offset.

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        bits = config.get("address_bits", 32)
        if bits not in (32, 34):
            raise ConfigError("address_bits", f"{bits!r}: the memory controller's num_address_bits is 32 "
                                              "(Tegra30/114) or 34 (Tegra124/210)")
        self.address_bits = int(bits)
        self.pfn_bits = self.address_bits - SMMU_PTE_SHIFT
        self.pfn_mask = (1 << self.pfn_bits) - 1  # BIT_MASK(num_address_bits - SMMU_PTE_SHIFT) - 1
        self.levels = [Level(1, 22, 10), Level(2, 12, 10)]
        self.page_sizes = [SPAGE_SIZE]
        self.oas = self.address_bits
        self.windows = [(0, 1 << 32)]  # aperture_end = 0xffffffff
        hi = self.pfn_bits - 1
        self._pde = Descriptor("pde", 32, ("readable", 31, 31), ("writable", 30, 30), ("nonsecure", 29, 29),
                               ("next", 28, 28), ("pfn", hi, 0))
        self._pte = Descriptor("pte", 32, ("readable", 31, 31), ("writable", 30, 30), ("nonsecure", 29, 29),
                               ("pfn", hi, 0))

    def root_from_register(self, value: int) -> list[int]:
        """SMMU_PTB_DATA holds SMMU_PTB_DATA_VALUE(pd_dma, attr) = (pd_dma >> 12) | attr, the
        attributes in bits 31:29; the PD's PFN is the low pfn_mask bits."""
        if value >> 32:
            raise ValueError(f"ptb_data {value:#x} does not fit the 32-bit SMMU_PTB_DATA register")
        return [(value & self.pfn_mask) << SMMU_PTE_SHIFT]

    # -- decode ------------------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        if lvl.num == 1:
            # the driver writes PDEs as SMMU_MK_PDE(dma, SMMU_PDE_ATTR | SMMU_PDE_NEXT) or 0
            return TABLE if raw & SMMU_PDE_NEXT else INVALID
        return LEAF if raw else INVALID  # no valid bit: 0 is unmapped

    def next_table(self, raw: int, lvl: Level) -> int:
        return (raw & self.pfn_mask) << SMMU_PTE_SHIFT  # smmu_pde_to_dma

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        return (raw & self.pfn_mask) << SMMU_PTE_SHIFT  # SMMU_PFN_PHYS(*pte & pfn_mask)

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        return ((IOMMU_READ if raw & SMMU_PTE_READABLE else 0)
                | (IOMMU_WRITE if raw & SMMU_PTE_WRITABLE else 0))

    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        return self._pde if lvl.num == 1 else self._pte

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            return f"page table at {self.next_table(raw, lvl):#x} (PFN {raw & self.pfn_mask:#x})"
        if kind == LEAF:
            return (f"4 KiB page at PA {self.leaf_phys(raw, lvl):#x} (PFN {raw & self.pfn_mask:#x}), "
                    f"{prot_str(self.leaf_prot(raw, lvl))}")
        if raw:
            return "NEXT (bit 28) clear: not a page-table pointer (the driver never writes such a PDE)"
        return "empty (no valid bit: 0 is unmapped)"

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == INVALID:
            return 0
        top = 28 if lvl.num == 1 else 29  # attribute bits start here
        return raw & ((1 << top) - 1) & ~self.pfn_mask

    # -- vectorised --------------------------------------------------------------------------
    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64)
        if lvl.num == 1:
            return np.where((r & np.uint64(SMMU_PDE_NEXT)) != 0, TABLE, INVALID).astype(np.int8)
        return np.where(r != 0, LEAF, INVALID).astype(np.int8)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), SPAGE_SIZE, dtype=np.uint64)

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return (raw.astype(np.uint64) & np.uint64(self.pfn_mask)) << np.uint64(SMMU_PTE_SHIFT)

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.int64)
        return ((r >> 31) & 1) * IOMMU_READ | ((r >> 30) & 1) * IOMMU_WRITE

    def reserved_bits_vec(self, raw: np.ndarray, lvl: Level, kinds: np.ndarray) -> np.ndarray:
        top = 28 if lvl.num == 1 else 29
        mask = ((1 << top) - 1) & ~self.pfn_mask
        return np.where(kinds == INVALID, np.uint64(0), raw.astype(np.uint64) & np.uint64(mask))

    # -- encode (tegra_smmu_map) -----------------------------------------------------------------
    def encode_table(self, table: int, lvl: Level) -> int:
        return ((table >> SMMU_PTE_SHIFT) | SMMU_PDE_ATTR | SMMU_PDE_NEXT) & U32  # SMMU_MK_PDE

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        attrs = SMMU_PTE_NONSECURE
        if prot & IOMMU_READ:
            attrs |= SMMU_PTE_READABLE
        if prot & IOMMU_WRITE:
            attrs |= SMMU_PTE_WRITABLE
        return ((phys >> SMMU_PTE_SHIFT) | attrs) & U32  # SMMU_PHYS_PFN(paddr) | pte_attrs

    def encode_leaf_vec(self, phys: np.ndarray, pgsize: int, lvl: Level, prot: int) -> np.ndarray:
        pfn = phys.astype(np.uint64) >> np.uint64(SMMU_PTE_SHIFT)
        return (pfn | np.uint64(self.encode_leaf(0, pgsize, lvl, prot))) & np.uint64(U32)

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        # prot 0 still writes NONSECURE: a mapping without access; the PFN must fit pfn_mask
        if (phys + size - 1) >> self.oas:
            raise ValueError(f"phys {phys:#x}+{size:#x} is beyond address_bits ({self.oas})")


DRIVERS = {
    "tegra-smmu": {
        "format": "tegra-smmu",
        "config": {"address_bits": 32},
        "description": "NVIDIA Tegra SMMU (tegra-smmu.c): address_bits 32 (Tegra30/114) or 34 (Tegra124/210)",
    },
}
