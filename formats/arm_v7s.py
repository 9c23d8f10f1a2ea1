"""ARMv7 short-descriptor io-pgtable (drivers/iommu/io-pgtable-arm-v7s.c), as mtk_iommu and
msm_iommu (and arm-smmu's AArch32-S contexts) use it.

32-bit descriptors, two levels numbered 1 and 2 as the kernel's `lvl`:
- level 1: 2^(ias-20) entries indexed by iova[ias-1:20] (`_ARM_V7S_LVL_BITS(1, cfg)`), each a
  1 MiB section, one of 16 identical copies of a 16 MiB supersection (`ARM_V7S_CONT_SECTION`),
  or a pointer to a level-2 table (`ARM_V7S_PTE_TYPE_TABLE`);
- level 2: 256 entries (1 KiB tables from a kmem_cache), each a 4 KiB small page or one of 16
  identical copies of a 64 KiB large page (`ARM_V7S_PTE_TYPE_CONT_PAGE`, TEX and XN moved).
The attribute byte sits at `ARM_V7S_ATTR_SHIFT(lvl)` (bit 10 at level 1, bit 4 at level 2).
With `arm-mtk-ext` PA bits 32/33/34 live in descriptor bits 9/4/5 (`ARM_V7S_ATTR_MTK_PA_BIT*`),
which collide with AP/XN bits: that is why the kernel insists on `no-perms` with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import (
    INVALID,
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    LEAF,
    TABLE,
    ConfigError,
    Descriptor,
    Level,
    PageTable,
    Translation,
    prot_str,
)
from .lazy import np

SZ_4K, SZ_64K, SZ_1M, SZ_16M = 1 << 12, 1 << 16, 1 << 20, 1 << 24
V7S_PAGE_SIZES = (SZ_4K, SZ_64K, SZ_1M, SZ_16M)  # the mask arm_v7s_alloc_pgtable applies
U32 = 0xFFFF_FFFF
CONT_PAGES = 16  # ARM_V7S_CONT_PAGES

# descriptor bits (io-pgtable-arm-v7s.c macro names)
TYPE_TABLE, TYPE_PAGE, TYPE_CONT_PAGE = 0x1, 0x2, 0x1  # ARM_V7S_PTE_TYPE_*
ATTR_B, ATTR_C = 1 << 2, 1 << 3  # ARM_V7S_ATTR_B / _C
NS_TABLE, NS_SECTION = 1 << 3, 1 << 19  # ARM_V7S_ATTR_NS_TABLE / _NS_SECTION
CONT_SECTION = 1 << 18  # ARM_V7S_CONT_SECTION
CONT_PAGE_XN_SHIFT = 15  # ARM_V7S_CONT_PAGE_XN_SHIFT
CONT_PAGE_TEX_SHIFT = 6  # ARM_V7S_CONT_PAGE_TEX_SHIFT
TABLE_MASK = U32 & ~0x3FF  # ARM_V7S_TABLE_MASK: bits 31:10
MTK_PA_BIT32, MTK_PA_BIT33, MTK_PA_BIT34 = 1 << 9, 1 << 4, 1 << 5  # ARM_V7S_ATTR_MTK_PA_BIT*
MTK_BITS = MTK_PA_BIT32 | MTK_PA_BIT33 | MTK_PA_BIT34
# inside the attribute byte (ARM_V7S_ATTR_*)
AP0_AF, AP1_UNPRIV, AP2_RDONLY, ATTR_S, ATTR_NG = 1 << 0, 1 << 1, 1 << 5, 1 << 6, 1 << 7
TEX_SHIFT = 2  # ARM_V7S_TEX_SHIFT
# TTBR: PA | attributes below bit 7 (ARM_V7S_TTBR_S/NOS/IRGN/ORGN); MTK: PA[31:7] | PA[34:32] in 2:0
TTBR_ADDR_MASK = U32 & ~0x7F
MTK_4GB_MODE_REMAP_BASE = 0x1_4000_0000  # mtk_iommu.c MTK_IOMMU_4GB_MODE_REMAP_BASE

QUIRKS = ("arm-ns", "no-perms", "arm-mtk-ext", "arm-mtk-ttbr-ext")  # what arm_v7s_alloc_pgtable allows
OTHER_QUIRKS = ("arm-ttbr1", "arm-outer-wbwa", "arm-hd", "arm-s2fwb", "no-warn")


def attr_shift(lvl: int) -> int:
    return 16 - lvl * 6  # ARM_V7S_ATTR_SHIFT


def attr_xn(lvl: int) -> int:
    return 1 << (4 * (2 - lvl))  # ARM_V7S_ATTR_XN: bit 4 at level 1, bit 0 at level 2


def lvl_mask(lvl: int) -> int:
    return (U32 << (20 if lvl == 1 else 12)) & U32  # ARM_V7S_LVL_MASK


class ArmV7s(PageTable):
    name = "arm-v7s"
    description = ("ARMv7 short descriptors: L1 1M sections / 16M supersections (x16), L2 4K small / "
                   "64K large pages (x16); MediaTek PA[34:32] extension")
    kernel_source = "drivers/iommu/io-pgtable-arm-v7s.c"
    entry_size = 4
    config_defaults = {"ias": 32, "oas": 32, "quirks": [], "page_sizes": list(V7S_PAGE_SIZES),
                       "mtk_4gb_mode": False}
    root_register = "ttbr"
    leaf_replaces_table = True  # __arm_v7s_map: an L1 table under a new section is freed first

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        quirks = [str(q) for q in config.get("quirks") or []]
        for q in quirks:
            if q in OTHER_QUIRKS:
                raise ConfigError("quirks", f"{q}: arm_v7s_alloc_pgtable refuses it (allowed: {', '.join(QUIRKS)})")
            if q not in QUIRKS:
                raise ConfigError("quirks", f"unknown quirk {q!r} (arm-v7s takes {', '.join(QUIRKS)})")
        self.quirks = frozenset(quirks)
        self.ns = "arm-ns" in self.quirks
        self.ap = "no-perms" not in self.quirks  # arm_v7s_prot_to_pte: `ap`
        self.mtk = "arm-mtk-ext" in self.quirks  # arm_v7s_is_mtk_enabled (64-bit phys_addr_t assumed)
        self.ttbr_ext = "arm-mtk-ttbr-ext" in self.quirks
        if self.mtk and self.ap:
            raise ConfigError("quirks", "arm-mtk-ext needs no-perms too (its PA bits sit where AP/XN are)")
        if self.ttbr_ext and not self.mtk:
            raise ConfigError("quirks", "arm-mtk-ttbr-ext needs arm-mtk-ext")
        ias, oas = config.get("ias"), config.get("oas")
        max_ias, max_oas = (34, 35) if self.mtk else (32, 32)
        if not isinstance(ias, int) or not 20 <= ias <= max_ias:
            raise ConfigError("ias", f"{ias!r}: arm-v7s takes ias 20..{max_ias}"
                                     + ("" if self.mtk else " (34 with arm-mtk-ext)"))
        if not isinstance(oas, int) or not 1 <= oas <= max_oas:
            raise ConfigError("oas", f"{oas!r}: arm-v7s takes oas up to {max_oas}"
                                     + ("" if self.mtk else " (35 with arm-mtk-ext)"))
        self.mtk_4gb = bool(config.get("mtk_4gb_mode", False))
        if self.mtk_4gb and not self.mtk:
            raise ConfigError("mtk_4gb_mode", "the MediaTek 4GB mode needs arm-mtk-ext (PA bit 32)")
        self.page_sizes = self._page_sizes(config.get("page_sizes"), ias)
        self.ias, self.oas = ias, oas
        self.levels = [Level(1, 20, ias - 20), Level(2, 12, 8)]
        self.windows = [(0, 1 << ias)]
        self._build_schemas()

    @staticmethod
    def _page_sizes(value: Any, ias: int) -> list[int]:
        from iommuctl.numbers import parse_number

        sizes = set()
        for v in value if isinstance(value, list | tuple) else [value]:
            try:
                n = parse_number(v)
            except ValueError as e:
                raise ConfigError("page_sizes", str(e)) from None
            if n not in V7S_PAGE_SIZES:
                raise ConfigError("page_sizes", f"{n:#x} is not an arm-v7s page size (4K, 64K, 1M, 16M)")
            sizes.add(n)
        # A 16M supersection is 16 level-1 slots: an L1 table of fewer slots cannot hold one.
        sizes = {s for s in sizes if s < 1 << ias or s <= SZ_1M}
        if not sizes:
            raise ConfigError("page_sizes", "no page size left (4K, 64K, 1M, 16M)")
        return sorted(sizes)

    def _build_schemas(self) -> None:
        m = self.mtk
        # attribute byte at level 1 (bits 17:10) and at level 2 (bits 11:4)
        mid1 = [("pa_32", 9, 9), ("domain", 8, 6), ("pa_34", 5, 5), ("pa_33", 4, 4)] if m else \
            [("impl", 9, 9), ("domain", 8, 5), ("xn", 4, 4)]
        sect_attrs = [("ns", 19, 19), ("supersection", 18, 18), ("ng", 17, 17), ("s", 16, 16),
                      ("ap2_rdonly", 15, 15), ("tex", 14, 12), ("ap1_unpriv", 11, 11), ("ap0_af", 10, 10)]
        tail = [("c", 3, 3), ("b", 2, 2), ("type", 1, 0)]
        self._section = Descriptor("section", 32, ("pa_31_20", 31, 20), *sect_attrs, *mid1, *tail)
        self._supersection = Descriptor("supersection", 32, ("pa_31_24", 31, 24), ("unused_23_20", 23, 20),
                                        *sect_attrs, *mid1, *tail)
        tmid = [("pa_32", 9, 9), ("domain", 8, 6), ("pa_34", 5, 5), ("pa_33", 4, 4)] if m else \
            [("impl", 9, 9), ("domain", 8, 5), ("sbz", 4, 4)]
        self._table = Descriptor("table", 32, ("table_31_10", 31, 10), *tmid, ("ns", 3, 3), ("pxn", 2, 2),
                                 ("type", 1, 0))
        l2_ap = [("pa_32", 9, 9)] if m else [("ap2_rdonly", 9, 9)]
        l2_lo = [("pa_34", 5, 5), ("pa_33", 4, 4)] if m else [("ap1_unpriv", 5, 5), ("ap0_af", 4, 4)]
        self._small = Descriptor("small page", 32, ("pa_31_12", 31, 12), ("ng", 11, 11), ("s", 10, 10),
                                 *l2_ap, ("tex", 8, 6), *l2_lo, ("c", 3, 3), ("b", 2, 2), ("type", 1, 1),
                                 ("xn", 0, 0))
        self._large = Descriptor("large page", 32, ("pa_31_16", 31, 16), ("xn", 15, 15), ("tex", 14, 12),
                                 ("ng", 11, 11), ("s", 10, 10), *l2_ap, ("sbz", 8, 6), *l2_lo, ("c", 3, 3),
                                 ("b", 2, 2), ("type", 1, 0))
        self._fault = Descriptor("fault", 32, ("ignored", 31, 2), ("type", 1, 0))
        # What arm_v7s_prot_to_pte / arm_v7s_install_table can write, for check.
        attr = ATTR_NG | ATTR_S | (1 << TEX_SHIFT) | ((AP0_AF | AP1_UNPRIV | AP2_RDONLY) if self.ap else 0)
        mtk = MTK_BITS if m else 0
        self._ok_table = TABLE_MASK | TYPE_TABLE | (NS_TABLE if self.ns else 0) | (MTK_BITS if self.ttbr_ext else 0)
        l1 = (attr << attr_shift(1)) | ATTR_B | ATTR_C | TYPE_PAGE | (attr_xn(1) if self.ap else 0) \
            | (NS_SECTION if self.ns else 0) | mtk
        self._ok_section = lvl_mask(1) | l1
        self._ok_supersection = ((lvl_mask(1) * CONT_PAGES) & U32) | l1 | CONT_SECTION
        small = (attr << attr_shift(2)) | ATTR_B | ATTR_C | TYPE_PAGE | (attr_xn(2) if self.ap else 0) | mtk
        self._ok_small = lvl_mask(2) | small
        self._ok_large = ((lvl_mask(2) * CONT_PAGES) & U32) | self._to_cont(small, 2) | mtk

    # -- roots -------------------------------------------------------------------------------------
    def root_from_register(self, value: int) -> list[int]:
        """The L1 table from `arm_v7s_cfg.ttbr` as arm_v7s_alloc_pgtable wrote it: PA with the
        ARM_V7S_TTBR_S/NOS/IRGN/ORGN attributes below bit 7; with MTK enabled `PA | PA >> 32`,
        so PA[34:32] in bits 2:0 (the register MTK writes as REG_MMU_PT_BASE_ADDR)."""
        if value >> 32:
            raise ValueError(f"{value:#x} does not fit the 32-bit v7s TTBR")
        pa = value & TTBR_ADDR_MASK
        if self.mtk:
            pa |= (value & 7) << 32
        return [pa]

    def root_alloc(self) -> list[tuple[int, int]]:
        size = max(self.levels[0].entries * 4, 4096)  # __get_free_pages(get_order(size))
        return [(size, size)]

    def _table_fits(self, table: int) -> None:
        """__arm_v7s_alloc_table: 'Page table does not fit in PTE'."""
        if self.ttbr_ext:
            if table >> self.oas:
                raise ValueError(f"page table at {table:#x} is beyond oas ({self.oas} bits)")
        elif table >> 32:
            raise ValueError(f"page table at {table:#x} is above 4 GiB (only arm-mtk-ttbr-ext tables may be)")

    def init_tables(self, mem: Any, roots: Sequence[int], alloc: Any) -> None:
        for r in roots:
            self._table_fits(r)

    # -- decode ------------------------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        t = raw & 3
        if t == 0:
            return INVALID  # !ARM_V7S_PTE_IS_VALID
        if t == TYPE_TABLE and lvl.num == 1:
            return TABLE  # ARM_V7S_PTE_IS_TABLE
        return LEAF

    def _mtk_pa(self, raw: int) -> int:
        return ((raw >> 9 & 1) << 32) | ((raw >> 4 & 1) << 33) | ((raw >> 5 & 1) << 34)

    def next_table(self, raw: int, lvl: Level) -> int:
        # iopte_deref -> iopte_to_paddr: the MTK high bits are read whenever MTK is enabled
        pa = raw & TABLE_MASK
        return pa | self._mtk_pa(raw) if self.mtk else pa

    def is_cont(self, raw: int, lvl: Level) -> bool:
        """arm_v7s_pte_is_cont: supersection bit at level 1, type 0b01 at level 2."""
        if lvl.num == 1:
            return bool(raw & CONT_SECTION)
        return not raw & TYPE_PAGE

    def leaf_size(self, raw: int, lvl: Level) -> int:
        return lvl.block * (CONT_PAGES if self.is_cont(raw, lvl) else 1)

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        # iopte_to_paddr with ARM_V7S_LVL_MASK(lvl) (x16 for contiguous entries)
        pa = raw & ~(self.leaf_size(raw, lvl) - 1) & U32
        return pa | self._mtk_pa(raw) if self.mtk else pa

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        l1 = lvl.num == 1
        large = not l1 and raw & 3 == TYPE_CONT_PAGE
        sh = attr_shift(lvl.num)
        tex = raw >> (12 if l1 or large else sh + TEX_SHIFT) & 7
        prot = IOMMU_READ
        if self.ap:
            if not raw >> sh & AP2_RDONLY:
                prot |= IOMMU_WRITE
            if not raw >> sh & AP1_UNPRIV:
                prot |= IOMMU_PRIV
            xn = raw >> CONT_PAGE_XN_SHIFT & 1 if large else raw & attr_xn(lvl.num)
            if xn:
                prot |= IOMMU_NOEXEC
        else:
            prot |= IOMMU_WRITE  # NO_PERMS: nothing stored, the hardware allows both
        if tex == 0:
            prot |= IOMMU_MMIO  # TEX 0 (+B): only IOMMU_MMIO writes it
        elif raw & ATTR_C:
            prot |= IOMMU_CACHE
        return prot

    kind_name_reads_raw = True

    def kind_name(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            return "table"
        if kind == LEAF:
            if lvl.num == 1:
                return "supersection" if raw & CONT_SECTION else "section"
            return "large-page" if raw & 3 == TYPE_CONT_PAGE else "small-page"
        return "invalid"

    def _schema_for(self, raw: int, lvl: Level, kind: int) -> Descriptor:
        if kind == INVALID:
            return self._fault
        if kind == TABLE:
            return self._table
        if lvl.num == 1:
            return self._supersection if raw & CONT_SECTION else self._section
        return self._large if raw & 3 == TYPE_CONT_PAGE else self._small

    def fields(self, raw: int, lvl: Level, kind: int) -> dict[str, Any]:
        return self._schema_for(raw, lvl, kind).decode(raw)

    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        return self._schema_for(0 if lvl.num == 1 else TYPE_PAGE, lvl, kind)

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            return f"level-2 table at {self.next_table(raw, lvl):#x}"
        if kind == LEAF:
            size = self.leaf_size(raw, lvl)
            what = {SZ_4K: "4 KiB small page", SZ_64K: "64 KiB large page (16 identical entries)",
                    SZ_1M: "1 MiB section", SZ_16M: "16 MiB supersection (16 identical entries)"}[size]
            return f"{what} at PA {self.leaf_phys(raw, lvl):#x}, {prot_str(self.leaf_prot(raw, lvl))}"
        return "fault (bits 1:0 = 00)" if raw else "empty"

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == INVALID:
            return 0
        if kind == TABLE:
            ok = self._ok_table
        elif lvl.num == 1:
            ok = self._ok_supersection if raw & CONT_SECTION else self._ok_section
        else:
            ok = self._ok_large if raw & 3 == TYPE_CONT_PAGE else self._ok_small
        return raw & ~ok & U32

    def reserved_bits_vec(self, raw: np.ndarray, lvl: Level, kinds: np.ndarray) -> np.ndarray:
        """reserved_bits over a table's entries (check's hot path)."""
        r = raw.astype(np.uint64)
        if lvl.num == 1:
            ok = np.where(kinds == TABLE, self._ok_table,
                          np.where((r & np.uint64(CONT_SECTION)) != 0, self._ok_supersection, self._ok_section))
        else:
            ok = np.where((r & np.uint64(3)) == TYPE_CONT_PAGE, self._ok_large, self._ok_small)
        bits = r & ~ok.astype(np.uint64) & np.uint64(U32)
        return np.where(kinds == INVALID, np.uint64(0), bits).astype(np.uint64)

    def replicas_disagree(self, ents: Any, lvl: Level) -> list[tuple[int, list[int]]]:
        """Groups of 16 slots (aligned, as arm_v7s_init_pte writes them) holding a contiguous leaf
        (large page / supersection) whose copies are not all identical: (first index, the
        distinct raw values). The hardware may use any copy, so `check` reports these; the
        walker reads a group from its first slot."""
        r = np.asarray(ents).astype(np.uint64)
        n = len(r) - len(r) % CONT_PAGES
        if n == 0:
            return []
        r = r[:n]
        cont = (self.classify_vec(r, lvl) == LEAF) & (self.leaf_size_vec(r, lvl) > np.uint64(lvl.block))
        g = r.reshape(-1, CONT_PAGES)
        bad = cont.reshape(-1, CONT_PAGES).any(axis=1) & ~(g == g[:, :1]).all(axis=1)
        return [(int(i) * CONT_PAGES, sorted(set(g[i].tolist()))) for i in np.flatnonzero(bad)]

    def legacy_iova_to_phys(self, iova: int, t: Translation) -> int:
        """arm_v7s_iova_to_phys: iopte_to_paddr(pte) | (iova & ~mask), 0 on a miss (the same
        as the walk inside the window). mtk_iommu_iova_to_phys in 4GB mode also clears PA bit 32
        of results at or above MTK_IOMMU_4GB_MODE_REMAP_BASE."""
        if not t.mapped:
            return 0
        if self.mtk_4gb and t.phys >= MTK_4GB_MODE_REMAP_BASE:
            return t.phys & ~(1 << 32)
        return t.phys

    def legacy_iova_to_phys_vec(self, iova: np.ndarray, phys: np.ndarray, size: np.ndarray, level: np.ndarray,
                                raw: np.ndarray) -> np.ndarray:
        out = phys.astype(np.uint64)
        if self.mtk_4gb:
            out = np.where(out >= np.uint64(MTK_4GB_MODE_REMAP_BASE), out & np.uint64(0xFFFF_FFFE_FFFF_FFFF), out)
        return np.where(size != 0, out, np.uint64(0))  # type: ignore[no-any-return]

    # -- vectorised --------------------------------------------------------------------------------
    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        t = raw.astype(np.uint64) & np.uint64(3)
        if lvl.num == 1:
            return np.where(t == 0, INVALID, np.where(t == 1, TABLE, LEAF)).astype(np.int8)
        return np.where(t == 0, INVALID, LEAF).astype(np.int8)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64)
        if lvl.num == 1:
            cont = (r & np.uint64(CONT_SECTION)) != 0
        else:
            cont = (r & np.uint64(TYPE_PAGE)) == 0
        return np.where(cont, np.uint64(lvl.block * CONT_PAGES), np.uint64(lvl.block)).astype(np.uint64)

    def _mtk_pa_vec(self, r: np.ndarray) -> np.ndarray:
        one = np.uint64(1)
        return (((r >> np.uint64(9)) & one) << np.uint64(32)) | (((r >> np.uint64(4)) & one) << np.uint64(33)) \
            | (((r >> np.uint64(5)) & one) << np.uint64(34))

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64)
        size = self.leaf_size_vec(r, lvl)
        pa = r & ~(size - np.uint64(1)) & np.uint64(U32)
        return pa | self._mtk_pa_vec(r) if self.mtk else pa

    def next_table_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64)
        pa = r & np.uint64(TABLE_MASK)
        return pa | self._mtk_pa_vec(r) if self.mtk else pa

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.int64)
        l1 = lvl.num == 1
        sh = attr_shift(lvl.num)
        large = np.zeros(len(r), dtype=bool) if l1 else (r & 3) == TYPE_CONT_PAGE
        tex = np.where(large | l1, (r >> 12) & 7, (r >> (sh + TEX_SHIFT)) & 7)
        prot = np.full(len(r), IOMMU_READ, dtype=np.int64)
        if self.ap:
            prot |= np.where((r >> sh) & AP2_RDONLY, 0, IOMMU_WRITE)
            prot |= np.where((r >> sh) & AP1_UNPRIV, 0, IOMMU_PRIV)
            xn = np.where(large, (r >> CONT_PAGE_XN_SHIFT) & 1, r & attr_xn(lvl.num))
            prot |= np.where(xn != 0, IOMMU_NOEXEC, 0)
        else:
            prot |= IOMMU_WRITE
        prot |= np.where(tex == 0, IOMMU_MMIO, np.where((r & ATTR_C) != 0, IOMMU_CACHE, 0))
        return prot.astype(np.int64)

    # -- encode (arm_v7s_map_pages) ----------------------------------------------------------------
    def prot_to_pte(self, prot: int, lvl: int) -> int:
        """arm_v7s_prot_to_pte."""
        pte = ATTR_NG | ATTR_S
        if not prot & IOMMU_MMIO:
            pte |= 1 << TEX_SHIFT  # ARM_V7S_ATTR_TEX(1)
        if self.ap:
            pte |= AP0_AF
            if not prot & IOMMU_PRIV:
                pte |= AP1_UNPRIV
            if not prot & IOMMU_WRITE:
                pte |= AP2_RDONLY
        pte <<= attr_shift(lvl)
        if prot & IOMMU_NOEXEC and self.ap:
            pte |= attr_xn(lvl)
        if prot & IOMMU_MMIO:
            pte |= ATTR_B
        elif prot & IOMMU_CACHE:
            pte |= ATTR_B | ATTR_C
        pte |= TYPE_PAGE
        if lvl == 1 and self.ns:
            pte |= NS_SECTION
        return pte

    @staticmethod
    def _to_cont(pte: int, lvl: int) -> int:
        """arm_v7s_pte_to_cont: supersection bit, or the large-page shuffle of XN and TEX."""
        if lvl == 1:
            return pte | CONT_SECTION
        xn = pte & attr_xn(2)
        tex = pte & (7 << CONT_PAGE_TEX_SHIFT)
        pte ^= xn | tex | TYPE_PAGE
        return pte | (xn << CONT_PAGE_XN_SHIFT) | (tex << CONT_PAGE_TEX_SHIFT) | TYPE_CONT_PAGE

    def _paddr_to_iopte(self, phys: int, lvl: int) -> int:
        pte = phys & lvl_mask(lvl)
        if self.mtk:  # to_mtk_iopte
            pte |= (phys >> 32 & 1) * MTK_PA_BIT32 | (phys >> 33 & 1) * MTK_PA_BIT33 | (phys >> 34 & 1) * MTK_PA_BIT34
        return pte

    def _leaf_attrs(self, pgsize: int, lvl: Level, prot: int) -> int:
        """arm_v7s_init_pte without the address: prot bits, made contiguous for 16 entries."""
        pte = self.prot_to_pte(prot, lvl.num)
        return self._to_cont(pte, lvl.num) if pgsize > lvl.block else pte

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        if self.mtk_4gb:
            phys |= 1 << 32  # mtk_iommu_map: the "4GB mode" M4U cannot use the lower DRAM remap
        return self._leaf_attrs(pgsize, lvl, prot) | self._paddr_to_iopte(phys, lvl.num)

    def encode_leaf_vec(self, phys: np.ndarray, pgsize: int, lvl: Level, prot: int) -> np.ndarray:
        p = phys.astype(np.uint64)
        if self.mtk_4gb:
            p = p | np.uint64(1 << 32)
        pte = np.uint64(self._leaf_attrs(pgsize, lvl, prot)) | (p & np.uint64(lvl_mask(lvl.num)))
        if self.mtk:
            pte |= self._mtk_bits_vec(p)
        return pte.astype(np.uint64)

    @staticmethod
    def _mtk_bits_vec(p: np.ndarray) -> np.ndarray:
        one = np.uint64(1)
        return (((p >> np.uint64(32)) & one) << np.uint64(9)) | (((p >> np.uint64(33)) & one) << np.uint64(4)) \
            | (((p >> np.uint64(34)) & one) << np.uint64(5))

    def encode_table(self, table: int, lvl: Level) -> int:
        """arm_v7s_install_table."""
        self._table_fits(table)
        pte = (table & U32) | TYPE_TABLE
        if self.ttbr_ext:
            pte |= self._paddr_to_iopte(table, 2) & MTK_BITS
        if self.ns:
            pte |= NS_TABLE
        return pte

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        # arm_v7s_map_pages: -ERANGE for paddr >= 2^oas, -EINVAL without R or W
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            raise ValueError("prot needs r or w (arm_v7s_map_pages refuses neither)")
        top = phys + size - 1 | ((1 << 32) if self.mtk_4gb else 0)
        if top >> self.oas:
            raise ValueError(f"phys {phys:#x}+{size:#x} is beyond oas ({self.oas} bits)")

    def ttbr_value(self, root: int, coherent_walk: bool = True) -> int:
        """`arm_v7s_cfg.ttbr` as arm_v7s_alloc_pgtable computes it for an L1 table at `root`."""
        if self.mtk:
            return (root | root >> 32) & U32
        if coherent_walk:  # S | NOS | IRGN(WBWA) | ORGN(WBWA)
            return root | 1 << 1 | 1 << 5 | 1 << 6 | 1 << 3
        return root | 1 << 1


DRIVERS = {
    "mtk-iommu": {
        "format": "arm-v7s",
        "config": {"ias": 32, "oas": 35, "quirks": ["arm-ns", "no-perms", "arm-mtk-ext"]},
        "description": "MediaTek M4U (mtk_iommu.c): ARM_NS|NO_PERMS|ARM_MTK_EXT; set ias 34 on IOVA_34_EN "
                       "parts, add arm-mtk-ttbr-ext on PGTABLE_PA_35_EN parts, oas 32/33 + mtk_4gb_mode on "
                       "HAS_4GB_MODE parts",
    },
    "msm-iommu": {
        "format": "arm-v7s",
        "config": {"ias": 32, "oas": 32, "quirks": []},
        "description": "Qualcomm MSM IOMMU (msm_iommu.c): no quirks, ias/oas 32, 4K|64K|1M|16M",
    },
    "arm-smmu-v7s": {
        "format": "arm-v7s",
        "config": {"ias": 32, "oas": 32, "quirks": []},
        "description": "Arm SMMU v1/v2 AArch32-S context (arm-smmu.c, 32-bit non-LPAE kernels)",
    },
}

DRIVERS["msm"] = {**DRIVERS["msm-iommu"], "description": "msm_iommu.c (alias of msm-iommu)"}
