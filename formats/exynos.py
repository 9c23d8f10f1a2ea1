"""Samsung Exynos SYSMMU page tables (drivers/iommu/exynos-iommu.c).

Two levels of 32-bit little-endian entries over a 32-bit IOVA (`sysmmu_iova_t` is u32):
lv1 = 4096 entries indexed by iova[31:20] (`lv1ent_offset`, SECT_ORDER), lv2 = 256 entries
indexed by iova[19:12] (`lv2ent_offset`, NUM_LV2ENTRIES), 1 KiB each (`lv2table_kmem_cache`).
Leaves: 1 MiB section in lv1, 64 KiB large page (16 identical lv2 entries, SPAGES_PER_LPAGE) and
4 KiB small page in lv2.

The hardware version (`REG_MMU_VERSION`, `__sysmmu_get_version`) picks the encoding: before
v5 an entry holds PA bits as they are (`SYSMMU_PG_ENT_SHIFT` 0, 32-bit PA, prot in
`SYSMMU_LV1_PROT`/`SYSMMU_LV2_PROT`); from v5 on it holds PA >> 4 (`SYSMMU_V5_PG_ENT_SHIFT`,
36-bit PA, prot in `SYSMMU_V5_LV1_PROT`/`SYSMMU_V5_LV2_PROT`), and `pt_base` holds the lv1 PA >> 12
(`__sysmmu_set_ptbase`).

Every unmapped lv1 slot holds ZERO_LV2LINK, a link to one shared all-zero lv2 table
(`exynos_iommu_domain_alloc_paging`, "Workaround for System MMU v3.3"); `lv1ent_fault` counts it
as a fault, and so does this format. Its value is not in the config: `bind` learns it from the
tables (the only link value that several lv1 slots share, pointing at an all-zero table).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from iommuctl.memory import MemoryFault

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

SECT_SIZE, LPAGE_SIZE, SPAGE_SIZE = 1 << 20, 1 << 16, 1 << 12  # SECT/LPAGE/SPAGE_ORDER 20/16/12
NUM_LV1ENTRIES, NUM_LV2ENTRIES = 4096, 256
SPAGES_PER_LPAGE = LPAGE_SIZE // SPAGE_SIZE
U32 = 0xFFFF_FFFF
LV2_BASE_MASK = 0xFFFF_FFC0  # lv2table_base()

# prot & (IOMMU_READ|IOMMU_WRITE) -> bits (SYSMMU_SUPPORTED_PROT_BITS indexes these tables).
SYSMMU_LV1_PROT = (0, (1 << 15) | (1 << 10), 1 << 10, 1 << 10)  # write-only stored as read/write
SYSMMU_LV2_PROT = (0, (1 << 9) | (1 << 4), 1 << 4, 1 << 4)
SYSMMU_V5_LV1_PROT = (0, 1 << 4, 2 << 4, 3 << 4)
SYSMMU_V5_LV2_PROT = (0, 1 << 2, 2 << 2, 3 << 2)

_VERSION_RE = re.compile(r"\s*v?(\d+)\.(\d+)\s*")


def parse_version(value: Any) -> tuple[int, int]:
    """(major, minor) from "3.3"/"5.0" (MMU_MAJ_VER.MMU_MIN_VER), a bare major ("5"), or the raw
    REG_MMU_VERSION value (`__sysmmu_get_version`: 0x80000001 reads as 1.0, else MMU_RAW_VER)."""
    text = str(value).strip()
    m = _VERSION_RE.fullmatch(text)
    if m:
        major, minor = int(m.group(1)), int(m.group(2))
    else:
        try:
            n = int(text.lstrip("v"), 0)
        except ValueError:
            raise ConfigError("version", f"{value!r} is not an Exynos SYSMMU version "
                                         "(\"3.3\", \"5.0\", ... or the raw MMU_VERSION register)") from None
        if n < 16:
            major, minor = n, 0
        elif n == 0x8000_0001:
            major, minor = 1, 0
        else:
            raw = (n >> 21) & 0x7FF  # MMU_RAW_VER
            major, minor = raw >> 7, raw & 0x7F
    if not 1 <= major <= 15 or minor > 0x7F:  # MAKE_MMU_VER keeps 4 + 7 bits
        raise ConfigError("version", f"{value!r}: SYSMMU versions run from 1.0 to 15.127")
    return major, minor


class Exynos(PageTable):
    name = "exynos"
    description = "Samsung Exynos SYSMMU: lv1 1M sections / lv2 64K (x16) and 4K pages, v5+ entries hold PA>>4"
    kernel_source = "drivers/iommu/exynos-iommu.c"
    entry_size = 4
    config_defaults = {"version": "5.0", "pa_bits": None}
    root_register = "pt_base"
    # legacy_iova_to_phys is the base's: exynos_iommu_iova_to_phys reads a section, else (lv1ent_page)
    # a large then a small page, 0 on a miss; its IOVA is a u32 like the tables' index.

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.major, self.minor = parse_version(config.get("version", "5.0"))
        v5 = self.major >= 5
        self.shift = 4 if v5 else 0  # PG_ENT_SHIFT
        max_pa = 36 if v5 else 32  # dma_set_mask(DMA_BIT_MASK(36)) from v5 on
        pa_bits = config.get("pa_bits")
        if pa_bits is None:
            pa_bits = max_pa
        if not isinstance(pa_bits, int) or not 20 <= pa_bits <= max_pa:
            raise ConfigError("pa_bits", f"{pa_bits!r}: SYSMMU v{self.major}.{self.minor} entries hold "
                                         f"at most {max_pa} PA bits (20..{max_pa})")
        self.lv1_prot = SYSMMU_V5_LV1_PROT if v5 else SYSMMU_LV1_PROT
        self.lv2_prot = SYSMMU_V5_LV2_PROT if v5 else SYSMMU_LV2_PROT
        self.levels = [Level(1, 20, 12), Level(2, 12, 8)]
        self.page_sizes = [SPAGE_SIZE, LPAGE_SIZE, SECT_SIZE]
        self.oas = pa_bits
        self.windows = [(0, 1 << 32)]
        self.zero_link: int | None = None  # ZERO_LV2LINK, learnt by bind / set by init_tables
        s = self.shift
        if v5:
            self._sect = Descriptor("lv1 section", 32, ("pa_35_20", 31, 16), ("prot", 5, 4), ("type", 1, 0))
            self._link = Descriptor("lv1 page-table link", 32, ("lv2_base_35_10", 31, 6), ("type", 1, 0))
            self._large = Descriptor("lv2 large page", 32, ("pa_35_16", 31, 12), ("prot", 3, 2), ("type", 1, 0))
            self._small = Descriptor("lv2 small page", 32, ("pa_35_12", 31, 8), ("prot", 3, 2), ("type", 1, 0))
        else:
            self._sect = Descriptor("lv1 section", 32, ("pa_31_20", 31, 20), ("read_only", 15, 15),
                                    ("access", 10, 10), ("type", 1, 0))
            self._link = Descriptor("lv1 page-table link", 32, ("lv2_base_31_10", 31, 6), ("type", 1, 0))
            self._large = Descriptor("lv2 large page", 32, ("pa_31_16", 31, 16), ("read_only", 9, 9),
                                     ("access", 4, 4), ("type", 1, 0))
            self._small = Descriptor("lv2 small page", 32, ("pa_31_12", 31, 12), ("read_only", 9, 9),
                                     ("access", 4, 4), ("type", 1, 0))
        self._fault = Descriptor("fault", 32, ("type", 1, 0))
        # What the driver's mk_lv*ent_* can write for each kind (PA aligned, prot from the tables).
        prot1 = self.lv1_prot[1] | self.lv1_prot[3] | self.lv1_prot[2]
        prot2 = self.lv2_prot[1] | self.lv2_prot[3] | self.lv2_prot[2]
        self._ok_sect = ((U32 << (20 - s)) & U32) | prot1 | 3
        self._ok_link = ((U32 << (10 - s)) & U32) | 3  # lv2 tables are 1 KiB aligned
        self._ok_large = ((U32 << (16 - s)) & U32) | prot2 | 3
        self._ok_small = ((U32 << (12 - s)) & U32) | prot2 | 2

    # -- roots -------------------------------------------------------------------------------
    def root_from_register(self, value: int) -> list[int]:
        """`__sysmmu_set_ptbase`: before v5 pt_base holds the lv1 PA, from v5 on PA >> 12."""
        if value >> 32:
            raise ValueError(f"pt_base {value:#x} does not fit the 32-bit register")
        return [value << 12 if self.major >= 5 else value]

    def init_tables(self, mem: Any, roots: Sequence[int], alloc: Any) -> None:
        """Domain init as the driver does it: the shared zero lv2 table (`exynos_iommu_init`) and
        every lv1 entry set to ZERO_LV2LINK (`exynos_iommu_domain_alloc_paging`)."""
        zero = alloc(NUM_LV2ENTRIES * 4, NUM_LV2ENTRIES * 4)
        self.zero_link = self.encode_table(zero, self.levels[0])
        fill = self.zero_link.to_bytes(4, "little") * NUM_LV1ENTRIES
        mem.write_uint(roots[0], len(fill), int.from_bytes(fill, "little"), "little")

    def bind(self, mem: Any, roots: Sequence[int]) -> None:
        """Learn ZERO_LV2LINK: a link value several lv1 slots share whose table is all zero (a
        real lv2 table belongs to exactly one slot)."""
        try:
            l1 = np.asarray(mem.array(roots[0], NUM_LV1ENTRIES, self.dtype), dtype=np.uint64)
        except MemoryFault:  # unreadable root: the walk reports it
            return
        links = l1[(l1 & np.uint64(3)) == np.uint64(1)]
        if len(links) < 2:
            return
        values, counts = np.unique(links, return_counts=True)
        for i in np.argsort(-counts, kind="stable"):
            if counts[i] < 2:
                break
            cand = int(values[i])
            try:
                lv2 = mem.array(self.next_table(cand, self.levels[0]), NUM_LV2ENTRIES, self.dtype)
            except MemoryFault:
                continue
            if not np.any(lv2):
                self.zero_link = cand
                return

    # -- decode ------------------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        t = raw & 3
        if lvl.num == 1:
            if t == 2:  # lv1ent_section
                return LEAF
            if t == 1 and raw != self.zero_link:  # lv1ent_page
                return TABLE
            return INVALID  # lv1ent_fault: 00, 11 or ZERO_LV2LINK
        if t == 1 or raw & 2:  # lv2ent_large, lv2ent_small (10 and 11)
            return LEAF
        return INVALID  # lv2ent_fault

    def next_table(self, raw: int, lvl: Level) -> int:
        return (raw & LV2_BASE_MASK) << self.shift  # lv2table_base

    def leaf_size(self, raw: int, lvl: Level) -> int:
        if lvl.num == 1:
            return SECT_SIZE
        return LPAGE_SIZE if raw & 3 == 1 else SPAGE_SIZE

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        # section_phys / lpage_phys / spage_phys: sect_to_phys(ent) & *_MASK
        return (raw << self.shift) & ~(self.leaf_size(raw, lvl) - 1)

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        if self.major >= 5:
            return (raw >> (4 if lvl.num == 1 else 2)) & 3  # the V5 tables store prot itself
        ro, access = (15, 10) if lvl.num == 1 else (9, 4)
        if not raw >> access & 1:
            return 0
        return IOMMU_READ if raw >> ro & 1 else IOMMU_READ | IOMMU_WRITE

    kind_name_reads_raw = True

    def kind_name(self, raw: int, lvl: Level, kind: int) -> str:
        if lvl.num == 1:
            if kind == LEAF:
                return "section"
            if kind == TABLE:
                return "table"
            return "zero-link" if raw & 3 == 1 and raw == self.zero_link else "fault"
        if kind == LEAF:
            return "large-page" if raw & 3 == 1 else "small-page"
        return "fault"

    def _schema_for(self, raw: int, lvl: Level) -> Descriptor:
        t = raw & 3
        if lvl.num == 1:
            return self._sect if t == 2 else self._link if t == 1 else self._fault
        return self._large if t == 1 else self._small if t & 2 else self._fault

    def fields(self, raw: int, lvl: Level, kind: int) -> dict[str, Any]:
        return self._schema_for(raw, lvl).decode(raw)

    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        if kind == INVALID:
            return self._fault
        if lvl.num == 1:
            return self._sect if kind == LEAF else self._link
        return self._small

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            return f"link to the lv2 table at {self.next_table(raw, lvl):#x}"
        if kind == LEAF:
            size = self.leaf_size(raw, lvl)
            what = {SECT_SIZE: "1 MiB section", LPAGE_SIZE: "64 KiB large page (16 identical entries)",
                    SPAGE_SIZE: "4 KiB small page"}[size]
            from .base import prot_str

            return f"{what} at PA {self.leaf_phys(raw, lvl):#x}, {prot_str(self.leaf_prot(raw, lvl))}"
        if lvl.num == 1 and raw & 3 == 1:
            return "ZERO_LV2LINK: unmapped slot, linked to the shared all-zero lv2 table"
        return "fault entry" if raw else "empty"

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == INVALID:
            return 0
        if lvl.num == 1:
            ok = self._ok_sect if kind == LEAF else self._ok_link
        else:
            ok = self._ok_large if raw & 3 == 1 else self._ok_small
        return raw & ~ok & U32

    # -- vectorised --------------------------------------------------------------------------
    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64)
        t = r & np.uint64(3)
        if lvl.num == 1:
            zl = np.uint64(self.zero_link if self.zero_link is not None else 1 << 40)
            return np.where(t == 2, LEAF, np.where((t == 1) & (r != zl), TABLE, INVALID)).astype(np.int8)
        return np.where((t == 1) | ((r & np.uint64(2)) != 0), LEAF, INVALID).astype(np.int8)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        if lvl.num == 1:
            return np.full(len(raw), SECT_SIZE, dtype=np.uint64)
        t = raw.astype(np.uint64) & np.uint64(3)
        return np.where(t == 1, np.uint64(LPAGE_SIZE), np.uint64(SPAGE_SIZE)).astype(np.uint64)

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        size = self.leaf_size_vec(raw, lvl)
        return (raw.astype(np.uint64) << np.uint64(self.shift)) & ~(size - np.uint64(1))

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.int64)
        if self.major >= 5:
            return (r >> (4 if lvl.num == 1 else 2)) & 3
        ro, access = (15, 10) if lvl.num == 1 else (9, 4)
        rw = np.where((r >> ro) & 1 == 1, IOMMU_READ, IOMMU_READ | IOMMU_WRITE)
        return np.where((r >> access) & 1 == 1, rw, 0).astype(np.int64)

    def reserved_bits_vec(self, raw: np.ndarray, lvl: Level, kinds: np.ndarray) -> np.ndarray:
        r = raw.astype(np.uint64)
        if lvl.num == 1:
            ok = np.where(kinds == LEAF, np.uint64(self._ok_sect), np.uint64(self._ok_link))
        else:
            large = (r & np.uint64(3)) == 1
            ok = np.where(large, np.uint64(self._ok_large), np.uint64(self._ok_small))
        return np.where(kinds == INVALID, np.uint64(0), r & ~ok & np.uint64(U32))

    # -- encode (exynos_iommu_map) ---------------------------------------------------------------
    def encode_table(self, table: int, lvl: Level) -> int:
        return ((table >> self.shift) | 1) & U32  # mk_lv1ent_page

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        p = prot & (IOMMU_READ | IOMMU_WRITE)  # SYSMMU_SUPPORTED_PROT_BITS
        if pgsize == SECT_SIZE:
            return ((phys >> self.shift) | self.lv1_prot[p] | 2) & U32  # mk_lv1ent_sect
        if pgsize == LPAGE_SIZE:
            return ((phys >> self.shift) | self.lv2_prot[p] | 1) & U32  # mk_lv2ent_lpage
        return ((phys >> self.shift) | self.lv2_prot[p] | 2) & U32  # mk_lv2ent_spage

    def encode_leaf_vec(self, phys: np.ndarray, pgsize: int, lvl: Level, prot: int) -> np.ndarray:
        one = self.encode_leaf(0, pgsize, lvl, prot)  # prot and type bits, the same for every page
        return ((phys.astype(np.uint64) >> np.uint64(self.shift)) | np.uint64(one)) & np.uint64(U32)

    def invalidate(self, raw: int, lvl: Level) -> int:
        # exynos_iommu_unmap writes ZERO_LV2LINK back over a section; lv2 entries become 0.
        if lvl.num == 1 and self.zero_link is not None:
            return self.zero_link
        return 0

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        # The driver maps prot 0 too (LV1_PROT[0] / LV2_PROT[0]: "no access").
        if (phys + size - 1) >> self.oas:
            raise ValueError(f"phys {phys:#x}+{size:#x} is beyond pa_bits ({self.oas})")


DRIVERS = {
    "exynos": {
        "format": "exynos",
        "config": {"version": "5.0"},
        "description": "Samsung Exynos SYSMMU (exynos-iommu.c); set version to what MMU_VERSION reads",
    },
}
