"""AMD IOMMU v1 host page table (generic_pt fmt/amdv1.h, iommu_amdv1.c) and its iommufd selftest
variant amdv1_mock (fmt/iommu_mock.c: AMDV1_IOMMUFD_SELFTEST, 2 KiB granule).

PTE (enum in amdv1.h): PR bit 0, D bit 6, NextLevel [11:9], OA [51:12], FC 60, IR 61, IW 62.
NextLevel 1..6 above level 0 is a table (the value is the parent's own level,
amdv1pt_install_table); 0 is a leaf of the level's item size; 7 is a leaf whose size is encoded
in the OA field: a run of ones from PTE bit 12 ending below bit log2(size) - granule + 11, the
same word written into every item it covers (amdv1pt_install_leaf_entry). The mock stores every
address shifted by its granule (11), so PTE bit 12 is address bit 11.

The AMD driver (amd_iommu_domain_alloc_paging_v1) starts at mode 3 (starting_level 2) and grows
the top on demand (PT_FEAT_DYNAMIC_TOP, increase_top): each new top links the old one at index
0 and the DTE is rewritten with the new root and mode.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..base import (
    INVALID,
    IOMMU_MMIO,
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
from .common import GenericPt, ffz, genmask

PR = 1 << 0  # AMDV1PT_FMT_PR
A = 1 << 5  # the hardware's Accessed bit (not in the kernel's enum; the IOMMU may set it)
D = 1 << 6  # AMDV1PT_FMT_D
NL_SHIFT = 9
NL_MASK = genmask(11, 9)  # AMDV1PT_FMT_NEXT_LEVEL
NL_DEFAULT, NL_SIZE = 0, 7  # AMDV1PT_FMT_NL_DEFAULT, AMDV1PT_FMT_NL_SIZE
OA = genmask(51, 12)  # AMDV1PT_FMT_OA
OA_BITS = 40
FC = 1 << 60  # AMDV1PT_FMT_FC
IR = 1 << 61  # AMDV1PT_FMT_IR
IW = 1 << 62  # AMDV1PT_FMT_IW
SZ_512G = 1 << 39

# amd_iommu_types.h: the DTE's first quadword
DTE_FLAG_V, DTE_FLAG_TV = 1 << 0, 1 << 1
DTE_MODE_MASK = genmask(11, 9)
DTE_HOST_TRP = genmask(51, 12)


class AmdV1(GenericPt):
    name = "amdv1"
    description = "AMD IOMMU v1 host table (generic_pt amdv1): modes 1-6, dynamic top, NextLevel=7 page sizes"
    prefix = "amdv1"
    root_register: ClassVar[str | None] = "dte"
    granule_lg2 = 12
    max_top_level = 5
    max_va_lg2 = 64
    max_oa_lg2 = 52
    top_phys_mask = genmask(51, 12)  # "The DTE only has these bits for the top physical address"
    supported_features: ClassVar[tuple[str, ...]] = (
        "full-va", "dynamic-top", "flush-range", "flush-range-no-gaps", "amdv1-encrypt-tables",
        "amdv1-force-coherence")
    fmt_features: ClassVar[tuple[str, ...]] = ("amdv1-encrypt-tables", "amdv1-force-coherence")
    has_sme = True
    encrypt_feature = "amdv1-encrypt-tables"
    prot_key_mask: ClassVar[int | None] = IR | IW  # plus the C-bit, added per instance
    config_defaults: ClassVar[dict[str, Any]] = {
        "levels": 3, "vasz": None, "oasz": 52,
        # PT_FORCE_ENABLED_FEATURES of iommu_amdv1.c, and the driver's FLUSH_RANGE
        "features": ["dynamic-top", "amdv1-encrypt-tables", "amdv1-force-coherence", "flush-range"],
        "pgsize_bitmap": None, "sme_me_mask": 0,
    }

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.encrypt = self.encrypt_feature in self.features and self.sme_me_mask != 0
        self.sme = self.sme_me_mask if self.encrypt else 0
        self.prot_key_mask = IR | IW | self.sme  # type: ignore[misc]  # the C-bit decides IOMMU_MMIO

    # -- geometry (amdv1pt_*) ------------------------------------------------------------------
    def default_vasz(self, levels: int) -> int:
        if "dynamic-top" in self.features:
            return self.max_va_lg2
        return super().default_vasz(levels)

    def num_items_lg2(self, level: int) -> int:
        # amdv1pt_num_items_lg2: level 5 decodes VA[63:57] only
        return 7 if level == 5 else 9

    def can_have_leaf(self, level: int) -> bool:
        return level < self.max_top_level  # Table 15: the top-most level has no translations

    def possible_sizes(self, level: int) -> int:
        """amdv1pt_possible_sizes: every power of two from the item size over half the table,
        at most 2^51, never 512G (a hardware bug)."""
        if not self.can_have_leaf(level):
            return 0
        isz = self.item_lg2(level)
        return genmask(min(51, isz + self.num_items_lg2(level) - 1), isz) & ~SZ_512G

    def fmt_init(self, top: int, vasz: int) -> int:
        """amdv1pt_iommu_fmt_init. starting_level 0 is refused by the kernel (-EINVAL); a DTE
        may still say mode 1, which the hardware walks, so 1 level is accepted for decoding."""
        if top < 0 or top > self.max_top_level:
            raise ConfigError("levels", f"levels must be 1..{self.max_top_level + 1} (DTE mode; "
                                        f"starting_level + 1), not {top + 1}")
        max_vasz = self.max_va_lg2
        if "dynamic-top" not in self.features and top != self.max_top_level:
            max_vasz = self.granule_lg2 + 9 * (top + 1)
        return min(max_vasz, vasz)

    # -- roots -----------------------------------------------------------------------------------
    def root_from_register(self, value: int) -> list[int]:
        """The DTE's first quadword (set_dte_v1): Mode [11:9] = levels, Host Page Table Root
        Pointer [51:12] (with the SME C-bit when the tables are encrypted). V (0) and TV (1)
        are not required. Mode 0 means no translation, 7 is reserved: refused."""
        mode = (value & DTE_MODE_MASK) >> NL_SHIFT
        if mode == 0 or mode == 7:
            raise ValueError(f"DTE {value:#x}: mode {mode} has no page table (1..6 name the levels)")
        if mode != self.top_level + 1:
            self.reconfigure(mode)
        return [value & DTE_HOST_TRP & ~self.sme_me_mask]

    def dte(self, root: int, valid: bool = True) -> int:
        """The DTE quadword 0 the driver writes for a top at `root`."""
        v = (DTE_FLAG_V | DTE_FLAG_TV) if valid else 0
        return v | ((self.top_level + 1) << NL_SHIFT) | ((root | self.sme) & DTE_HOST_TRP) | IR | IW

    # -- per-entry hooks ---------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        """amdv1pt_load_entry_raw: PR clear is empty; level 0 or NextLevel 0/7 is an OA."""
        if not raw & PR:
            return INVALID
        nl = (raw >> NL_SHIFT) & 7
        if lvl.num == 0 or nl == NL_DEFAULT or nl == NL_SIZE:
            return LEAF
        return TABLE

    def _field(self, raw: int) -> int:
        return ((raw & ~self.sme) >> 12) & ((1 << OA_BITS) - 1)

    def next_table(self, raw: int, lvl: Level) -> int:
        return self._field(raw) << self.granule_lg2  # amdv1pt_table_pa

    def num_contig_lg2(self, raw: int, lvl: Level) -> int:
        """amdv1pt_entry_num_contig_lg2: ffz of the u32 starting at PTE bit
        11 + item_lg2 - granule (bit 11 is NextLevel's top bit at level 0)."""
        if (raw >> NL_SHIFT) & 7 == NL_DEFAULT:
            return 0
        return ffz((raw >> (11 + lvl.shift - self.granule_lg2)) & 0xFFFF_FFFF)

    def leaf_size(self, raw: int, lvl: Level) -> int:
        return 1 << (lvl.shift + self.num_contig_lg2(raw, lvl))

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        """amdv1pt_entry_oa: NextLevel 7 clears the run of ones (the size code); any NextLevel
        but 0 or 7 gives 0 (the kernel WARNs)."""
        oa = self._field(raw)
        nl = (raw >> NL_SHIFT) & 7
        if nl == NL_SIZE:
            oa &= oa + 1
        elif nl != NL_DEFAULT:
            return 0
        return oa << self.granule_lg2

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        prot = (IOMMU_READ if raw & IR else 0) | (IOMMU_WRITE if raw & IW else 0)
        if self.sme and not raw & self.sme:
            prot |= IOMMU_MMIO  # amdv1pt_iommu_set_prot skips __sme_set only for IOMMU_MMIO
        return prot

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == INVALID:
            return raw & U64  # the kernel only ever clears entries to 0
        nl = (raw >> NL_SHIFT) & 7
        if kind == TABLE:
            ok = PR | A | NL_MASK | OA | IR | IW | self.sme
            bad = raw & ~ok & U64
            if nl != lvl.num:  # the kernel writes the parent's level; other values skip levels
                bad |= raw & NL_MASK
            return bad
        ok = PR | A | D | NL_MASK | OA | FC | IR | IW | self.sme
        bad = raw & ~ok & U64
        if nl not in (NL_DEFAULT, NL_SIZE) or (nl == NL_SIZE and self.num_contig_lg2(raw, lvl) == 0):
            bad |= raw & NL_MASK
        return bad

    # -- vectorised hooks ----------------------------------------------------------------------
    def leaf_vec(self, r: np.ndarray, lvl: Level) -> np.ndarray:
        nl = (r >> np.uint64(NL_SHIFT)) & np.uint64(7)
        if lvl.num == 0:
            return np.ones(len(r), dtype=bool)
        return (nl == np.uint64(NL_DEFAULT)) | (nl == np.uint64(NL_SIZE))

    def _field_vec(self, r: np.ndarray) -> np.ndarray:
        return ((r & np.uint64(~self.sme & U64)) >> np.uint64(12)) & np.uint64((1 << OA_BITS) - 1)

    def next_table_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return self._field_vec(raw.astype(np.uint64, copy=False)) << np.uint64(self.granule_lg2)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64, copy=False)
        nl = (r >> np.uint64(NL_SHIFT)) & np.uint64(7)
        code = (r >> np.uint64(11 + lvl.shift - self.granule_lg2)) & np.uint64(0xFFFF_FFFF)
        low_zero = ~code & (code + np.uint64(1))  # the lowest clear bit, as a power of two
        contig = np.log2(low_zero.astype(np.float64)).astype(np.int64)
        lg2 = np.minimum(np.where(nl == np.uint64(NL_DEFAULT), 0, contig) + lvl.shift, 63)
        return np.left_shift(np.uint64(1), lg2.astype(np.uint64))

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64, copy=False)
        nl = (r >> np.uint64(NL_SHIFT)) & np.uint64(7)
        oa = self._field_vec(r)
        oa = np.where(nl == np.uint64(NL_SIZE), oa & (oa + np.uint64(1)),
                      np.where(nl == np.uint64(NL_DEFAULT), oa, np.uint64(0)))
        return oa.astype(np.uint64) << np.uint64(self.granule_lg2)

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64, copy=False)
        zero = np.int64(0)
        prot = (np.where((r & np.uint64(IR)) != 0, np.int64(IOMMU_READ), zero)
                | np.where((r & np.uint64(IW)) != 0, np.int64(IOMMU_WRITE), zero))
        if self.sme:
            prot |= np.where((r & np.uint64(self.sme)) == 0, np.int64(IOMMU_MMIO), zero)
        return prot.astype(np.int64)

    # -- encoder ----------------------------------------------------------------------------------
    def set_prot(self, prot: int) -> int:
        """amdv1pt_iommu_set_prot: FC with FORCE_COHERENCE, IR/IW from prot, the C-bit with
        ENCRYPT_TABLES unless IOMMU_MMIO."""
        pte = FC if "amdv1-force-coherence" in self.features else 0
        pte |= (IR if prot & IOMMU_READ else 0) | (IW if prot & IOMMU_WRITE else 0)
        if self.encrypt and not prot & IOMMU_MMIO:
            pte |= self.sme_me_mask
        return pte

    def encode_table(self, table: int, lvl: Level) -> int:
        """amdv1pt_install_table: PR | NextLevel = this level | OA | IR | IW (permissions are
        ANDed down the walk and kept in the leaf), __sme_set with ENCRYPT_TABLES."""
        return PR | (lvl.num << NL_SHIFT) | (((table >> self.granule_lg2) << 12) & OA) | IR | IW | self.sme

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        """amdv1pt_install_leaf_entry: NextLevel 0 for one item, else NextLevel 7 with
        2^(log2(size) - granule - 1) - 1 ORed into the OA field (written to every item)."""
        pte = PR | (((phys >> self.granule_lg2) << 12) & OA) | self.set_prot(prot)
        if pgsize != lvl.block:
            code = (1 << (pgsize.bit_length() - 1 - self.granule_lg2 - 1)) - 1
            pte |= (NL_SIZE << NL_SHIFT) | (code << 12)
        return pte

    # -- explain -----------------------------------------------------------------------------------
    def fields(self, raw: int, lvl: Level, kind: int) -> dict[str, Any]:
        sub = 1 if kind == LEAF and (raw >> NL_SHIFT) & 7 == NL_SIZE else 0
        key = (lvl.num, kind, sub)
        d = self._schemas.get(key)
        if d is None:
            d = self._schemas[key] = self._make_schema(kind, sub)
        return d.decode(raw)

    def make_schema(self, lvl: Level, kind: int) -> Descriptor:
        return self._make_schema(kind, 0)

    def _make_schema(self, kind: int, sub: int) -> Descriptor:
        # the address field holds addr >> PT_GRANULE_LG2SZ (12; 11 for the mock)
        unit = "pfn" if self.granule_lg2 == 12 else f"pfn{1 << self.granule_lg2 >> 10}k"
        if kind == TABLE:
            return Descriptor("amdv1 PDE", 64, ("iw", 62, 62), ("ir", 61, 61), (f"table_{unit}", 51, 12),
                              ("next_level", 11, 9), ("a", 5, 5), ("pr", 0, 0))
        if kind == LEAF and sub:
            return Descriptor("amdv1 PTE, NextLevel=7 page size", 64, ("iw", 62, 62), ("ir", 61, 61),
                              ("fc", 60, 60), (f"oa_{unit}_and_size_code", 51, 12), ("next_level", 11, 9),
                              ("d", 6, 6), ("a", 5, 5), ("pr", 0, 0))
        if kind == LEAF:
            return Descriptor("amdv1 PTE", 64, ("iw", 62, 62), ("ir", 61, 61), ("fc", 60, 60),
                              (f"oa_{unit}", 51, 12), ("next_level", 11, 9), ("d", 6, 6), ("a", 5, 5),
                              ("pr", 0, 0))
        return Descriptor("amdv1 not present", 64, ("pr", 0, 0))

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        text = super().note(raw, lvl, kind)
        if kind == LEAF:
            extra = []
            if raw & FC:
                extra.append("FC (force coherent)")
            if raw & D:
                extra.append("dirty")
            nl = (raw >> NL_SHIFT) & 7
            if nl == NL_SIZE:
                extra.append("NextLevel=7: size from the lowest zero bit of the address field")
            elif nl != NL_DEFAULT:
                extra.append(f"NextLevel={nl} at level 0: the kernel reads OA 0 (WARN)")
            if extra:
                text += "; " + ", ".join(extra)
        return text


