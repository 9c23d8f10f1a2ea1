"""TI OMAP IOMMU page tables (drivers/iommu/omap-iommu.c, omap-iopgtable.h).

Two levels of 32-bit entries over a 32-bit IOVA: the L1 "iopgd" of PTRS_PER_IOPGD = 4096 entries
(16 KiB, 16 KiB aligned for MMU_TTB) indexed by da[31:20] (`iopgd_index`), the L2 "iopte" of
PTRS_PER_IOPTE = 256 entries (1 KiB, `iopte_cachep` aligned to its size) indexed by da[19:12]
(`iopte_index`). Leaves: 16 MiB supersection (16 identical L1 entries, `iopgd_alloc_super`),
1 MiB section, 64 KiB large page (16 identical L2 entries, `iopte_alloc_large`), 4 KiB small page.

`omap_iommu_map` ignores IOMMU_READ/WRITE; the only attribute bits are endianness, element size
and mixed (`get_iopte_attr`), and `iotlb_init_entry` always passes little-endian, 8-bit, not
mixed, so every attribute bit the driver writes is 0.
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
)
from .lazy import np

IOSUPER_SIZE, IOSECTION_SIZE, IOLARGE_SIZE, IOPTE_SIZE = 1 << 24, 1 << 20, 1 << 16, 1 << 12
U32 = 0xFFFF_FFFF
IOPGD_TABLE, IOPGD_SECTION = 1, 2
IOPGD_SUPER = (1 << 18) | IOPGD_SECTION
IOPTE_SMALL, IOPTE_LARGE = 2, 1
IOPGD_PAGE_MASK = ~((1 << 10) - 1) & U32  # iopgd_page_paddr


def l1_kind(raw: int) -> str:
    """iopgd_is_table / iopgd_is_section / iopgd_is_super, as iopgtable_lookup_entry and
    omap_iommu_iova_to_phys test them; anything else is "bogus pgd" (a miss)."""
    if raw == 0:
        return "empty"
    if raw & 3 == IOPGD_TABLE:
        return "table"
    if raw & (IOPGD_SUPER | 3) == IOPGD_SECTION:
        return "section"
    if raw & (IOPGD_SUPER | 3) == IOPGD_SUPER:
        return "supersection"
    return "bogus"


def l2_kind(raw: int) -> str:
    """iopte_is_small (bit 1 set) / iopte_is_large (01) / otherwise "bogus pte"."""
    if raw & 2 == IOPTE_SMALL:
        return "small-page"
    if raw & 3 == IOPTE_LARGE:
        return "large-page"
    return "empty" if raw == 0 else "bogus"


class Omap(PageTable):
    name = "omap"
    description = "TI OMAP IOMMU: iopgd 16M (x16) supersections / 1M sections, iopte 64K (x16) / 4K pages"
    kernel_source = "drivers/iommu/omap-iommu.c, drivers/iommu/omap-iopgtable.h"
    entry_size = 4
    frees_empty_tables = True  # iopgtable_clear_entry_core: an all-zero iopte table is freed, its iopgd zeroed
    config_defaults = {"pa_bits": 32}
    root_register = "mmu_ttb"
    prot_key_mask = 0  # no permission bits: every leaf is read/write
    # leaf_prot is the base's read/write: omap_iommu_map ignores prot. legacy_iova_to_phys is the
    # base's: omap_iommu_iova_to_phys tries L2 small/large, else L1 section/supersection
    # (omap_iommu_translate), and gives 0 (logging "bogus pgd/pte") on a miss.

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        pa_bits = config.get("pa_bits", 32)
        if pa_bits is None:
            pa_bits = 32
        if not isinstance(pa_bits, int) or not 24 <= pa_bits <= 32:
            raise ConfigError("pa_bits", f"{pa_bits!r}: OMAP IOMMU entries hold a 32-bit PA (24..32)")
        self.levels = [Level(1, 20, 12), Level(2, 12, 8)]
        self.page_sizes = [IOPTE_SIZE, IOLARGE_SIZE, IOSECTION_SIZE, IOSUPER_SIZE]  # OMAP_IOMMU_PGSIZES
        self.oas = pa_bits
        self.windows = [(0, 1 << 32)]
        # get_iopte_attr(): (mixed << 5) | endian | (elsz >> 3), shifted by 6 for 1M/16M entries
        attr_l1 = (("mixed", 17, 17), ("endian", 15, 15), ("elsz", 11, 10))
        attr_l2 = (("mixed", 11, 11), ("endian", 9, 9), ("elsz", 5, 4))
        self._super = Descriptor("iopgd supersection", 32, ("pa_31_24", 31, 24), ("super", 18, 18), *attr_l1,
                                 ("type", 1, 0))
        self._section = Descriptor("iopgd section", 32, ("pa_31_20", 31, 20), ("super", 18, 18), *attr_l1,
                                   ("type", 1, 0))
        self._table = Descriptor("iopgd table", 32, ("iopte_base", 31, 10), ("type", 1, 0))
        self._large = Descriptor("iopte large page", 32, ("pa_31_16", 31, 16), *attr_l2, ("type", 1, 0))
        self._small = Descriptor("iopte small page", 32, ("pa_31_12", 31, 12), *attr_l2, ("type", 1, 0))
        self._bogus = Descriptor("empty", 32, ("type", 1, 0))

    def root_from_register(self, value: int) -> list[int]:
        """MMU_TTB holds virt_to_phys(iopgd), which omap2_iommu_enable requires 16 KiB aligned."""
        if value >> 32:
            raise ValueError(f"mmu_ttb {value:#x} does not fit the 32-bit MMU_TTB register")
        if value & (16 * 1024 - 1):
            raise ValueError(f"mmu_ttb {value:#x} is not 16 KiB aligned (omap2_iommu_enable refuses it)")
        return [value]

    # -- decode ------------------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        k = l1_kind(raw) if lvl.num == 1 else l2_kind(raw)
        if k == "table":
            return TABLE
        return INVALID if k in ("empty", "bogus") else LEAF

    def next_table(self, raw: int, lvl: Level) -> int:
        return raw & IOPGD_PAGE_MASK

    def leaf_size(self, raw: int, lvl: Level) -> int:
        if lvl.num == 1:
            return IOSUPER_SIZE if raw & IOPGD_SUPER == IOPGD_SUPER else IOSECTION_SIZE
        return IOPTE_SIZE if raw & 2 else IOLARGE_SIZE

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        return raw & ~(self.leaf_size(raw, lvl) - 1) & U32  # omap_iommu_translate's mask

    kind_name_reads_raw = True

    def kind_name(self, raw: int, lvl: Level, kind: int) -> str:
        k = l1_kind(raw) if lvl.num == 1 else l2_kind(raw)
        return "invalid" if k == "empty" else k

    def _schema_for(self, raw: int, lvl: Level) -> Descriptor:
        k = l1_kind(raw) if lvl.num == 1 else l2_kind(raw)
        return {"table": self._table, "section": self._section, "supersection": self._super,
                "large-page": self._large, "small-page": self._small}.get(k, self._bogus)

    def fields(self, raw: int, lvl: Level, kind: int) -> dict[str, Any]:
        return self._schema_for(raw, lvl).decode(raw)

    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        if kind == TABLE:
            return self._table
        if kind == LEAF:
            return self._section if lvl.num == 1 else self._small
        return self._bogus

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            return f"iopte table at {self.next_table(raw, lvl):#x}"
        if kind == LEAF:
            size = self.leaf_size(raw, lvl)
            rep = " (16 identical entries)" if size in (IOSUPER_SIZE, IOLARGE_SIZE) else ""
            return f"{size >> 10} KiB at PA {self.leaf_phys(raw, lvl):#x}{rep}"
        if raw:
            return f"bogus {'pgd' if lvl.num == 1 else 'pte'}: the driver logs it and returns 0"
        return "empty"

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == INVALID:
            return 0
        ok = self._schema_for(raw, lvl).defined_mask()
        if lvl.num == 2 and raw & 2:
            ok &= ~1  # iopte_alloc_page writes IOPTE_SMALL (10): bit 0 is never set
        return raw & ~ok & U32

    # -- vectorised --------------------------------------------------------------------------
    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64)
        t = r & np.uint64(3)
        if lvl.num == 1:
            s = r & np.uint64(IOPGD_SUPER | 3)
            leaf = (s == IOPGD_SECTION) | (s == IOPGD_SUPER)
            return np.where(t == 1, TABLE, np.where(leaf, LEAF, INVALID)).astype(np.int8)
        return np.where((t == 1) | ((r & np.uint64(2)) != 0), LEAF, INVALID).astype(np.int8)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64)
        if lvl.num == 1:
            sup = (r & np.uint64(IOPGD_SUPER)) == IOPGD_SUPER
            return np.where(sup, np.uint64(IOSUPER_SIZE), np.uint64(IOSECTION_SIZE)).astype(np.uint64)
        small = (r & np.uint64(2)) != 0
        return np.where(small, np.uint64(IOPTE_SIZE), np.uint64(IOLARGE_SIZE)).astype(np.uint64)

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return raw.astype(np.uint64) & ~(self.leaf_size_vec(raw, lvl) - np.uint64(1)) & np.uint64(U32)

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), IOMMU_READ | IOMMU_WRITE, dtype=np.int64)

    def reserved_bits_vec(self, raw: np.ndarray, lvl: Level, kinds: np.ndarray) -> np.ndarray:
        r = raw.astype(np.uint64)
        if lvl.num == 1:
            sup = (r & np.uint64(IOPGD_SUPER | 3)) == IOPGD_SUPER
            ok = np.where(kinds == TABLE, np.uint64(self._table.defined_mask()),
                          np.where(sup, np.uint64(self._super.defined_mask()),
                                   np.uint64(self._section.defined_mask())))
        else:
            small = (r & np.uint64(2)) != 0
            ok = np.where(small, np.uint64(self._small.defined_mask() & ~1), np.uint64(self._large.defined_mask()))
        return np.where(kinds == INVALID, np.uint64(0), r & ~ok & np.uint64(U32))

    # -- encode (omap_iommu_map -> iopgtable_store_entry_core) ----------------------------------
    def encode_table(self, table: int, lvl: Level) -> int:
        return (table & U32) | IOPGD_TABLE  # iopte_alloc

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        attr = 0  # get_iopte_attr() of iotlb_init_entry's LE / ELSZ_8 / not mixed
        kind = {IOSUPER_SIZE: IOPGD_SUPER, IOSECTION_SIZE: IOPGD_SECTION, IOLARGE_SIZE: IOPTE_LARGE,
                IOPTE_SIZE: IOPTE_SMALL}[pgsize]
        return (phys & ~(pgsize - 1) & U32) | attr | kind

    def encode_leaf_vec(self, phys: np.ndarray, pgsize: int, lvl: Level, prot: int) -> np.ndarray:
        mask = np.uint64(~(pgsize - 1) & U32)
        return (phys.astype(np.uint64) & mask) | np.uint64(self.encode_leaf(0, pgsize, lvl, prot))

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        # prot is ignored; the PA is a u32 (iotlb_init_entry's pa)
        if (phys + size - 1) >> self.oas:
            raise ValueError(f"phys {phys:#x}+{size:#x} is beyond pa_bits ({self.oas})")


DRIVERS = {
    "omap": {
        "format": "omap",
        "config": {},
        "description": "TI OMAP IOMMU (omap-iommu.c): omap2/omap4/dra7 IPU and DSP MMUs",
    },
}
