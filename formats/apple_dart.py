"""Apple DART io-pgtable (drivers/iommu/io-pgtable-dart.c) as apple-dart.c drives it.

One page size (4K or 16K, `pgsize_bitmap` must be exactly one), each table one page of 64-bit
entries, b = log2(page) - 3 index bits per level. `dart_alloc_pgtable` picks the number of
table levels (2 or 3) and how many top tables (TTBRs, up to 4 with 4K pages) the IOVA's top
bits select; the kernel counts the TTBR select as a level too (`data->levels`, `n_levels`).
Levels here are numbered as `dart_get_index` numbers them: 1 is the leaf table, `levels` the
top table; the TTBR select would be `levels + 1` and is not a table in memory.

Two PTE layouts: APPLE_DART (t8020) stores PA[35:12] in place, APPLE_DART2 (t6000, t8110)
stores PA >> 4 in bits 37:10 (so PA[41:14]). Both: bit 0 VALID, SUBPAGE_START 63:52 and
SUBPAGE_END 51:40 (the kernel allows the whole page: 0 .. 0xfff). The kernel's walk follows and
returns any non-zero entry (`dart_get_last`, `dart_iova_to_phys` never test VALID); so does this
format, and `check` points out entries without VALID.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from .base import (
    INVALID,
    IOMMU_CACHE,
    IOMMU_READ,
    IOMMU_WRITE,
    LEAF,
    TABLE,
    ConfigError,
    Descriptor,
    Level,
    PageTable,
    TopTable,
    Translation,
    prot_str,
)
from .lazy import np

SZ_4K, SZ_16K = 1 << 12, 1 << 14
DART_MAX_TABLE_BITS = 2
DART_MAX_LEVELS = 4  # includes the TTBR level

PTE_VALID = 1 << 0  # APPLE_DART_PTE_VALID
SUBPAGE_START = 0xFFF << 52  # APPLE_DART_PTE_SUBPAGE_START GENMASK_ULL(63, 52)
SUBPAGE_END = 0xFFF << 40  # APPLE_DART_PTE_SUBPAGE_END GENMASK_ULL(51, 40)
DART1_PADDR_MASK = ((1 << 36) - 1) & ~((1 << 12) - 1)  # APPLE_DART1_PADDR_MASK GENMASK_ULL(35, 12)
DART2_PADDR_MASK = ((1 << 38) - 1) & ~((1 << 10) - 1)  # APPLE_DART2_PADDR_MASK GENMASK_ULL(37, 10)
DART2_PADDR_SHIFT = 4  # APPLE_DART2_PADDR_SHIFT
DART1_NO_READ, DART1_NO_WRITE, DART1_SP_DIS = 1 << 8, 1 << 7, 1 << 1  # APPLE_DART1_PTE_PROT_*
DART2_NO_READ, DART2_NO_WRITE, DART2_NO_CACHE = 1 << 3, 1 << 2, 1 << 1  # APPLE_DART2_PTE_PROT_*

# apple-dart.c TTBR registers: (VALID bit, address field shift, PA shift)
TTBR_LAYOUT = {
    "t8020": (1 << 31, 0, 12),  # DART_T8020_TTBR_VALID / _ADDR_FIELD_SHIFT / _TTBR_SHIFT
    "t6000": (1 << 31, 0, 12),  # apple_dart_hw_t6000 uses the T8020 TTBR layout
    "t8110": (1 << 0, 2, 14),  # DART_T8110_TTBR_VALID / _ADDR_FIELD_SHIFT / _TTBR_SHIFT
}
TTBR_COUNT = {"t8020": 4, "t6000": 4, "t8110": 1}  # apple_dart_hw.ttbr_count

KNOWN_QUIRKS = ("arm-ns", "no-perms", "arm-mtk-ext", "arm-mtk-ttbr-ext", "arm-ttbr1", "arm-outer-wbwa",
                "arm-hd", "arm-s2fwb", "no-warn")


def dart_geometry(ias: int, pgsize: int) -> tuple[int, int, int]:
    """(table levels, tbl_bits, bits_per_level) as dart_alloc_pgtable computes them; raises
    ConfigError where it returns NULL."""
    max_tbl_bits = DART_MAX_TABLE_BITS if pgsize == SZ_4K else 0
    pg_shift = pgsize.bit_length() - 1
    b = pg_shift - 3  # bits_per_level = pg_shift - ilog2(sizeof(dart_iopte))
    va_bits = ias - pg_shift
    levels = max(2, (va_bits - max_tbl_bits + b - 1) // b)
    if levels > DART_MAX_LEVELS - 1:
        raise ConfigError("ias", f"ias {ias} with {pgsize >> 10}K pages needs {levels} table levels; "
                                 f"io-pgtable-dart has at most {DART_MAX_LEVELS - 1} (plus the TTBR level)")
    tbl_bits = max(0, va_bits - b * levels)
    if tbl_bits > max_tbl_bits:
        raise ConfigError("ias", f"ias {ias} with {pgsize >> 10}K pages needs {1 << tbl_bits} TTBRs; "
                                 f"at most {1 << max_tbl_bits}")
    return levels, tbl_bits, b


class _Dart(PageTable):
    leaf_size_is_block = True  # one page size, leaves only at the last level
    kernel_source = "drivers/iommu/io-pgtable-dart.c"
    entry_size = 8
    root_register = "ttbr"
    max_roots = 4  # DART_MAX_TABLES
    dart2: ClassVar[bool] = False
    variants: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        for q in config.get("quirks") or []:
            if q not in KNOWN_QUIRKS:
                raise ConfigError("quirks", f"unknown quirk {q!r}")
            # apple_dart_alloc_pgtable never looks at cfg->quirks: known ones are accepted, unused
        variant = str(config.get("variant", self.variants[0])).lower()
        if variant not in self.variants:
            raise ConfigError("variant", f"{variant!r}: {self.name} is the PTE layout of "
                                         f"{', '.join(self.variants)}")
        self.variant = variant
        oas, ias, pgsize = config.get("oas"), config.get("ias"), config.get("granule")
        if oas not in (36, 42):
            raise ConfigError("oas", f"{oas!r}: apple_dart_alloc_pgtable takes oas 36 or 42")
        if pgsize not in (SZ_4K, SZ_16K):
            raise ConfigError("granule", f"{pgsize!r}: a DART page is 4K or 16K (pgsize_bitmap exactly one)")
        if not isinstance(ias, int) or ias > oas:
            raise ConfigError("ias", f"{ias!r}: ias must not exceed oas ({oas})")
        pg_shift = pgsize.bit_length() - 1
        if ias <= pg_shift:
            raise ConfigError("ias", f"{ias}: smaller than one {pgsize >> 10}K page")
        self.levels_n, self.tbl_bits, self.bpl = dart_geometry(ias, pgsize)
        self.n_ttbrs = 1 << self.tbl_bits  # apple_dart_cfg.n_ttbrs
        self.n_levels = self.levels_n + 1  # apple_dart_cfg.n_levels
        self.granule = pgsize
        self.pg_shift = pg_shift
        self.ias, self.oas = ias, oas
        self.page_sizes = [pgsize]
        self.levels = [Level(k, pg_shift + (k - 1) * self.bpl, self.bpl) for k in range(self.levels_n, 0, -1)]
        self.windows = [(0, 1 << ias)]
        self.ttbr_shift = pg_shift + self.levels_n * self.bpl  # dart_get_index(data, iova, data->levels)
        # DART2 table pointers hold PA[41:14]: place 4K tables where the pointer reaches them
        self.table_align = max(pgsize, SZ_16K) if self.dart2 else pgsize
        self._build_schemas()

    def _build_schemas(self) -> None:
        sub = [("subpage_start", 63, 52), ("subpage_end", 51, 40)]
        if self.dart2:
            self._leaf = Descriptor("dart2 page", 64, *sub, ("pa_41_14", 37, 10), ("no_read", 3, 3),
                                    ("no_write", 2, 2), ("no_cache", 1, 1), ("valid", 0, 0))
            self._table = Descriptor("dart2 table", 64, ("pa_41_14", 37, 10), ("valid", 0, 0))
            self.addr_mask = DART2_PADDR_MASK
            prot = DART2_NO_READ | DART2_NO_WRITE | DART2_NO_CACHE
            addr_ok = DART2_PADDR_MASK
        else:
            self._leaf = Descriptor("dart1 page", 64, *sub, ("pa_35_12", 35, 12), ("no_read", 8, 8),
                                    ("no_write", 7, 7), ("sp_dis", 1, 1), ("valid", 0, 0))
            self._table = Descriptor("dart1 table", 64, ("pa_35_12", 35, 12), ("valid", 0, 0))
            self.addr_mask = DART1_PADDR_MASK
            prot = DART1_NO_READ | DART1_NO_WRITE | DART1_SP_DIS
            addr_ok = DART1_PADDR_MASK & ~(self.granule - 1)  # pages and tables are page aligned
        self._invalid = Descriptor("invalid", 64, ("valid", 0, 0))
        self._ok_leaf = SUBPAGE_START | SUBPAGE_END | addr_ok | prot | PTE_VALID
        self._ok_table = addr_ok | PTE_VALID

    # -- roots -------------------------------------------------------------------------------------
    def root_from_register(self, value: int) -> list[int]:
        """apple_dart_hw_set_ttbr: `ttbr_valid | (paddr >> ttbr_shift) << ttbr_addr_field_shift`
        (T8020/T6000: bit 31 VALID | PA >> 12; T8110: bit 0 VALID | (PA >> 14) << 2)."""
        valid, field_shift, shift = TTBR_LAYOUT[self.variant]
        if value >> 32:
            raise ValueError(f"{value:#x} does not fit the 32-bit DART_TTBR register")
        if not value & valid:
            raise ValueError(f"TTBR {value:#x} has VALID clear: the DART has no table for it "
                             f"(apple_dart_hw_clear_ttbr)")
        return [((value & ~valid & 0xFFFF_FFFF) >> field_shift) << shift]

    def ttbr_value(self, root: int) -> int:
        """The DART_TTBR register value apple_dart_hw_set_ttbr writes for a table at `root`."""
        valid, field_shift, shift = TTBR_LAYOUT[self.variant]
        return valid | (root >> shift) << field_shift

    def top_tables(self, roots: Sequence[int]) -> list[TopTable]:
        """TTBR i serves the IOVAs whose `dart_get_index(data, iova, data->levels)` is i."""
        if len(roots) > self.n_ttbrs:
            raise ValueError(f"{self.name} with ias {self.ias} and {self.granule >> 10}K pages uses "
                             f"{self.n_ttbrs} TTBR(s); {len(roots)} roots given")
        end = 1 << self.ias
        out = []
        for i, r in enumerate(roots):
            base = i << self.ttbr_shift
            out.append(TopTable(r, 0, base, base, min(base + (1 << self.ttbr_shift), end)))
        return out

    def root_alloc(self) -> list[tuple[int, int]]:
        return [(self.granule, self.table_align)] * self.n_ttbrs  # iommu_alloc_pages_sz(DART_GRANULE)

    def table_alloc(self, lvl: Level) -> tuple[int, int]:
        return self.granule, self.table_align

    # -- decode ------------------------------------------------------------------------------------
    def _iopte_to_paddr(self, raw: int) -> int:
        if self.dart2:
            return (raw & DART2_PADDR_MASK) << DART2_PADDR_SHIFT
        return raw & DART1_PADDR_MASK

    def classify(self, raw: int, lvl: Level) -> int:
        if not raw:
            return INVALID
        return LEAF if lvl.num == 1 else TABLE  # non-zero is present (dart_get_last)

    def next_table(self, raw: int, lvl: Level) -> int:
        return self._iopte_to_paddr(raw)  # iopte_deref

    def leaf_size(self, raw: int, lvl: Level) -> int:
        return self.granule

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        return self._iopte_to_paddr(raw) & ~(self.granule - 1)

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        if self.dart2:
            prot = 0 if raw & DART2_NO_READ else IOMMU_READ
            prot |= 0 if raw & DART2_NO_WRITE else IOMMU_WRITE
            return prot | (0 if raw & DART2_NO_CACHE else IOMMU_CACHE)
        prot = 0 if raw & DART1_NO_READ else IOMMU_READ
        return prot | (0 if raw & DART1_NO_WRITE else IOMMU_WRITE)

    def kind_name(self, raw: int, lvl: Level, kind: int) -> str:
        return {TABLE: "table", LEAF: "page"}.get(kind, "invalid")

    def fields(self, raw: int, lvl: Level, kind: int) -> dict[str, Any]:
        d = self.schema(lvl, kind)
        return d.decode(raw) if d is not None else {}

    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        return {TABLE: self._table, LEAF: self._leaf}.get(kind, self._invalid)

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        novalid = "" if raw & PTE_VALID else "; VALID clear, yet dart_iova_to_phys uses any non-zero entry"
        if kind == TABLE:
            return f"level-{lvl.num - 1} table at {self.next_table(raw, lvl):#x}{novalid}"
        if kind == LEAF:
            start, end = (raw >> 52) & 0xFFF, (raw >> 40) & 0xFFF
            sub = ("subpage protection: the whole page (start 0, end 0xfff as dart_init_pte writes)"
                   if (start, end) == (0, 0xFFF) else f"subpage protection window {start:#x}..{end:#x}")
            if not self.dart2 and raw & DART1_SP_DIS:
                sub += ", disabled by SP_DIS"
            return (f"{self.granule >> 10} KiB page at PA {self.leaf_phys(raw, lvl):#x}, "
                    f"{prot_str(self.leaf_prot(raw, lvl))}; {sub}{novalid}")
        return "empty"

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == INVALID:
            return 0
        return raw & ~(self._ok_leaf if kind == LEAF else self._ok_table)

    def reserved_bits_vec(self, raw: np.ndarray, lvl: Level, kinds: np.ndarray) -> np.ndarray:
        """reserved_bits over a table's entries (check's hot path)."""
        r = raw.astype(np.uint64)
        ok = np.uint64(self._ok_leaf if lvl.num == 1 else self._ok_table)
        return np.where(kinds == INVALID, np.uint64(0), r & ~ok).astype(np.uint64)

    def legacy_iova_to_phys(self, iova: int, t: Translation) -> int:
        """dart_iova_to_phys: iopte_to_paddr(pte) | (iova & (pgsize - 1)), 0 on a miss."""
        if not t.mapped or t.raw is None:
            return 0
        return self._iopte_to_paddr(t.raw) | (iova & (self.granule - 1))

    def legacy_iova_to_phys_vec(self, iova: np.ndarray, phys: np.ndarray, size: np.ndarray, level: np.ndarray,
                                raw: np.ndarray) -> np.ndarray:
        out = self._paddr_vec(raw) | (iova & np.uint64(self.granule - 1))
        return np.where(size != 0, out, np.uint64(0))  # type: ignore[no-any-return]

    # -- vectorised --------------------------------------------------------------------------------
    def _paddr_vec(self, raw: np.ndarray) -> np.ndarray:
        r = raw.astype(np.uint64)
        if self.dart2:
            return (r & np.uint64(DART2_PADDR_MASK)) << np.uint64(DART2_PADDR_SHIFT)
        return r & np.uint64(DART1_PADDR_MASK)

    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.where(raw != 0, LEAF if lvl.num == 1 else TABLE, INVALID).astype(np.int8)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), self.granule, dtype=np.uint64)

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return self._paddr_vec(raw) & np.uint64(~(self.granule - 1) & ((1 << 64) - 1))

    def next_table_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return self._paddr_vec(raw)

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64)
        z = np.uint64(0)
        if self.dart2:
            prot = np.where(r & np.uint64(DART2_NO_READ) != z, 0, IOMMU_READ)
            prot |= np.where(r & np.uint64(DART2_NO_WRITE) != z, 0, IOMMU_WRITE)
            prot |= np.where(r & np.uint64(DART2_NO_CACHE) != z, 0, IOMMU_CACHE)
        else:
            prot = np.where(r & np.uint64(DART1_NO_READ) != z, 0, IOMMU_READ)
            prot |= np.where(r & np.uint64(DART1_NO_WRITE) != z, 0, IOMMU_WRITE)
        return prot.astype(np.int64)

    # -- encode (dart_map_pages) -------------------------------------------------------------------
    def prot_to_pte(self, prot: int) -> int:
        """dart_prot_to_pte."""
        if self.dart2:
            pte = 0 if prot & IOMMU_WRITE else DART2_NO_WRITE
            pte |= 0 if prot & IOMMU_READ else DART2_NO_READ
            return pte | (0 if prot & IOMMU_CACHE else DART2_NO_CACHE)
        pte = DART1_SP_DIS
        pte |= 0 if prot & IOMMU_WRITE else DART1_NO_WRITE
        return pte | (0 if prot & IOMMU_READ else DART1_NO_READ)

    def paddr_to_iopte(self, phys: int) -> int:
        if self.dart2:
            return (phys >> DART2_PADDR_SHIFT) & DART2_PADDR_MASK
        return phys & DART1_PADDR_MASK

    def _fits(self, phys: int, what: str) -> None:
        if self._iopte_to_paddr(self.paddr_to_iopte(phys)) != phys:
            field = "PA[41:14]" if self.dart2 else "PA[35:12]"
            raise ValueError(f"{what} {phys:#x} does not fit a {self.name} PTE, which holds {field} "
                             "(the kernel's map would write a different address)")

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        """dart_init_pte: prot, SUBPAGE_START 0, SUBPAGE_END 0xfff, VALID, the address."""
        self._fits(phys, "phys")
        return self.prot_to_pte(prot) | SUBPAGE_END | PTE_VALID | self.paddr_to_iopte(phys)

    def encode_leaf_vec(self, phys: np.ndarray, pgsize: int, lvl: Level, prot: int) -> np.ndarray:
        p = phys.astype(np.uint64)
        if len(p):
            bad = self._paddr_vec(self._iopte_vec(p)) != p
            if bad.any():
                self._fits(int(p[np.flatnonzero(bad)[0]]), "phys")
        return np.uint64(self.prot_to_pte(prot) | SUBPAGE_END | PTE_VALID) | self._iopte_vec(p)

    def _iopte_vec(self, p: np.ndarray) -> np.ndarray:
        if self.dart2:
            return (p >> np.uint64(DART2_PADDR_SHIFT)) & np.uint64(DART2_PADDR_MASK)
        return p & np.uint64(DART1_PADDR_MASK)

    def encode_table(self, table: int, lvl: Level) -> int:
        """dart_install_table."""
        self._fits(table, "table")
        return self.paddr_to_iopte(table) | PTE_VALID

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        # dart_map_pages: -EINVAL without R or W, -ERANGE for paddr >> oas (per map_pages call)
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            raise ValueError("prot needs r or w (dart_map_pages refuses neither)")
        if (phys + size - self.granule) >> self.oas:
            raise ValueError(f"phys {phys:#x}+{size:#x} is beyond oas ({self.oas} bits)")


class AppleDart(_Dart):
    name = "apple-dart"
    description = "Apple DART (t8020 PTEs: PA[35:12] in place), 4K/16K pages, 2-3 table levels, up to 4 TTBRs"
    config_defaults = {"ias": 32, "oas": 36, "granule": SZ_16K, "quirks": [], "variant": "t8020"}
    dart2 = False
    variants = ("t8020",)


class AppleDart2(_Dart):
    name = "apple-dart2"
    description = "Apple DART2 (t6000/t8110 PTEs: PA>>4 in bits 37:10), 4K/16K pages, 2-3 table levels"
    config_defaults = {"ias": 32, "oas": 42, "granule": SZ_16K, "quirks": [], "variant": "t6000"}
    dart2 = True
    variants = ("t6000", "t8110")


DRIVERS = {
    "apple-dart-t8020": {
        "format": "apple-dart",
        "config": {"variant": "t8020", "ias": 32, "oas": 36, "granule": SZ_16K},
        "description": "apple-dart.c apple,t8103-dart / apple,t8103-usb4-dart (DART_T8020): ias 32, oas 36, "
                       "page size from PARAMS1; TTBR = bit31 VALID | PA>>12",
    },
    "apple-dart-t6000": {
        "format": "apple-dart2",
        "config": {"variant": "t6000", "ias": 32, "oas": 42, "granule": SZ_16K},
        "description": "apple-dart.c apple,t6000-dart (DART_T6000): ias 32, oas 42; TTBR = bit31 VALID | PA>>12",
    },
    "apple-dart-t8110": {
        "format": "apple-dart2",
        "config": {"variant": "t8110", "ias": 32, "oas": 42, "granule": SZ_16K},
        "description": "apple-dart.c apple,t8110-dart (DART_T8110): ias/oas from PARAMS3 VA_WIDTH/PA_WIDTH "
                       "(ias > 36: four-level); one TTBR = bit0 VALID | (PA>>14)<<2",
    },
}

# The kernel has one apple-dart driver; its plain id names the first (t8103, DART1) layout.
DRIVERS["apple-dart"] = {**DRIVERS["apple-dart-t8020"],
                         "description": "apple-dart.c (alias of apple-dart-t8020, the M1 t8103 DART)"}
