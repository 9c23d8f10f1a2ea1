"""What the generic_pt ("iommupt") formats share: configuration (pt_iommu_init, pt_init_common,
the format's pt_iommu_fmt_init), geometry (pt_fmt_defaults.h, pt_iter.h), the domain's page
sizes (NS(get_info)), the map path's page-size choice (pt_compute_best_pgsize), the dynamic top
(increase_top), the legacy iova_to_phys (DOMAIN_NS(iova_to_phys)) and the hardware root words.

Kernel: drivers/iommu/generic_pt/ at the v7.1 merge window (iommu_pt.h blob 19b6daf8, pt_iter.h
3e45dbde, pt_common.h e1123d35); include/linux/generic_pt/common.h (enum pt_features).

Level numbering is generic_pt's own: level 0 holds only leaves (the granule-sized pages), the
number rises toward the root and the top table is level `levels - 1` (pt_defs.h "Generic Page
Table Language"). Every item is a little-endian u64; every non-top table is 4 KiB (512 items).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from iommuctl.numbers import fmt_size, parse_number

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
    PageTable,
    TopTable,
    Translation,
    prot_str,
)
from ..lazy import np

# (phys_addr_t)-ERANGE: what DOMAIN_NS(iova_to_phys) returns when make_range()/pt_check_range()
# refuse the IOVA (non-canonical, above max_vasz_lg2, above the current dynamic top).
ERANGE_PHYS = (-34) & U64

# enum pt_features (include/linux/generic_pt/common.h), spelt as SPEC section 3 says.
COMMON_FEATURES = ("dma-incoherent", "full-va", "dynamic-top", "sign-extend", "flush-range", "flush-range-no-gaps")

ITEM_LG2 = 3  # PT_ITEM_WORD_SIZE = sizeof(u64)


def genmask(hi: int, lo: int) -> int:
    return ((1 << (hi - lo + 1)) - 1) << lo


def feature_name(value: Any) -> str:
    """`PT_FEAT_SIGN_EXTEND`, `sign_extend`, `Sign-Extend` -> `sign-extend`."""
    if not isinstance(value, str):
        raise ConfigError("features", f"{value!r} is not a feature name")
    return value.strip().lower().replace("_", "-").removeprefix("pt-feat-")


def ffz(value: int) -> int:
    """Index of the lowest clear bit (ffz_t)."""
    return ((~value) & (value + 1)).bit_length() - 1


class GenericPt(PageTable):
    """One generic_pt format. Subclasses give the fmt/<name>.h constants and the entry hooks."""

    kernel_source: ClassVar[str] = "drivers/iommu/generic_pt/"
    prefix: ClassVar[str] = ""  # the kernel symbol prefix, pt_iommu_<prefix>_init
    # fmt/<name>.h enum constants
    granule_lg2: ClassVar[int] = 12  # PT_GRANULE_LG2SZ
    tablemem_lg2: ClassVar[int] = 12  # PT_TABLEMEM_LG2SZ
    max_top_level: ClassVar[int] = 4  # PT_MAX_TOP_LEVEL
    max_va_lg2: ClassVar[int] = 57  # PT_MAX_VA_ADDRESS_LG2
    max_oa_lg2: ClassVar[int] = 52  # PT_MAX_OUTPUT_ADDRESS_LG2
    top_phys_mask: ClassVar[int] = genmask(51, 12)  # PT_TOP_PHYS_MASK
    # __map_range_leaf -> clear_contig: a table where the leaf goes is freed if __collect_tables
    # finds no OA entry below it (a table left empty by unmap, or the old top after increase_top)
    leaf_replaces_empty_table: ClassVar[bool] = True
    # iommu_<fmt>.c PT_SUPPORTED_FEATURES (names) and the format-private names
    supported_features: ClassVar[tuple[str, ...]] = ()
    fmt_features: ClassVar[tuple[str, ...]] = ()
    #: the SME C-bit is meaningful (PT_FEAT_*_ENCRYPT_TABLES): config key sme_me_mask
    has_sme: ClassVar[bool] = False
    encrypt_feature: ClassVar[str] = ""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.config = dict(config)
        raw = config.get("features")
        if raw is None:
            raw = []
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list | tuple):
            raise ConfigError("features", f"{raw!r} is not a list of PT_FEAT_* names")
        known = COMMON_FEATURES + self.fmt_features
        feats: set[str] = set()
        for v in raw:
            name = feature_name(v)
            if name not in known:
                raise ConfigError("features", f"unknown feature {v!r} for {self.name} (PT_FEAT_* names: "
                                              f"{', '.join(known)})")
            if name not in self.supported_features and name != "full-va":
                raise ConfigError("features", f"{self.name} does not support {name}: it is not in "
                                              f"PT_SUPPORTED_FEATURES of iommu_{self.prefix}.c "
                                              f"({', '.join(self.supported_features) or 'none'}); "
                                              f"pt_init_common refuses it (-EOPNOTSUPP)")
            feats.add(name)
        self.features = feats
        self.requested_features = frozenset(feats)
        self.sme_me_mask = 0
        if self.has_sme:
            self.sme_me_mask = self._int("sme_me_mask", config.get("sme_me_mask") or 0)
            m = self.sme_me_mask
            if m and (m & (m - 1) or not m & genmask(51, 12)):
                raise ConfigError("sme_me_mask", f"{m:#x} is not one C-bit inside the address field [51:12] "
                                                 f"(the kernel's sme_me_mask; 0 without SME)")
        vasz = config.get("vasz")
        oasz = config.get("oasz")
        levels = config.get("levels")
        levels, vasz = self.pick_geometry(None if levels is None else self._int("levels", levels),
                                          None if vasz is None else self._int("vasz", vasz))
        oasz = self.max_oa_lg2 if oasz is None else self._int("oasz", oasz)
        # pt_iommu_init: widths must be non-zero and within the format
        if not 0 < vasz <= self.max_va_lg2:
            raise ConfigError("vasz", f"vasz {vasz} is outside 1..{self.max_va_lg2} (PT_MAX_VA_ADDRESS_LG2 of "
                                      f"{self.name}): pt_iommu_init refuses it (-EINVAL)")
        if not 0 < oasz <= self.max_oa_lg2:
            raise ConfigError("oasz", f"oasz {oasz} is outside 1..{self.max_oa_lg2} (PT_MAX_OUTPUT_ADDRESS_LG2 "
                                      f"of {self.name}): pt_iommu_init refuses it (-EINVAL)")
        self.hw_vasz = vasz
        self.max_vasz = self.fmt_init(levels - 1, vasz)
        self.oas = oasz
        self._setup(levels - 1)
        # pt_init_common: SIGN_EXTEND excludes FULL_VA and DYNAMIC_TOP
        if "sign-extend" in self.features and ({"full-va", "dynamic-top"} & self.features):
            raise ConfigError("features", "sign-extend cannot go with full-va or dynamic-top "
                                          "(pt_iommu_init refuses it: -EINVAL)")
        self.page_sizes = self._page_sizes(config.get("pgsize_bitmap"))
        self._schemas: dict[tuple[int, int, int], Descriptor] = {}

    # -- configuration -------------------------------------------------------------------------
    def _int(self, key: str, value: Any) -> int:
        if isinstance(value, bool):
            raise ConfigError(key, f"{value!r} is not a number")
        try:
            return parse_number(value)
        except ValueError as e:
            raise ConfigError(key, str(e)) from None

    def pick_geometry(self, levels: int | None, vasz: int | None) -> tuple[int, int]:
        """(levels, hw_max_vasz_lg2) from the config, filling in what was left out."""
        if levels is None:
            levels = self.default_levels(vasz)
        if vasz is None:
            vasz = self.default_vasz(levels)
        return levels, vasz

    def default_levels(self, vasz: int | None) -> int:
        return 4

    def default_vasz(self, levels: int) -> int:
        """The width a table of `levels` decodes in full."""
        top = levels - 1
        return min(self.item_lg2(top) + self.num_items_lg2(top), self.max_va_lg2)

    def fmt_init(self, top: int, vasz: int) -> int:
        """The format's pt_iommu_fmt_init: validate the top level; max_vasz_lg2."""
        return vasz

    def item_lg2(self, level: int) -> int:
        """pt_table_item_lg2sz (pt_fmt_defaults.h): granule + 9 bits per level."""
        return self.granule_lg2 + (self.tablemem_lg2 - ITEM_LG2) * level

    def num_items_lg2(self, level: int) -> int:
        return self.tablemem_lg2 - ITEM_LG2

    def can_have_leaf(self, level: int) -> bool:
        return True

    def contig_count_lg2(self, level: int) -> int:
        return 0

    def possible_sizes(self, level: int) -> int:
        """pt_possible_sizes default: the item size, and the contiguous size if any."""
        if not self.can_have_leaf(level):
            return 0
        isz = self.item_lg2(level)
        return (1 << isz) | (1 << (isz + self.contig_count_lg2(level)))

    def top_range_vasz(self, top: int) -> int:
        """_pt_top_range: range.max_vasz_lg2 for a top at `top` (lowered under DYNAMIC_TOP)."""
        if "dynamic-top" in self.features and top != self.max_top_level:
            return min(self.max_vasz, self.num_items_lg2(top) + self.item_lg2(top))
        return self.max_vasz

    def _setup(self, top: int) -> None:
        """Geometry for a top at level `top`, plus the pt_init_common checks."""
        if not 0 <= top <= self.max_top_level:
            raise ConfigError("levels", f"{top + 1} levels: the top level must be 0..{self.max_top_level} "
                                        f"(PT_MAX_TOP_LEVEL)")
        cur = self.top_range_vasz(top)
        if "dynamic-top" in self.features and (top == self.max_top_level or cur == self.max_vasz) \
                and not getattr(self, "_growing", False):
            # pt_init_common: the top already spans max_vasz_lg2, nothing to grow
            self.features.discard("dynamic-top")
        if "dynamic-top" not in self.features and top != self.max_top_level:
            decode = self.num_items_lg2(top) + self.item_lg2(top)
            if self.max_vasz > decode:
                raise ConfigError("levels", f"{top + 1} levels decode {decode} VA bits, less than vasz "
                                            f"{self.max_vasz} (pt_init_common: -EOPNOTSUPP)")
        if cur == 64:
            self.features.add("full-va")
        self.top_level = top
        self.cur_vasz = cur
        self.levels = []
        for lv in range(top, -1, -1):
            isz = self.item_lg2(lv)
            bits = max(cur - isz, 0) if lv == top else self.num_items_lg2(lv)
            self.levels.append(Level(lv, isz, bits))
        if "sign-extend" in self.features:
            half = 1 << (self.max_vasz - 1)
            self.windows = [(0, half), ((1 << 64) - half, 1 << 64)]
        else:
            self.windows = [(0, 1 << self.max_vasz)]
        self.config["levels"] = top + 1
        self.config["vasz"] = self.hw_vasz

    def _page_sizes(self, requested: Any) -> list[int]:
        """NS(get_info): OR of pt_possible_sizes over the levels (every level whose item is
        below max_vasz under DYNAMIC_TOP), sizes below 2^max_oasz_lg2; then what the driver
        narrows domain->pgsize_bitmap to."""
        bm = 0
        if "dynamic-top" in self.features:
            for lv in range(self.max_top_level + 1):
                if self.item_lg2(lv) >= self.max_vasz:
                    break
                bm |= self.possible_sizes(lv)
        else:
            for lv in range(self.top_level + 1):
                bm |= self.possible_sizes(lv)
        bm &= (1 << self.oas) - 1
        if requested is not None:
            want = self._int("pgsize_bitmap", requested)
            if want & ~bm:
                raise ConfigError("pgsize_bitmap", f"{want:#x} has sizes {want & ~bm:#x} {self.name} cannot map "
                                                   f"(its bitmap is {bm:#x})")
            bm &= want
            if not bm:
                raise ConfigError("pgsize_bitmap", "no page size left")
        self.bitmap = bm
        return [1 << i for i in range(bm.bit_length()) if bm >> i & 1]

    # -- roots -----------------------------------------------------------------------------------
    def top_tables(self, roots: Sequence[int]) -> list[TopTable]:
        """One root; with sign-extend it serves both canonical halves (the top index keeps the
        sign bit, pt_range_to_index). The walk stops where the current top stops decoding."""
        top = self.levels[0]
        limit = 1 << self.cur_vasz
        out = []
        for start, end in self.windows:
            base = start & ~(top.span - 1) & U64
            if "sign-extend" not in self.features:
                end = min(end, limit)
            if start < end:
                out.append(TopTable(roots[0], 0, base, start, end))
        return out

    def root_alloc(self) -> list[tuple[int, int]]:
        """pt_top_memsize_lg2: the top's items, at least ffs(PT_TOP_PHYS_MASK) = 4 KiB."""
        size = max(self.levels[0].entries << ITEM_LG2, 1 << ffz(~self.top_phys_mask & U64))
        return [(size, size)]

    def table_alloc(self, lvl: Level) -> tuple[int, int]:
        size = 1 << (self.num_items_lg2(lvl.num) + ITEM_LG2)  # table_alloc()
        return size, size

    def reconfigure(self, levels: int, vasz: int | None = None) -> None:
        """A root register named a different number of levels: configure for it."""
        if vasz is not None:
            self.hw_vasz = vasz
        self.features = set(self.requested_features)
        self.max_vasz = self.fmt_init(levels - 1, self.hw_vasz)
        self._setup(levels - 1)
        self.page_sizes = self._page_sizes(self.config.get("pgsize_bitmap"))

    # -- dynamic top (iommu_pt.h increase_top / check_map_range) --------------------------------
    def pgsz_level(self, pgsize: int) -> int:
        """pt_pgsz_lg2_to_level."""
        return (pgsize.bit_length() - 1 - self.granule_lg2) // (self.tablemem_lg2 - ITEM_LG2)

    def grow_top(self, mem: Any, roots: Sequence[int], alloc: Callable[[int, int], int], iova: int,
                 size: int, pgsize: int) -> list[int] | None:
        """PT_FEAT_DYNAMIC_TOP: add top tables, each linking the old top at index 0, until the
        range fits the top range and the leaf level is at or below the top."""
        if "dynamic-top" not in self.features or not roots:
            return None
        last = iova + size - 1
        leaf_level = self.pgsz_level(pgsize)
        top, root = self.top_level, roots[0]
        grown = False
        while not (last >> self.top_range_vasz(top) == 0 and leaf_level <= top):
            nxt = top + 1
            if nxt > self.max_top_level or self.item_lg2(nxt) >= self.max_vasz:
                raise ValueError(f"iova {iova:#x}+{size:#x} is beyond what the top can grow to "
                                 f"(vasz {self.max_vasz}): increase_top returns -ERANGE")
            lvl = Level(nxt, self.item_lg2(nxt), 0)
            nsize = max(1 << (min(self.max_vasz, self.num_items_lg2(nxt) + self.item_lg2(nxt))
                              - self.item_lg2(nxt) + ITEM_LG2), 1 << ffz(~self.top_phys_mask & U64))
            new = alloc(nsize, nsize)
            mem.write_uint(new, 8, self.encode_table(root, lvl), "little")
            top, root, grown = nxt, new, True
        if not grown:
            return None
        self._growing = True
        try:
            self._setup(top)
        finally:
            self._growing = False
        return [root]

    # -- legacy iova_to_phys -----------------------------------------------------------------------
    def range_ok(self, iova: int) -> bool:
        """pt_check_range for [iova, iova]: the prefix above the current top range is 0 (or all
        ones with sign-extend and the sign bit set)."""
        w = self.cur_vasz
        if "sign-extend" in self.features:
            prefix = U64 if iova >> (w - 1) & 1 else 0
            return iova >> w == prefix >> w
        return iova >> w == 0

    def entry_oa(self, raw: int, lvl: Level) -> int:
        """pt_entry_oa: the OA of the start of the (contiguous) entry as the kernel reads it."""
        return self.leaf_phys(raw, lvl)

    def legacy_iova_to_phys(self, iova: int, t: Translation) -> int:
        """DOMAIN_NS(iova_to_phys): pt_entry_oa_exact (the entry's OA ORed with the offset in the
        whole contiguous entry) on a hit, 0 on a miss, (phys_addr_t)-ERANGE when pt_check_range
        refuses the IOVA."""
        if not self.range_ok(iova & U64):
            return ERANGE_PHYS
        if not t.mapped or t.raw is None or t.level is None:
            return 0
        lvl = next(lv for lv in self.levels if lv.num == t.level)
        return (self.entry_oa(t.raw, lvl) | (iova & (t.size - 1))) & U64

    def legacy_iova_to_phys_vec(self, iova: np.ndarray, phys: np.ndarray, size: np.ndarray, level: np.ndarray,
                                raw: np.ndarray) -> np.ndarray | None:
        if type(self).entry_oa is not GenericPt.entry_oa:
            return None  # a format reading the OA its own way: the scalar hook
        iova = iova.astype(np.uint64)
        out = np.zeros(len(iova), dtype=np.uint64)
        for lvl in self.levels:  # the OA is read per level (a few at most)
            k = np.flatnonzero((size != 0) & (level == lvl.num))
            if len(k):
                oa = np.asarray(self.leaf_phys_vec(raw[k].astype(np.uint64), lvl)).astype(np.uint64)
                out[k] = oa | (iova[k] & (size[k].astype(np.uint64) - np.uint64(1)))
        w = self.cur_vasz
        if w < 64:  # pt_check_range: the prefix above the top range is 0 (all ones when sign-extended)
            top = iova >> np.uint64(w)
            ok = top == 0
            if "sign-extend" in self.features:
                ok = np.where((iova >> np.uint64(w - 1)) & np.uint64(1) == 1, top == np.uint64(U64 >> w), ok)
            out[~ok] = np.uint64(ERANGE_PHYS)
        return out

    # -- builder -----------------------------------------------------------------------------------
    def leaf_placement(self, pgsize: int) -> tuple[int, int]:
        """The level pt_pgsz_lg2_to_level picks, and 2^num_contig items there."""
        level = self.pgsz_level(pgsize)
        if level > self.top_level or not pgsize & self.possible_sizes(level):
            raise ValueError(f"{self.name}: page size {fmt_size(pgsize)} has no level in this table")
        return self.top_level - level, pgsize >> self.item_lg2(level)

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        """NS(map_range): READ or WRITE (a WARN and -EINVAL), paddr beyond max_oasz (-ERANGE),
        then pt_iommu_set_prot's own refusals."""
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            raise ValueError("prot needs r or w (map_range WARNs and returns -EINVAL)")
        if phys >> self.oas:
            raise ValueError(f"phys {phys:#x} is beyond oasz ({self.oas} bits): map_range returns -ERANGE")
        if self.sme_me_mask and (phys | (phys + size - 1)) & self.sme_me_mask:
            raise ValueError(f"phys {phys:#x}+{size:#x} reaches the SME C-bit {self.sme_me_mask:#x}: "
                             f"memory encryption takes that bit from the physical address")
        self.set_prot(prot)

    def set_prot(self, prot: int) -> int:
        """pt_iommu_set_prot: the leaf's descriptor bits (ValueError where the kernel refuses)."""
        raise NotImplementedError

    # -- explain -----------------------------------------------------------------------------------
    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        key = (lvl.num, kind, 0)
        d = self._schemas.get(key)
        if d is None:
            d = self._schemas[key] = self.make_schema(lvl, kind)
        return d

    def make_schema(self, lvl: Level, kind: int) -> Descriptor:
        raise NotImplementedError

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            return f"level {lvl.num - 1} table at {self.next_table(raw, lvl):#x}"
        if kind == LEAF:
            size = self.leaf_size(raw, lvl)
            n = size >> lvl.shift
            rep = f", one of {n} identical items" if n > 1 else ""
            return (f"{fmt_size(size)} leaf at {self.leaf_phys(raw, lvl):#x}, "
                    f"{prot_str(self.leaf_prot(raw, lvl))}{rep}")
        return "not present: the walk stops"

    kind_name_reads_raw = True  # a contiguous leaf is named by its size

    def kind_name(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            return "table"
        if kind == LEAF:
            if self.leaf_size(raw, lvl) > lvl.block:
                return "contiguous"
            return "page" if lvl.num == 0 else "block"
        return "invalid"

    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64, copy=False)
        present = self.present_vec(r)
        leaf = self.leaf_vec(r, lvl)
        out = np.where(present, np.where(leaf, np.int8(LEAF), np.int8(TABLE)), np.int8(INVALID))
        return out.astype(np.int8)

    def present_vec(self, r: np.ndarray) -> np.ndarray:
        return (r & np.uint64(1)) != 0

    def leaf_vec(self, r: np.ndarray, lvl: Level) -> np.ndarray:
        raise NotImplementedError
