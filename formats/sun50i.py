"""Allwinner sun50i (H6) IOMMU page tables (drivers/iommu/sun50i-iommu.c).

Two levels of 32-bit entries over a 32-bit IOVA: the directory table (DT) of NUM_DT_ENTRIES =
4096 entries (16 KiB) indexed by iova[31:20] (SUN50I_IOVA_DTE_MASK), page tables of
NUM_PT_ENTRIES = 256 entries (1 KiB, kmem cache aligned to PT_SIZE) indexed by iova[19:12]
(SUN50I_IOVA_PTE_MASK). Only 4 KiB pages (pgsize_bitmap SZ_4K), one per map call.

A DTE is valid only when its attribute bits [1:0] are exactly 01 (`sun50i_dte_is_pt_valid`);
a PTE when bit 1 is set (SUN50I_PTE_PAGE_VALID). PTE bits [7:4] hold the ACI, the index of an
authority-control domain (`enum sun50i_iommu_aci`: 1 none, 2 read, 3 write, 4 read/write).
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

SPAGE_SIZE = 1 << 12
U32 = 0xFFFF_FFFF
SUN50I_DTE_PT_ADDRESS_MASK = 0xFFFF_FC00  # GENMASK(31, 10)
SUN50I_DTE_PT_ATTRS = 0x3  # GENMASK(1, 0)
SUN50I_DTE_PT_VALID = 1
SUN50I_PTE_PAGE_ADDRESS_MASK = 0xFFFF_F000  # GENMASK(31, 12)
SUN50I_PTE_ACI_MASK = 0xF0  # GENMASK(7, 4)
SUN50I_PTE_PAGE_VALID = 1 << 1
# enum sun50i_iommu_aci
ACI_DO_NOT_USE, ACI_NONE, ACI_RD, ACI_WR, ACI_RD_WR = 0, 1, 2, 3, 4
ACI_NAMES = {ACI_DO_NOT_USE: "DO_NOT_USE", ACI_NONE: "NONE", ACI_RD: "RD", ACI_WR: "WR", ACI_RD_WR: "RD_WR"}
# ACI -> what sun50i_iommu_enable lets masters do (IOMMU_DM_AUT_CTRL_REG); RD_WR is left at reset
ACI_PROT = {ACI_NONE: 0, ACI_RD: IOMMU_READ, ACI_WR: IOMMU_WRITE, ACI_RD_WR: IOMMU_READ | IOMMU_WRITE}


def prot_to_aci(prot: int) -> int:
    """sun50i_mk_pte's choice of ACI."""
    r, w = prot & IOMMU_READ, prot & IOMMU_WRITE
    if r and w:
        return ACI_RD_WR
    if r:
        return ACI_RD
    if w:
        return ACI_WR
    return ACI_NONE


