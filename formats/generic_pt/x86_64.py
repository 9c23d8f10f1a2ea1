"""x86-64 4/5-level table (generic_pt fmt/x86_64.h, iommu_x86_64.c): Intel VT-d first stage
(sign-extended, intel_iommu_domain_alloc_first_stage) and AMD IOMMU v2 guest tables (47 or 56
bits with no sign extension, amd_iommu_domain_alloc_paging_v2).

Levels: PTE 0, PDE 1, PDPTE 2, PML4E 3, PML5E 4; top_level 3 or 4.
Bits: P 0, RW 1, U 2, A 5, D 6, PS 7 (a leaf at levels 1 and 2), OA [51:12], XD 63; software
bits 9, 11, 52..62 (x86_64_pt_sw_bit).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..base import (
    INVALID,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_READ,
    IOMMU_WRITE,
    LEAF,
    TABLE,
    U64,
    ConfigError,
    Descriptor,
    Level,
)
from ..lazy import np
from .common import GenericPt, genmask

P, RW, U = 1 << 0, 1 << 1, 1 << 2  # X86_64_FMT_P, _RW, _U
PWT, PCD = 1 << 3, 1 << 4
A, D, PS = 1 << 5, 1 << 6, 1 << 7  # X86_64_FMT_A, _D, _PS
G = 1 << 8
SW0 = 1 << 9  # x86_64_pt_sw_bit(0): SW_BIT_CACHE_FLUSH_DONE on tables under DMA_INCOHERENT
SW1 = 1 << 11
OA = genmask(51, 12)  # X86_64_FMT_OA
SW_HIGH = genmask(62, 52)
XD = 1 << 63  # X86_64_FMT_XD


class X86_64(GenericPt):  # noqa: N801 - the registry names it so
    name = "x86-64"
    description = "x86-64 4/5-level table (generic_pt x86_64): VT-d first stage (sign-extended), AMD v2"
    prefix = "x86_64"
    root_register = "fsptptr"
    max_top_level = 4
    max_va_lg2 = 57
    max_oa_lg2 = 52
    top_phys_mask = genmask(51, 12)  # AMD GCR3 base / VT-d FSPTPTR
    supported_features: ClassVar[tuple[str, ...]] = (
        "sign-extend", "flush-range", "flush-range-no-gaps", "x86-64-amd-encrypt-tables", "dma-incoherent")
    fmt_features: ClassVar[tuple[str, ...]] = ("x86-64-amd-encrypt-tables",)
    has_sme = True
    encrypt_feature = "x86-64-amd-encrypt-tables"
    prot_key_mask: ClassVar[int | None] = RW | XD
    config_defaults: ClassVar[dict[str, Any]] = {
        "levels": None, "vasz": None, "oasz": 52, "features": ["sign-extend", "flush-range"],
        "pgsize_bitmap": None, "sme_me_mask": 0,
    }

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.encrypt = self.encrypt_feature in self.features and self.sme_me_mask != 0
        self.sme = self.sme_me_mask if self.encrypt else 0
        self.prot_key_mask = RW | XD | self.sme  # type: ignore[misc]  # the C-bit decides IOMMU_MMIO

    def default_levels(self, vasz: int | None) -> int:
        """The older x86_64_pt_iommu_fmt_init's rule: (vasz - 31) / 9 + 2 top level."""
        if vasz is None:
            return 4
        return 5 if vasz > 48 else 4

    def default_vasz(self, levels: int) -> int:
        return 48 if levels == 4 else 57

    def fmt_init(self, top: int, vasz: int) -> int:
        if top not in (3, 4):
            raise ConfigError("levels", f"x86-64 takes 4 or 5 levels (top_level 3 or 4), not {top + 1} "
                                        f"(x86_64_pt_iommu_fmt_init: -EOPNOTSUPP)")
        return vasz

    def can_have_leaf(self, level: int) -> bool:
        return level <= 2  # x86_64_pt_can_have_leaf

    # -- roots -------------------------------------------------------------------------------------
    def root_from_register(self, value: int) -> list[int]:
        """The first-stage table pointer word: bits [51:12] (pt_iommu_x86_64_hw_info gcr3_pt).
        It is the VT-d scalable PASID entry's quadword 2 (FSPTPTR, with SRE 0 and FLPM [3:2]) or
        the AMD GCR3 table entry (GCR3_VALID 0, with the C-bit under SME): the low 12 bits
        carry flags and are ignored. Levels come from `levels:` (FLPM / the DTE's GPT level)."""
        return [value & OA & ~self.sme_me_mask]

    # -- per-entry hooks ---------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        if not raw & P:
            return INVALID
        if lvl.num == 0 or (lvl.num <= 2 and raw & PS):
            return LEAF
        return TABLE

    def next_table(self, raw: int, lvl: Level) -> int:
        return raw & OA & ~self.sme  # x86_64_pt_table_pa, __sme_clr with AMD_ENCRYPT_TABLES

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        return raw & OA & ~self.sme  # x86_64_pt_entry_oa

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        # set_prot never leaves a page unreadable: read-only is RW clear
        prot = IOMMU_READ | (IOMMU_WRITE if raw & RW else 0) | (IOMMU_NOEXEC if raw & XD else 0)
        if self.sme and not raw & self.sme:
            prot |= IOMMU_MMIO
        return prot

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == TABLE:
            ok = P | RW | U | A | OA | self.sme | (SW0 if "dma-incoherent" in self.features else 0)
            return raw & ~ok & U64
        if kind == LEAF:
            ok = P | RW | U | A | D | XD | OA | self.sme | (PS if lvl.num else 0)
            bad = raw & ~ok & U64
            if lvl.num:
                bad |= raw & OA & (lvl.block - 1)  # PAT / reserved bits of a 2M or 1G page
            return bad
        return raw & U64

    def leaf_vec(self, r: np.ndarray, lvl: Level) -> np.ndarray:
        if lvl.num == 0:
            return np.ones(len(r), dtype=bool)
        if lvl.num > 2:
            return np.zeros(len(r), dtype=bool)
        return (r & np.uint64(PS)) != 0

    def next_table_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return raw.astype(np.uint64, copy=False) & np.uint64(OA & ~self.sme)

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return raw.astype(np.uint64, copy=False) & np.uint64(OA & ~self.sme)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), lvl.block, dtype=np.uint64)

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64, copy=False)
        prot = (IOMMU_READ | ((r & np.uint64(RW)) != 0).astype(np.int64) * IOMMU_WRITE
                | ((r & np.uint64(XD)) != 0).astype(np.int64) * IOMMU_NOEXEC)
        if self.sme:
            prot |= ((r & np.uint64(self.sme)) == 0).astype(np.int64) * IOMMU_MMIO
        return prot.astype(np.int64)

    # -- encoder -----------------------------------------------------------------------------------
    def set_prot(self, prot: int) -> int:
        """x86_64_pt_iommu_set_prot: U|A always, RW|D for IOMMU_WRITE, the C-bit with
        AMD_ENCRYPT_TABLES unless IOMMU_MMIO. IOMMU_NOEXEC is not mapped to XD."""
        pte = U | A | ((RW | D) if prot & IOMMU_WRITE else 0)
        if self.encrypt and not prot & IOMMU_MMIO:
            pte |= self.sme_me_mask
        return pte

    def encode_table(self, table: int, lvl: Level) -> int:
        """x86_64_pt_install_table: P|RW|U|A|OA (+C-bit); SW bit 0 once flushed under
        DMA_INCOHERENT."""
        return P | RW | U | A | (table & OA) | self.sme | (SW0 if "dma-incoherent" in self.features else 0)

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        """x86_64_pt_install_leaf_entry: P | OA | attrs | PS above level 0."""
        return P | (phys & OA) | self.set_prot(prot) | (PS if lvl.num else 0)

    # -- explain -----------------------------------------------------------------------------------
    def make_schema(self, lvl: Level, kind: int) -> Descriptor:
        names = {0: "PTE", 1: "PDE", 2: "PDPTE", 3: "PML4E", 4: "PML5E"}
        n = names.get(lvl.num, "entry")
        if kind == TABLE:
            return Descriptor(f"{n} (table)", 64, ("xd", 63, 63), ("sw_62_52", 62, 52), ("table_addr", 51, 12),
                              ("sw1", 11, 11), ("sw0_flush_done", 9, 9), ("ps", 7, 7), ("a", 5, 5),
                              ("pcd", 4, 4), ("pwt", 3, 3), ("u", 2, 2), ("rw", 1, 1), ("p", 0, 0))
        if kind == LEAF:
            return Descriptor(f"{n} ({'page' if lvl.num == 0 else 'large page'})", 64, ("xd", 63, 63),
                              ("sw_62_52", 62, 52), ("oa", 51, 12), ("sw1", 11, 11), ("sw0", 9, 9), ("g", 8, 8),
                              ("ps_or_pat", 7, 7), ("d", 6, 6), ("a", 5, 5), ("pcd", 4, 4), ("pwt", 3, 3),
                              ("u", 2, 2), ("rw", 1, 1), ("p", 0, 0))
        return Descriptor(f"{n} (not present)", 64, ("p", 0, 0))


DRIVERS: dict[str, dict[str, Any]] = {
    "amd-v2": {
        "format": "x86-64",
        "config": {"levels": 4, "vasz": 47, "oasz": 52, "features": ["x86-64-amd-encrypt-tables", "flush-range"]},
        "description": "AMD IOMMU v2 guest table (amd_iommu_domain_alloc_paging_v2: 47 bits / 4 levels, or 56 / 5 "
                       "with a 5-level GPT; no sign-extend so one table serves PASID 0 and others; root in the "
                       "GCR3 table entry)",
    },
    "intel-fs": {
        "format": "x86-64",
        "config": {"levels": 4, "vasz": 48, "oasz": 52, "features": ["sign-extend", "flush-range"]},
        "description": "Intel VT-d first stage (intel_iommu_domain_alloc_first_stage: 48 bits / 4 levels, 57 / 5 "
                       "with FL5LP and MGAW > 48; sign-extend; dma-incoherent without ECAP.SMPWC; 1G dropped "
                       "without CAP.FL1GP; root FSPTPTR in the PASID entry)",
    },
}