class AmdV1Mock(AmdV1):
    name = "amdv1-mock"
    description = "iommufd selftest mock domain (generic_pt amdv1_mock): amdv1 with 2K pages, OA >> 11"
    prefix = "amdv1_mock"
    root_register = None  # amdv1pt_iommu_fmt_hw_info is compiled out under PT_FMT_VARIANT
    granule_lg2 = 11
    max_top_level = 4
    max_va_lg2 = 56
    max_oa_lg2 = 51
    supported_features: ClassVar[tuple[str, ...]] = ()  # iommu_mock.c: PT_SUPPORTED_FEATURES 0
    has_sme = False
    config_defaults: ClassVar[dict[str, Any]] = {
        "levels": 3, "vasz": 56, "oasz": 51, "features": [], "pgsize_bitmap": None,
    }

    def num_items_lg2(self, level: int) -> int:
        return 9


MOCK_PAGE_SIZE = 2048
MOCK_HUGE_PAGE_SIZE = 512 * MOCK_PAGE_SIZE

DRIVERS: dict[str, dict[str, Any]] = {
    "amd-v1": {
        "format": "amdv1",
        "config": {"levels": 3, "vasz": 64, "oasz": 52,
                   "features": ["dynamic-top", "amdv1-encrypt-tables", "amdv1-force-coherence", "flush-range"]},
        "description": "AMD IOMMU v1 host table (amd_iommu_domain_alloc_paging_v1: starting_level 2, grows on "
                       "demand; hw_max_vasz min(64, (hpt_level - 1) * 9 + 21), 52-bit OA; root in DTE[51:12], "
                       "mode in DTE[11:9])",
    },
    "iommufd-mock": {
        "format": "amdv1-mock",
        "config": {"levels": 3, "vasz": 56, "oasz": 51, "features": []},
        "description": "iommufd selftest MOCK_IOMMUPT_DEFAULT (mock_domain_alloc_pgtable: amdv1_mock, "
                       "starting_level 2 = 38-bit VA, 51-bit OA, no features; the aperture is set to "
                       "[1 << 24, 1 << 31))",
    },
    "iommufd-mock-huge": {
        "format": "amdv1-mock",
        "config": {"levels": 3, "vasz": 56, "oasz": 51, "features": [],
                   "pgsize_bitmap": MOCK_HUGE_PAGE_SIZE | 4096},
        "description": "iommufd selftest MOCK_IOMMUPT_HUGE: amdv1_mock with pgsize_bitmap "
                       "MOCK_HUGE_PAGE_SIZE (1M) | PAGE_SIZE",
    },
}