class Sun50i(PageTable):
    leaf_size_is_block = True  # 4K pages only
    name = "sun50i"
    description = "Allwinner sun50i (H6) IOMMU: DT 4096 x PT 256, 4K pages with an ACI permission index"
    kernel_source = "drivers/iommu/sun50i-iommu.c"
    entry_size = 4
    config_defaults = {"pa_bits": 32}
    root_register = "ttb"
    prot_key_mask = SUN50I_PTE_ACI_MASK  # leaf_prot reads only the ACI
    # legacy_iova_to_phys is the base's: sun50i_iommu_iova_to_phys gives page address + iova[11:0],
    # 0 when the DTE or PTE is invalid.

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        pa_bits = config.get("pa_bits", 32)
        if pa_bits is None:
            pa_bits = 32
        if not isinstance(pa_bits, int) or not 13 <= pa_bits <= 32:
            raise ConfigError("pa_bits", f"{pa_bits!r}: sun50i PTEs hold a 32-bit PA (13..32)")
        self.levels = [Level(1, 20, 12), Level(2, 12, 8)]
        self.page_sizes = [SPAGE_SIZE]
        self.oas = pa_bits
        self.windows = [(0, 1 << 32)]  # aperture_end = DMA_BIT_MASK(32)
        self._dte = Descriptor("dte", 32, ("pt_address", 31, 10), ("attrs", 1, 0))
        self._pte = Descriptor("pte", 32, ("page_address", 31, 12), ("aci", 7, 4), ("valid", 1, 1))

    def root_from_register(self, value: int) -> list[int]:
        """IOMMU_TTB_REG holds the DT's DMA address (`sun50i_iommu_enable`)."""
        if value >> 32:
            raise ValueError(f"ttb {value:#x} does not fit the 32-bit IOMMU_TTB_REG")
        return [value]

    # -- decode ------------------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        if lvl.num == 1:
            return TABLE if raw & SUN50I_DTE_PT_ATTRS == SUN50I_DTE_PT_VALID else INVALID
        return LEAF if raw & SUN50I_PTE_PAGE_VALID else INVALID

    def next_table(self, raw: int, lvl: Level) -> int:
        return raw & SUN50I_DTE_PT_ADDRESS_MASK  # sun50i_dte_get_pt_address

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        return raw & SUN50I_PTE_PAGE_ADDRESS_MASK  # sun50i_pte_get_page_address

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        return ACI_PROT.get((raw & SUN50I_PTE_ACI_MASK) >> 4, 0)

    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        return self._dte if lvl.num == 1 else self._pte

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            return f"page table at {self.next_table(raw, lvl):#x}"
        if kind == LEAF:
            aci = (raw & SUN50I_PTE_ACI_MASK) >> 4
            return (f"4 KiB page at PA {self.leaf_phys(raw, lvl):#x}, ACI {ACI_NAMES.get(aci, aci)} "
                    f"({prot_str(self.leaf_prot(raw, lvl))})")
        if raw and lvl.num == 1:
            return "attribute bits are not 01: not a page-table pointer"
        return "valid bit (1) clear" if raw else "empty"

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == INVALID:
            return 0
        if lvl.num == 1:
            return raw & 0x3FC  # [9:2] reserved
        bad = raw & 0xF0D  # [11:8], [3:2] and [0] reserved
        if (raw & SUN50I_PTE_ACI_MASK) >> 4 not in ACI_PROT:
            bad |= raw & SUN50I_PTE_ACI_MASK  # ACI 0 (DO_NOT_USE) or beyond the enum
        return bad

    # -- vectorised --------------------------------------------------------------------------
    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64)
        if lvl.num == 1:
            return np.where((r & np.uint64(3)) == 1, TABLE, INVALID).astype(np.int8)
        return np.where((r & np.uint64(SUN50I_PTE_PAGE_VALID)) != 0, LEAF, INVALID).astype(np.int8)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), SPAGE_SIZE, dtype=np.uint64)

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return raw.astype(np.uint64) & np.uint64(SUN50I_PTE_PAGE_ADDRESS_MASK)

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        aci = (raw.astype(np.int64) >> 4) & 0xF
        table = np.zeros(16, dtype=np.int64)
        for a, p in ACI_PROT.items():
            table[a] = p
        return table[aci]

    def reserved_bits_vec(self, raw: np.ndarray, lvl: Level, kinds: np.ndarray) -> np.ndarray:
        r = raw.astype(np.uint64)
        if lvl.num == 1:
            bad = r & np.uint64(0x3FC)
        else:
            aci = (r >> np.uint64(4)) & np.uint64(0xF)
            bad_aci = (aci == 0) | (aci > ACI_RD_WR)
            bad = (r & np.uint64(0xF0D)) | np.where(bad_aci, r & np.uint64(SUN50I_PTE_ACI_MASK), np.uint64(0))
        return np.where(kinds == INVALID, np.uint64(0), bad)

    # -- encode (sun50i_iommu_map) ---------------------------------------------------------------
    def encode_table(self, table: int, lvl: Level) -> int:
        return (table & SUN50I_DTE_PT_ADDRESS_MASK) | SUN50I_DTE_PT_VALID  # sun50i_mk_dte

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        # sun50i_mk_pte
        return (phys & SUN50I_PTE_PAGE_ADDRESS_MASK) | (prot_to_aci(prot) << 4) | SUN50I_PTE_PAGE_VALID

    def encode_leaf_vec(self, phys: np.ndarray, pgsize: int, lvl: Level, prot: int) -> np.ndarray:
        addr = phys.astype(np.uint64) & np.uint64(SUN50I_PTE_PAGE_ADDRESS_MASK)
        return addr | np.uint64(self.encode_leaf(0, pgsize, lvl, prot))

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        # prot 0 maps with ACI_NONE; the PA is masked to 32 bits by sun50i_mk_pte
        if (phys + size - 1) >> self.oas:
            raise ValueError(f"phys {phys:#x}+{size:#x} is beyond pa_bits ({self.oas})")


DRIVERS = {
    "sun50i": {
        "format": "sun50i",
        "config": {},
        "description": "Allwinner sun50i-h6 IOMMU (sun50i-iommu.c)",
    },
}
