"""Intel VT-d second-stage table (generic_pt fmt/vtdss.h, iommu_vtdss.c; VT-d spec 3.7, 9.8).

Levels: SS-PTE 0, SS-PDE 1, SS-PDPTE 2, SS-PML4E 3, SS-PML5E 4; top_level 2..4 (aw = top - 1).
Bits: R 0, W 1, PS 7 (a leaf at levels 1 and 2), A 8, D 9, SNP 11, OA [51:12]; software bits
10, 52..60, 63 (vtdss_pt_sw_bit). There is no present bit: an item is empty only if the whole
word is 0 (vtdss_pt_load_entry_raw), which is why set_prot refuses prot without R or W.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..base import (
    INVALID,
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

R, W = 1 << 0, 1 << 1  # VTDSS_FMT_R, VTDSS_FMT_W
X = 1 << 2  # execute (never set by the kernel)
EMT = genmask(5, 3)
IPAT = 1 << 6
PS = 1 << 7  # VTDSS_FMT_PS
A = 1 << 8  # VTDSS_FMT_A
D = 1 << 9  # VTDSS_FMT_D
SW0 = 1 << 10  # vtdss_pt_sw_bit(0): SW_BIT_CACHE_FLUSH_DONE on tables under DMA_INCOHERENT
SNP = 1 << 11  # VTDSS_FMT_SNP
OA = genmask(51, 12)  # VTDSS_FMT_OA
SW_HIGH = genmask(60, 52) | (1 << 63)  # vtdss_pt_sw_bit(1..10)

# Scalable-mode PASID table entry, quadword 0 (intel/pasid.h): P bit 0, AW [4:2], PGTT [8:6],
# SSPTPTR [63:12] (pasid_set_slptr with VTD_PAGE_MASK).
PASID_P = 1 << 0
PASID_AW = genmask(4, 2)
PASID_PGTT = genmask(8, 6)
PGTT_FL_ONLY, PGTT_SL_ONLY, PGTT_NESTED, PGTT_PT = 1, 2, 3, 4


class VtdSs(GenericPt):
    name = "vtdss"
    description = "Intel VT-d second stage (generic_pt vtdss): 3/4/5 levels, no present bit"
    prefix = "vtdss"
    root_register = "pasid_entry"
    max_top_level = 4
    max_va_lg2 = 57
    max_oa_lg2 = 52
    top_phys_mask = genmask(63, 12)  # "SSPTPTR is 4k aligned and limited by HAW"
    supported_features: ClassVar[tuple[str, ...]] = (
        "flush-range", "vtdss-force-coherence", "vtdss-force-writeable", "dma-incoherent")
    fmt_features: ClassVar[tuple[str, ...]] = ("vtdss-force-coherence", "vtdss-force-writeable")
    prot_key_mask: ClassVar[int | None] = R | W
    config_defaults: ClassVar[dict[str, Any]] = {
        "levels": None, "vasz": None, "oasz": 52, "features": ["flush-range"], "pgsize_bitmap": None,
    }

    def default_levels(self, vasz: int | None) -> int:
        """The older vtdss_pt_iommu_fmt_init's rule: > 48 bits 5 levels, > 39 4, else 3."""
        if vasz is None:
            return 4
        return 5 if vasz > 48 else 4 if vasz > 39 else 3

    def fmt_init(self, top: int, vasz: int) -> int:
        if not 2 <= top <= 4:
            raise ConfigError("levels", f"vtdss takes 3, 4 or 5 levels (top_level 2..4, AW 1..3), not {top + 1} "
                                        f"(vtdss_pt_iommu_fmt_init: -EOPNOTSUPP)")
        return vasz

    def can_have_leaf(self, level: int) -> bool:
        return level <= 2  # vtdss_pt_can_have_leaf

    # -- roots -------------------------------------------------------------------------------------
    def root_from_register(self, value: int) -> list[int]:
        """A scalable-mode PASID table entry's quadword 0: SSPTPTR [63:12], AW [4:2] (levels =
        AW + 2, pt_iommu_vtdss_hw_info), PGTT [8:6] (2 second-stage only, 3 nested; 0 taken as
        not given). The legacy context entry keeps AW in its upper quadword: give `root:` and
        `levels:` for it."""
        pgtt = (value & PASID_PGTT) >> 6
        if pgtt in (PGTT_FL_ONLY, PGTT_PT) or pgtt > PGTT_PT:
            what = {PGTT_FL_ONLY: "first-stage only (use x86-64)", PGTT_PT: "pass-through"}.get(pgtt, "reserved")
            raise ValueError(f"PASID entry {value:#x}: PGTT {pgtt} is {what}: no second-stage table")
        aw = (value & PASID_AW) >> 2
        if not 1 <= aw <= 3:
            raise ValueError(f"PASID entry {value:#x}: AW {aw} is not 1..3 (3, 4 or 5 levels)")
        if aw + 2 != self.top_level + 1:
            self.reconfigure(aw + 2)
        return [value & self.top_phys_mask]

    def pasid_entry(self, root: int) -> int:
        """Quadword 0 the driver writes (second-stage only, present)."""
        return (root & self.top_phys_mask) | (PGTT_SL_ONLY << 6) | ((self.top_level - 1) << 2) | PASID_P

    # -- per-entry hooks ---------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        if not raw:
            return INVALID
        if lvl.num == 0 or (lvl.num <= 2 and raw & PS):
            return LEAF
        return TABLE

    def next_table(self, raw: int, lvl: Level) -> int:
        return raw & OA  # vtdss_pt_table_pa

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        return raw & OA  # vtdss_pt_entry_oa

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        return (IOMMU_READ if raw & R else 0) | (IOMMU_WRITE if raw & W else 0)

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == TABLE:
            ok = R | W | A | OA | (SW0 if "dma-incoherent" in self.features else 0)
            return raw & ~ok & U64
        if kind == LEAF:
            ok = R | W | A | D | SNP | OA | (PS if lvl.num else 0)
            return raw & ~ok & U64
        return 0

    def present_vec(self, r: np.ndarray) -> np.ndarray:
        return r != np.uint64(0)

    def leaf_vec(self, r: np.ndarray, lvl: Level) -> np.ndarray:
        if lvl.num == 0:
            return np.ones(len(r), dtype=bool)
        if lvl.num > 2:
            return np.zeros(len(r), dtype=bool)
        return (r & np.uint64(PS)) != 0

    def next_table_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return raw.astype(np.uint64, copy=False) & np.uint64(OA)

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return raw.astype(np.uint64, copy=False) & np.uint64(OA)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), lvl.block, dtype=np.uint64)

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64, copy=False)
        return (((r & np.uint64(R)) != 0).astype(np.int64) * IOMMU_READ
                | ((r & np.uint64(W)) != 0).astype(np.int64) * IOMMU_WRITE)

    # -- encoder -----------------------------------------------------------------------------------
    def set_prot(self, prot: int) -> int:
        """vtdss_pt_iommu_set_prot."""
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            raise ValueError("prot needs r or w: vtdss has no present bit (-EINVAL)")
        if "vtdss-force-writeable" in self.features and not prot & IOMMU_WRITE:
            raise ValueError("read-only mappings are refused on a nest parent (vtdss-force-writeable, "
                             "ERRATA_772415_SPR17): -EINVAL")
        pte = (R if prot & IOMMU_READ else 0) | (W if prot & IOMMU_WRITE else 0)
        if "vtdss-force-coherence" in self.features:
            pte |= SNP
        return pte

    def encode_table(self, table: int, lvl: Level) -> int:
        """vtdss_pt_install_table: R | W | OA; SW bit 0 once flushed under DMA_INCOHERENT."""
        return R | W | (table & OA) | (SW0 if "dma-incoherent" in self.features else 0)

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        """vtdss_pt_install_leaf_entry: OA | prot bits | PS above level 0."""
        return (phys & OA) | self.set_prot(prot) | (PS if lvl.num else 0)

    # -- explain -----------------------------------------------------------------------------------
    def make_schema(self, lvl: Level, kind: int) -> Descriptor:
        names = {0: "SS-PTE", 1: "SS-PDE", 2: "SS-PDPTE", 3: "SS-PML4E", 4: "SS-PML5E"}
        n = names.get(lvl.num, "entry")
        if kind == TABLE:
            return Descriptor(f"{n} (table)", 64, ("sw_63", 63, 63), ("sw_60_52", 60, 52), ("table_addr", 51, 12),
                              ("sw0_flush_done", 10, 10), ("a", 8, 8), ("ps", 7, 7), ("x", 2, 2), ("w", 1, 1),
                              ("r", 0, 0))
        if kind == LEAF:
            return Descriptor(f"{n} (leaf)", 64, ("sw_63", 63, 63), ("sw_60_52", 60, 52), ("oa", 51, 12),
                              ("snp", 11, 11), ("d", 9, 9), ("a", 8, 8), ("ps", 7, 7), ("ipat", 6, 6),
                              ("emt", 5, 3), ("x", 2, 2), ("w", 1, 1), ("r", 0, 0))
        return Descriptor(f"{n} (empty: all zero)", 64, ("value", 63, 0))

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        text = super().note(raw, lvl, kind)
        if kind == LEAF and raw & SNP:
            text += "; SNP (snoop forced)"
        if kind in (LEAF, TABLE) and not raw & (R | W):
            text += "; neither R nor W: present (non-zero) but grants no access"
        if kind == INVALID:
            return "all zero: not present (vtdss has no present bit), the walk stops"
        return text


DRIVERS: dict[str, dict[str, Any]] = {
    "intel-ss": {
        "format": "vtdss",
        "config": {"levels": 4, "vasz": 48, "oasz": 52, "features": ["flush-range"]},
        "description": "Intel VT-d second stage (intel_iommu_domain_alloc_second_stage: top level and VA width "
                       "from MGAW/SAGAW (compute_vasz_lg2_ss), 52-bit OA, flush-range; vtdss-force-writeable for "
                       "a nest parent; root SSPTPTR/AW in the PASID or context entry)",
    },
}
