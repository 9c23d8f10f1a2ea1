"""ARM LPAE long-descriptor tables: the five io-pgtable-arm formats sharing one engine.

Kernel source: drivers/iommu/io-pgtable-arm.c (blob 0208e589, v7.1 merge window), the register
constants in io-pgtable-arm.h, quirk names in include/linux/io-pgtable.h. Every rule below names
the kernel function or macro it follows; no kernel code is copied.

  arm-lpae-s1     ARM_64_LPAE_S1   arm_64_lpae_alloc_pgtable_s1
  arm-lpae-s2     ARM_64_LPAE_S2   arm_64_lpae_alloc_pgtable_s2
  arm-lpae-32-s1  ARM_32_LPAE_S1   arm_32_lpae_alloc_pgtable_s1 (ias <= 32, oas <= 40, 4K only)
  arm-lpae-32-s2  ARM_32_LPAE_S2   arm_32_lpae_alloc_pgtable_s2 (ias, oas <= 40, 4K only)
  arm-mali-lpae   ARM_MALI_LPAE    arm_mali_lpae_alloc_pgtable (no quirks, ias <= 48, oas <= 40)

Levels are numbered architecturally, 0..3 (ARM_LPAE_MAX_LEVELS), 3 being the last.

Decoding follows the kernel's walker (iopte_leaf / iopte_table / iopte_to_paddr), so a block at
a level the architecture has none for (a 4K level-0 block) still translates, and check flags it.
The kernel's iova_to_phys never range-checks the IOVA (bits above ias are masked off by
ARM_LPAE_LVL_IDX and alias); here `windows` bounds the input space and the front end refuses an
IOVA outside it instead of aliasing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from iommuctl.numbers import fmt_size, parse_number

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
    U64,
    ConfigError,
    Descriptor,
    Level,
    PageTable,
    Translation,
    prot_str,
)
from .builder import iommu_pgsize
from .lazy import np

SZ_4K, SZ_16K, SZ_64K = 1 << 12, 1 << 14, 1 << 16
SZ_2M, SZ_32M, SZ_512M, SZ_1G, SZ_4T = 1 << 21, 1 << 25, 1 << 29, 1 << 30, 1 << 42

ARM_LPAE_MAX_ADDR_BITS = 52
ARM_LPAE_S2_MAX_CONCAT_PAGES = 16
ARM_LPAE_MAX_LEVELS = 4


def genmask(hi: int, lo: int) -> int:
    return ((1 << (hi - lo + 1)) - 1) << lo


# Descriptor bits (io-pgtable-arm.c ARM_LPAE_PTE_* macros).
PTE_TYPE_MASK = 0x3
PTE_TYPE_BLOCK = 1  # ARM_LPAE_PTE_TYPE_BLOCK
PTE_TYPE_TABLE = 3  # ARM_LPAE_PTE_TYPE_TABLE
PTE_TYPE_PAGE = 3  # ARM_LPAE_PTE_TYPE_PAGE
PTE_ADDR_MASK = genmask(47, 12)  # ARM_LPAE_PTE_ADDR_MASK
PTE_ADDR_MASK_52 = PTE_ADDR_MASK << 4  # GENMASK(51,16): where iopte_to_paddr rotates 64K addresses
PTE_NSTABLE = 1 << 63
PTE_XN = 3 << 53
PTE_CONT = 1 << 52  # contiguous hint: the kernel never sets it
PTE_DBM = 1 << 51
PTE_SW_SYNC = 1 << 55  # software bit: table entry cleaned to PoC (non-coherent walks)
PTE_AF = 1 << 10
PTE_NG = 1 << 11
PTE_SH_OS = 2 << 8
PTE_SH_IS = 3 << 8
PTE_SH_MASK = 3 << 8
PTE_NS = 1 << 5
PTE_AP_UNPRIV = 1 << 6
PTE_AP_RDONLY = 1 << 7
PTE_HAP_READ = 1 << 6
PTE_HAP_WRITE = 2 << 6
PTE_ATTRINDX_SHIFT = 2
PTE_ATTRINDX_MASK = 7 << 2
PTE_MEMATTR_MASK = 0xF << 2
MEMATTR_FWB_WB, MEMATTR_OIWB, MEMATTR_NC, MEMATTR_DEV = 0x6, 0xF, 0x5, 0x1  # ARM_LPAE_PTE_MEMATTR_*
MAIR_IDX_NC, MAIR_IDX_CACHE, MAIR_IDX_DEV, MAIR_IDX_INC_OCACHE = 0, 1, 2, 3
MAIR_ATTR = {MAIR_IDX_NC: 0x44, MAIR_IDX_CACHE: 0xFF, MAIR_IDX_DEV: 0x04, MAIR_IDX_INC_OCACHE: 0xF4}

# io-pgtable-arm.h register field values.
TCR_TG0 = {SZ_4K: 0, SZ_64K: 1, SZ_16K: 2}
TCR_TG1 = {SZ_16K: 1, SZ_4K: 2, SZ_64K: 3}
TCR_SH_OS, TCR_SH_IS = 2, 3
TCR_RGN_NC, TCR_RGN_WBWA = 0, 1
TCR_PS = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}  # ARM_LPAE_TCR_PS_*_BIT

# Mali TRANSTAB (io-pgtable-arm.c ARM_MALI_LPAE_TTBR_*; panfrost_regs.h AS_TRANSTAB_LPAE_*).
MALI_TTBR_ADRMODE_TABLE = 3
MALI_TTBR_READ_INNER = 1 << 2
MALI_TTBR_SHARE_OUTER = 1 << 4
MALI_TRANSTAB_ADDR_MASK = 0xFFFF_FFFF_FFFF_F000  # AS_TRANSTAB_LPAE_ADDR_SPACE_MASK
MALI_MEMATTR_IMP_DEF, MALI_MEMATTR_WRITE_ALLOC = 0x88, 0x8D

# include/linux/io-pgtable.h IO_PGTABLE_QUIRK_* (names as SPEC section 3 spells them).
QUIRKS = {
    "arm-ns": 1 << 0, "no-perms": 1 << 1, "arm-mtk-ext": 1 << 3, "arm-mtk-ttbr-ext": 1 << 4,
    "arm-ttbr1": 1 << 5, "arm-outer-wbwa": 1 << 6, "arm-hd": 1 << 7, "arm-s2fwb": 1 << 8, "no-warn": 1 << 9,
}

# arm_lpae_restrict_pgsizes: the sizes each granule may offer (4T added when oas > 48).
GRANULE_PAGE_SIZES = {SZ_4K: SZ_4K | SZ_2M | SZ_1G, SZ_16K: SZ_16K | SZ_32M, SZ_64K: SZ_64K | SZ_512M}


def _bits(mask: int) -> list[int]:
    return [1 << i for i in range(mask.bit_length()) if mask >> i & 1]


def _num(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(key, f"{value!r} is not a number")
    try:
        return parse_number(value)
    except ValueError as e:
        raise ConfigError(key, str(e)) from None


def quirk_name(value: Any) -> str:
    """`IO_PGTABLE_QUIRK_ARM_NS`, `arm_ns`, `ARM-NS` -> `arm-ns`."""
    if not isinstance(value, str):
        raise ConfigError("quirks", f"{value!r} is not a quirk name ({', '.join(QUIRKS)})")
    name = value.strip().lower().replace("_", "-").removeprefix("io-pgtable-quirk-")
    if name not in QUIRKS:
        raise ConfigError("quirks", f"unknown quirk {value!r} (io-pgtable quirks: {', '.join(QUIRKS)})")
    return name


class ArmLpae(PageTable):
    """The shared engine. Subclasses only say which kernel format they are."""
    leaf_size_is_block = True  # io-pgtable-arm maps no contiguous-hint leaves

    kernel_source: ClassVar[str] = "drivers/iommu/io-pgtable-arm.c"
    kernel_fmt: ClassVar[str] = ""
    alloc_fn: ClassVar[str] = ""
    stage: ClassVar[int] = 1
    mali: ClassVar[bool] = False
    #: pre-masks of the 32-bit and Mali allocators: (max ias, max oas) or None
    limits: ClassVar[tuple[int, int] | None] = None
    #: quirks the allocator accepts (anything else makes it return NULL)
    accepted_quirks: ClassVar[tuple[str, ...]] = ()
    root_register: ClassVar[str | None] = "ttbr"
    register_name: ClassVar[str] = "TTBR"
    prot_key_mask: ClassVar[int | None] = ~PTE_ADDR_MASK & U64  # prot is in the attribute bits only
    leaf_replaces_table: ClassVar[bool] = True  # __arm_lpae_map: the old table is freed

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        granule = _num(config.get("granule", SZ_4K), "granule")
        ias = _num(config.get("ias", self.config_defaults["ias"]), "ias")
        oas = _num(config.get("oas", self.config_defaults["oas"]), "oas")
        page_size = _num(config.get("page_size", 4096), "page_size")
        coherent = config.get("coherent_walk", True)
        if not isinstance(coherent, bool):
            raise ConfigError("coherent_walk", f"{coherent!r} is not true/false")
        raw_quirks = config.get("quirks") or []
        if isinstance(raw_quirks, str):
            raw_quirks = [raw_quirks]
        if not isinstance(raw_quirks, list | tuple):
            raise ConfigError("quirks", f"{raw_quirks!r} is not a list of quirk names")
        quirks = {quirk_name(q) for q in raw_quirks}
        granules = (SZ_4K,) if self.limits is not None else (SZ_4K, SZ_16K, SZ_64K)
        if granule not in granules:
            raise ConfigError("granule", f"{fmt_size(granule)} is not a granule of {self.name} "
                                         f"({', '.join(fmt_size(g) for g in granules)})")
        if page_size < SZ_4K or page_size & (page_size - 1):
            raise ConfigError("page_size", f"{page_size:#x} is not a host PAGE_SIZE (a power of two >= 4K)")

        # The allocator's own quirk filter comes first (arm_64_lpae_alloc_pgtable_s1/_s2, Mali).
        for q in sorted(quirks):
            if q not in self.accepted_quirks:
                ok = ", ".join(self.accepted_quirks) or "none"
                raise ConfigError("quirks", f"{self.name} does not take quirk {q}: {self.alloc_fn} refuses it "
                                            f"(accepted: {ok})")
        if self.limits is not None and (ias > self.limits[0] or oas > self.limits[1]):
            key = "ias" if ias > self.limits[0] else "oas"
            raise ConfigError(key, f"{self.name} takes ias <= {self.limits[0]} and oas <= {self.limits[1]} "
                                   f"({self.alloc_fn}); got ias {ias}, oas {oas}")

        # The requested pgsize_bitmap: as the driver gives it, or the granule's sizes.
        requested = config.get("pgsize_bitmap")
        if requested is None:
            bitmap = GRANULE_PAGE_SIZES[granule] | (SZ_4T if granule == SZ_64K else 0)
        else:
            bitmap = _num(requested, "pgsize_bitmap")
        if self.limits is not None:  # the 32-bit and Mali allocators force 4K|2M|1G
            bitmap &= SZ_4K | SZ_2M | SZ_1G
        bitmap, ias, oas, chosen = self.restrict_pgsizes(bitmap, ias, oas, page_size)
        if not bitmap & (SZ_4K | SZ_16K | SZ_64K):
            raise ConfigError("pgsize_bitmap" if requested is not None else "granule",
                              f"no 4K, 16K or 64K granule is left in pgsize_bitmap {bitmap:#x} "
                              f"(arm_lpae_alloc_pgtable refuses it)")
        if chosen != granule:
            raise ConfigError("granule", f"{fmt_size(granule)}, but pgsize_bitmap {requested} with host page_size "
                                         f"{fmt_size(page_size)} selects the {fmt_size(chosen)} granule "
                                         f"(arm_lpae_restrict_pgsizes); set granule: {fmt_size(chosen)}")

        pg_shift = granule.bit_length() - 1
        bpl = pg_shift - 3  # bits_per_level: one granule of 8-byte entries
        va_bits = ias - pg_shift
        if va_bits <= 0:
            raise ConfigError("ias", f"ias {ias} leaves no index bits above the {fmt_size(granule)} granule")
        levels = -(-va_bits // bpl)
        start = ARM_LPAE_MAX_LEVELS - levels
        pgd_bits = va_bits - bpl * (levels - 1)
        concatenated = False

        if self.stage == 1 and not self.mali:
            # arm_64_lpae_alloc_pgtable_s1: TCR
            if coherent:
                if "arm-outer-wbwa" in quirks:
                    raise ConfigError("quirks", "arm-outer-wbwa needs coherent_walk: false "
                                                "(arm_64_lpae_alloc_pgtable_s1 refuses it for coherent walks)")
                sh, irgn, orgn = TCR_SH_IS, TCR_RGN_WBWA, TCR_RGN_WBWA
            else:
                sh, irgn = TCR_SH_OS, TCR_RGN_NC
                orgn = TCR_RGN_WBWA if "arm-outer-wbwa" in quirks else TCR_RGN_NC
            if oas not in TCR_PS:
                raise ConfigError("oas", f"oas {oas} has no TCR.IPS encoding ({', '.join(map(str, TCR_PS))})")
            tg = (TCR_TG1 if "arm-ttbr1" in quirks else TCR_TG0)[granule]
            self.tcr: dict[str, int] = {"ips": TCR_PS[oas], "tg": tg, "sh": sh, "orgn": orgn, "irgn": irgn,
                                        "tsz": 64 - ias}
            # The kernel builds MAIR from int constants: ATTR_INC_OWBRWA << 24 overflows int and
            # sign-extends, so the value it reports is 0xfffffffff404ff44, not 0xf404ff44.
            mair = 0
            for idx, attr in MAIR_ATTR.items():
                mair |= attr << (8 * idx)
            self.mair = mair | (genmask(63, 32) if mair & (1 << 31) else 0)
        elif self.stage == 2:
            # arm_lpae_concat_mandatory (the rule since 2025: Arm DDI0487 K.a R_DXBSH / R_SRKBC):
            # concatenate only where the architecture makes it mandatory, not whenever it fits.
            if granule == SZ_16K and start == 0:
                concatenated = oas == 48 or ias == 48
            elif granule == SZ_4K and start == 0:
                concatenated = oas in (40, 42)
            else:
                concatenated = granule == SZ_16K and start == 1 and oas == 40
            if concatenated:
                if (1 << pgd_bits) > ARM_LPAE_S2_MAX_CONCAT_PAGES:
                    raise ConfigError("ias", f"ias {ias} would need {1 << pgd_bits} concatenated tables "
                                             f"(ARM_LPAE_S2_MAX_CONCAT_PAGES is {ARM_LPAE_S2_MAX_CONCAT_PAGES})")
                pgd_bits += bpl
                start += 1
            if oas not in TCR_PS:
                raise ConfigError("oas", f"oas {oas} has no VTCR.PS encoding ({', '.join(map(str, TCR_PS))})")
            sl = start + (1 if granule == SZ_4K else 0)  # SL0 is encoded differently for 4K
            self.vtcr: dict[str, int] = {
                "ps": TCR_PS[oas], "tg": TCR_TG0[granule],
                "sh": TCR_SH_IS if coherent else TCR_SH_OS,
                "orgn": TCR_RGN_WBWA if coherent else TCR_RGN_NC, "irgn": TCR_RGN_WBWA if coherent else TCR_RGN_NC,
                "sl": ~sl & 3, "tsz": 64 - ias}
        else:
            # arm_mali_lpae_alloc_pgtable: Mali always walks 4 levels from level 0.
            if start > 0:
                start, pgd_bits = 0, 0
            self.memattr = (MALI_MEMATTR_IMP_DEF << 8 * MAIR_IDX_NC | MALI_MEMATTR_WRITE_ALLOC << 8 * MAIR_IDX_CACHE
                            | MALI_MEMATTR_IMP_DEF << 8 * MAIR_IDX_DEV)

        self.granule = granule
        self.pg_shift = pg_shift
        self.bits_per_level = bpl
        self.ias = ias
        self.oas = oas
        self.quirks = quirks
        self.coherent_walk = coherent
        self.start_level = start
        self.pgd_bits = pgd_bits
        self.concatenated = concatenated
        self.levels = [Level(lv, pg_shift + (3 - lv) * bpl, pgd_bits if lv == start else bpl)
                       for lv in range(start, ARM_LPAE_MAX_LEVELS)]
        self.page_sizes = _bits(bitmap)
        self.pgsize_bitmap_value = bitmap
        if "arm-ttbr1" in quirks:
            self.windows = [((1 << 64) - (1 << ias), 1 << 64)]  # upper half: iova bits [63:ias] all ones
        else:
            self.windows = [(0, 1 << ias)]
        self._shift = {lv.num: lv.shift for lv in self.levels}
        # Leaf sizes the architecture (and so the kernel) can write: anything else is a block
        # at a level that has none (a 4K level-0 block, a 16K 64G block, a 4T block at oas <= 48).
        self._arch_blocks = GRANULE_PAGE_SIZES[granule] | (SZ_4T if granule == SZ_64K and oas > 48 else 0)
        self._schemas: dict[tuple[int, int], Descriptor] = {}
        self._leaf_type = PTE_TYPE_BLOCK if self.mali else PTE_TYPE_PAGE

    # -- geometry helpers --------------------------------------------------------------------------
    @staticmethod
    def restrict_pgsizes(bitmap: int, ias: int, oas: int, page_size: int) -> tuple[int, int, int, int]:
        """arm_lpae_restrict_pgsizes: (bitmap, ias, oas, granule) after the kernel narrows them.
        The granule is the host PAGE_SIZE if offered, else the largest smaller size, else the
        smallest larger one."""
        if bitmap & page_size:
            granule = page_size
        elif bitmap & (page_size - 1):
            granule = 1 << ((bitmap & (page_size - 1)).bit_length() - 1)
        elif bitmap & ~(page_size - 1):
            low = bitmap & ~(page_size - 1)
            granule = low & -low
        else:
            granule = 0
        max_bits = 48
        sizes = GRANULE_PAGE_SIZES.get(granule, 0)
        if granule == SZ_64K:
            max_bits = 52
            if oas > 48:  # the 4T level-1 block needs a 52-bit output space
                sizes |= SZ_4T
        return bitmap & sizes, min(ias, max_bits), min(oas, max_bits), granule

    def _level(self, num: int) -> Level:
        return self.levels[num - self.start_level]

    def to_paddr(self, raw: int) -> int:
        """iopte_to_paddr: PTE bits 47:12; with the 64K granule bits 15:12 are PA[51:48]."""
        pa = raw & PTE_ADDR_MASK
        if self.granule < SZ_64K:
            return pa
        return (pa | (pa << 36)) & PTE_ADDR_MASK_52

    @staticmethod
    def to_pte_addr(pa: int) -> int:
        """paddr_to_iopte: PA[47:12] in place, PA[51:48] folded into bits 15:12."""
        return (pa | (pa >> 36)) & PTE_ADDR_MASK

    # -- roots ---------------------------------------------------------------------------------------
    def root_from_register(self, value: int) -> list[int]:
        """The table address the hardware takes from the raw root register.

        S1 TTBR / S2 VTTBR (AArch64 layout): bits 63:48 are the ASID / VMID, bit 0 CnP, BADDR
        below; the table is aligned to its size, so lower bits are ignored (RES0). With 52-bit
        output addresses (64K granule, oas > 48) two forms exist: the Arm ARM's TTBR packs
        PA[51:48] into bits 5:2, while io-pgtable's cfg.ttbr/vttbr and the SMMUv3 CD.TTB0 /
        STE.S2TTB fields (GENMASK(51,4)) hold the address in place. A 52-bit table is 64-byte
        aligned, so nonzero bits 5:2 can only be the packed form; otherwise bits 51:48 are
        address bits (no ASID/VMID can then be given in them).
        Mali TRANSTAB: ADRMODE bits 1:0 must be TABLE (3); READ_INNER (2), SHARE_OUTER (4)
        and the rest below bit 12 are attributes (AS_TRANSTAB_LPAE_ADDR_SPACE_MASK)."""
        value &= U64
        if self.mali:
            mode = value & 3
            if mode != MALI_TTBR_ADRMODE_TABLE:
                raise ValueError(f"TRANSTAB {value:#x}: ADRMODE (bits 1:0) is {mode}, not TABLE (3): "
                                 f"the GPU walks no table in that mode (give the table as root:)")
            return [value & MALI_TRANSTAB_ADDR_MASK]
        pgd_bytes = 8 << self.pgd_bits
        if self.oas > 48:
            align = max(pgd_bytes, 64)
            if value & genmask(5, 2):
                pa = (value & genmask(47, 6)) | ((value >> 2) & 0xF) << 48
            else:
                pa = value & genmask(51, 6)
        else:
            align = pgd_bytes
            pa = value & genmask(47, 1)
        return [pa & ~(align - 1)]

    def register_value(self, root: int) -> int:
        """What the kernel writes to cfg (ttbr, vttbr or Mali transtab) for a pgd at `root`."""
        if self.mali:
            return root | MALI_TTBR_READ_INNER | MALI_TTBR_ADRMODE_TABLE | (
                MALI_TTBR_SHARE_OUTER if self.coherent_walk else 0)
        return root

    # -- per-entry hooks -------------------------------------------------------------------------
    # index(): the base formula is ARM_LPAE_LVL_IDX, upper IOVA bits masked off.

    def classify(self, raw: int, lvl: Level) -> int:
        t = raw & PTE_TYPE_MASK
        if lvl.num == ARM_LPAE_MAX_LEVELS - 1:  # iopte_leaf / iopte_table at the last level
            return LEAF if t == self._leaf_type else INVALID
        if t == PTE_TYPE_BLOCK:
            return LEAF
        return TABLE if t == PTE_TYPE_TABLE else INVALID

    def next_table(self, raw: int, lvl: Level) -> int:
        return self.to_paddr(raw)

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        # OA bits below the block size are RES0: the hardware does not use them.
        return self.to_paddr(raw) & ~(lvl.block - 1)

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        prot = 0
        sh_is = (raw & PTE_SH_MASK) == PTE_SH_IS
        if self.mali:  # stage-1-like attributes, stage-2-like permissions
            prot |= (IOMMU_READ if raw & PTE_HAP_READ else 0) | (IOMMU_WRITE if raw & PTE_HAP_WRITE else 0)
            attr = (raw >> PTE_ATTRINDX_SHIFT) & 7
            prot |= IOMMU_MMIO if attr == MAIR_IDX_DEV else IOMMU_CACHE if attr == MAIR_IDX_CACHE else 0
        elif self.stage == 1:
            # AP[2:1]: RDONLY set only for read-without-write; a write-only request is granted rw
            prot |= IOMMU_READ | (0 if raw & PTE_AP_RDONLY else IOMMU_WRITE)
            prot |= 0 if raw & PTE_AP_UNPRIV else IOMMU_PRIV
            attr = (raw >> PTE_ATTRINDX_SHIFT) & 7
            prot |= IOMMU_MMIO if attr == MAIR_IDX_DEV else 0
            prot |= IOMMU_CACHE if sh_is or attr == MAIR_IDX_CACHE else 0
        else:
            prot |= (IOMMU_READ if raw & PTE_HAP_READ else 0) | (IOMMU_WRITE if raw & PTE_HAP_WRITE else 0)
            mem = (raw >> 2) & 0xF
            prot |= IOMMU_MMIO if mem == MEMATTR_DEV else 0
            prot |= IOMMU_CACHE if sh_is or mem == self._s2_cache_attr else 0
        if raw & PTE_XN:
            prot |= IOMMU_NOEXEC
        return prot

    @property
    def _s2_cache_attr(self) -> int:
        return MEMATTR_FWB_WB if "arm-s2fwb" in self.quirks else MEMATTR_OIWB

    def kind_name(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            return "table"
        if kind == LEAF:
            return "page" if lvl.num == ARM_LPAE_MAX_LEVELS - 1 else "block"
        return "invalid"

    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        key = (lvl.num, kind)
        d = self._schemas.get(key)
        if d is None:
            d = self._schemas[key] = self._make_schema(lvl, kind)
        return d

    def _addr_fields(self, lo: int) -> list[tuple[str, int, int]]:
        if self.granule == SZ_64K:
            lo = max(lo, 16)
            return [(f"pa_47_{lo}", 47, lo), ("pa_51_48", 15, 12)]
        return [(f"pa_47_{lo}", 47, lo)]

    def _make_schema(self, lvl: Level, kind: int) -> Descriptor:
        if kind == TABLE:
            return Descriptor("table", 64, ("nstable", 63, 63), ("aptable", 62, 61), ("xntable", 60, 60),
                              ("pxntable", 59, 59), ("sw_sync", 55, 55),
                              *self._addr_fields(self.pg_shift if self.granule == SZ_64K else 12), ("type", 1, 0))
        if kind != LEAF:
            return Descriptor("invalid", 64, ("type", 1, 0))
        name = "page" if lvl.num == ARM_LPAE_MAX_LEVELS - 1 else "block"
        addr = self._addr_fields(lvl.shift)
        if self.mali:
            return Descriptor(f"mali {name}", 64, ("xn", 54, 53), *addr, ("sh", 9, 8), ("write", 7, 7),
                              ("read", 6, 6), ("attrindx", 4, 2), ("type", 1, 0))
        if self.stage == 1:
            return Descriptor(f"stage-1 {name}", 64, ("xn", 54, 53), ("contiguous", 52, 52), ("dbm", 51, 51), *addr,
                              ("ng", 11, 11), ("af", 10, 10), ("sh", 9, 8), ("ap_rdonly", 7, 7),
                              ("ap_unpriv", 6, 6), ("ns", 5, 5), ("attrindx", 4, 2), ("type", 1, 0))
        return Descriptor(f"stage-2 {name}", 64, ("xn", 54, 53), ("contiguous", 52, 52), ("dbm", 51, 51), *addr,
                          ("af", 10, 10), ("sh", 9, 8), ("hap_write", 7, 7), ("hap_read", 6, 6),
                          ("memattr", 5, 2), ("type", 1, 0))

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            extra = (", NSTable" if raw & PTE_NSTABLE else "") + (
                ", SW_SYNC (cleaned for a non-coherent walk)" if raw & PTE_SW_SYNC else "")
            return f"next-level table at {self.to_paddr(raw):#x}{extra}"
        if kind == LEAF:
            what = "page" if lvl.num == ARM_LPAE_MAX_LEVELS - 1 else "block"
            phys, prot = self.leaf_phys(raw, lvl), prot_str(self.leaf_prot(raw, lvl))
            text = f"{fmt_size(lvl.block)} {what} at {phys:#x}, {prot}"
            if self.stage == 2 and not self.mali:
                mem = (raw >> 2) & 0xF
                names = {MEMATTR_DEV: "Device-nGnRE", MEMATTR_NC: "Normal-NC", MEMATTR_OIWB: "Normal WB"}
                if "arm-s2fwb" in self.quirks:
                    names[MEMATTR_FWB_WB] = "forced Normal WB (FWB)"
                text += f"; MemAttr {mem:#x} {names.get(mem, '(not written by the kernel)')}"
            else:
                attr = (raw >> PTE_ATTRINDX_SHIFT) & 7
                text += f"; AttrIndx {attr}"
            if raw & PTE_DBM:
                text += ", DBM (writable-clean tracking)" if raw & PTE_AP_RDONLY else ", DBM (dirty)"
            return text
        t = raw & PTE_TYPE_MASK
        if lvl.num == ARM_LPAE_MAX_LEVELS - 1 and t == (PTE_TYPE_PAGE if self.mali else PTE_TYPE_BLOCK):
            return (f"type {t:#04b} at level 3 is not a page here "
                    f"({'Mali pages are 0b01' if self.mali else 'pages are 0b11'}): the walk stops")
        return "invalid: the walk stops" if raw == 0 else f"invalid (type {t:#04b}): the walk stops"

    def legacy_iova_to_phys(self, iova: int, t: Translation) -> int:
        """arm_lpae_iova_to_phys: iopte_to_paddr(pte) | (iova & (BLOCK_SIZE - 1)), 0 on a miss.
        The kernel ORs the offset in without clearing OA bits below the block, so a block with
        such (RES0) bits set leaks them here. For iova 2^64-1 the kernel's walk range [iova,
        iova + 1) wraps to empty and it returns an uninitialised value; that cannot be
        reproduced, so the real translation is returned."""
        if not t.mapped or t.raw is None or t.level is None:
            return 0
        return self.to_paddr(t.raw) | (iova & ((1 << self._shift[t.level]) - 1))

    def legacy_iova_to_phys_vec(self, iova: np.ndarray, phys: np.ndarray, size: np.ndarray, level: np.ndarray,
                                raw: np.ndarray) -> np.ndarray:
        # a leaf's size is its level's block: iova & (size - 1) is the offset the kernel ORs in
        pa = raw.astype(np.uint64) & np.uint64(PTE_ADDR_MASK)
        if self.granule == SZ_64K:
            pa = (pa | (pa << np.uint64(36))) & np.uint64(PTE_ADDR_MASK_52)
        hit = size != 0
        return np.where(hit, pa | (iova & (size - np.uint64(1))), np.uint64(0))  # type: ignore[no-any-return]

    def _out_mask(self, lo: int) -> int:
        """PTE bits that may carry output-address bits [oas-1:lo]."""
        m = genmask(min(self.oas, 48) - 1, lo) if lo < min(self.oas, 48) else 0
        if self.granule == SZ_64K and self.oas > 48:
            m |= genmask(12 + self.oas - 48 - 1, 12)  # PA[oas-1:48] in bits 15:12
        return m

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == TABLE:
            ok = PTE_TYPE_MASK | self._out_mask(self.pg_shift)
            ok |= PTE_NSTABLE if "arm-ns" in self.quirks else 0
            ok |= 0 if self.coherent_walk else PTE_SW_SYNC
            return raw & ~ok & U64
        if kind == LEAF:
            ok = PTE_TYPE_MASK | PTE_XN | PTE_SH_MASK | self._out_mask(max(lvl.shift, 12))
            if self.mali:
                ok |= PTE_ATTRINDX_MASK | PTE_HAP_READ | PTE_HAP_WRITE
            elif self.stage == 1:
                ok |= PTE_ATTRINDX_MASK | PTE_AP_UNPRIV | PTE_AP_RDONLY | PTE_AF | PTE_NG
                ok |= PTE_NS if "arm-ns" in self.quirks else 0
                ok |= PTE_DBM if "arm-hd" in self.quirks else 0
            else:
                ok |= PTE_MEMATTR_MASK | PTE_HAP_READ | PTE_HAP_WRITE | PTE_AF
            bad = raw & ~ok & U64
            if not lvl.block & self._arch_blocks:
                bad |= raw & PTE_TYPE_MASK  # a block where the granule has none
            return bad
        return raw & U64  # the kernel only ever leaves invalid entries zero

    # -- vectorised hooks ----------------------------------------------------------------------
    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        t = (raw & np.uint64(PTE_TYPE_MASK)).astype(np.int8)
        if lvl.num == ARM_LPAE_MAX_LEVELS - 1:  # LEAF is 2, INVALID 0: the match bit, doubled
            return (t == self._leaf_type).view(np.int8) * np.int8(LEAF)  # type: ignore[no-any-return]
        out = np.zeros(len(t), dtype=np.int8)
        out[t == PTE_TYPE_BLOCK] = LEAF
        out[t == PTE_TYPE_TABLE] = TABLE
        return out

    def next_table_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        pa = raw & np.uint64(PTE_ADDR_MASK)
        if self.granule == SZ_64K:
            pa = (pa | (pa << np.uint64(36))) & np.uint64(PTE_ADDR_MASK_52)
        return pa  # type: ignore[no-any-return]

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        pa = raw & np.uint64(PTE_ADDR_MASK)
        if self.granule == SZ_64K:
            pa = (pa | (pa << np.uint64(36))) & np.uint64(PTE_ADDR_MASK_52)
        return pa & np.uint64(~(lvl.block - 1) & U64)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), lvl.block, dtype=np.uint64)

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64)

        def bit(mask: int) -> np.ndarray:
            return (r & np.uint64(mask)) != 0

        zero = np.int64(0)
        sh_is = (r & np.uint64(PTE_SH_MASK)) == np.uint64(PTE_SH_IS)
        attr = ((r >> np.uint64(PTE_ATTRINDX_SHIFT)) & np.uint64(7)).astype(np.int64)
        if self.mali:
            prot = np.where(bit(PTE_HAP_READ), IOMMU_READ, zero) | np.where(bit(PTE_HAP_WRITE), IOMMU_WRITE, zero)
            prot |= np.where(attr == MAIR_IDX_DEV, IOMMU_MMIO, np.where(attr == MAIR_IDX_CACHE, IOMMU_CACHE, zero))
        elif self.stage == 1:
            prot = np.where(bit(PTE_AP_RDONLY), IOMMU_READ, IOMMU_READ | IOMMU_WRITE).astype(np.int64)
            prot |= np.where(bit(PTE_AP_UNPRIV), zero, IOMMU_PRIV)
            prot |= np.where(attr == MAIR_IDX_DEV, IOMMU_MMIO, zero)
            prot |= np.where(sh_is | (attr == MAIR_IDX_CACHE), IOMMU_CACHE, zero)
        else:
            mem = ((r >> np.uint64(2)) & np.uint64(0xF)).astype(np.int64)
            prot = np.where(bit(PTE_HAP_READ), IOMMU_READ, zero) | np.where(bit(PTE_HAP_WRITE), IOMMU_WRITE, zero)
            prot |= np.where(mem == MEMATTR_DEV, IOMMU_MMIO, zero)
            prot |= np.where(sh_is | (mem == self._s2_cache_attr), IOMMU_CACHE, zero)
        prot |= np.where(bit(PTE_XN), IOMMU_NOEXEC, zero)
        return prot.astype(np.int64)

    # -- encoder hooks ---------------------------------------------------------------------------
    def encode_table(self, table: int, lvl: Level) -> int:
        """arm_lpae_install_table: address | TYPE_TABLE, NSTABLE with arm-ns; a non-coherent
        walk leaves SW_SYNC set once the new entry has been cleaned."""
        pte = self.to_pte_addr(table) | PTE_TYPE_TABLE
        if "arm-ns" in self.quirks:
            pte |= PTE_NSTABLE
        if not self.coherent_walk:
            pte |= PTE_SW_SYNC
        return pte

    def prot_to_pte(self, prot: int) -> int:
        """arm_lpae_prot_to_pte: the attribute bits of a leaf for IOMMU_* prot."""
        if self.stage == 1 and not self.mali:
            pte = PTE_NG
            if not prot & IOMMU_WRITE and prot & IOMMU_READ:
                pte |= PTE_AP_RDONLY
            elif "arm-hd" in self.quirks:
                pte |= PTE_DBM
            if not prot & IOMMU_PRIV:
                pte |= PTE_AP_UNPRIV
        else:
            pte = (PTE_HAP_READ if prot & IOMMU_READ else 0) | (PTE_HAP_WRITE if prot & IOMMU_WRITE else 0)
        if self.stage == 2 and not self.mali:
            if prot & IOMMU_MMIO:
                pte |= MEMATTR_DEV << 2
            elif prot & IOMMU_CACHE:
                pte |= self._s2_cache_attr << 2
            else:
                pte |= MEMATTR_NC << 2
        elif prot & IOMMU_MMIO:
            pte |= MAIR_IDX_DEV << PTE_ATTRINDX_SHIFT
        elif prot & IOMMU_CACHE:
            pte |= MAIR_IDX_CACHE << PTE_ATTRINDX_SHIFT
        pte |= PTE_SH_IS if prot & IOMMU_CACHE and not self.mali else PTE_SH_OS
        if prot & IOMMU_NOEXEC:
            pte |= PTE_XN
        if "arm-ns" in self.quirks:
            pte |= PTE_NS
        if not self.mali:
            pte |= PTE_AF
        return pte

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        """__arm_lpae_init_pte: TYPE_PAGE at level 3 (Mali: TYPE_BLOCK everywhere)."""
        typ = PTE_TYPE_BLOCK if self.mali or lvl.num < ARM_LPAE_MAX_LEVELS - 1 else PTE_TYPE_PAGE
        return self.prot_to_pte(prot) | typ | self.to_pte_addr(phys)

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        """arm_lpae_map_pages: R or W needed (-EINVAL), and `paddr >> oas` must be 0 (-ERANGE)
        for the paddr of each call. The core (__iommu_map) calls it per iommu_pgsize() chunk and
        again wherever a call stops at the end of a leaf table (arm_lpae_max_entries), so only
        those paddrs are checked: pages later in one call may pass 2^oas, as in the kernel.
        The IOVA range check (iaext) is the builder's window check."""
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            raise ValueError("prot needs r or w (arm_lpae_map_pages refuses neither: -EINVAL)")
        i, p, n = iova, phys, size
        last = (iova, phys, self.page_sizes[0], 1)
        while n > 0:
            pgsize, count = iommu_pgsize(self.pgsize_bitmap, i, p, n)
            last = (i, p, pgsize, count)
            i, p, n = i + pgsize * count, p + pgsize * count, n - pgsize * count
        ci, cp, pgsize, count = last
        table_span = (self.granule // 8) * pgsize  # the IOVA one leaf table of these pages covers
        last_page = ci + (count - 1) * pgsize
        call = max(ci, last_page - last_page % table_span)
        if (cp + call - ci) >> self.oas:
            raise ValueError(f"phys {phys:#x}+{size:#x}: map_pages at paddr {cp + call - ci:#x} is beyond "
                             f"oas ({self.oas} bits): -ERANGE")


_COMMON = {"granule": SZ_4K, "ias": 48, "oas": 48, "quirks": [], "page_size": 4096, "coherent_walk": True,
           "pgsize_bitmap": None}


class ArmLpaeS1(ArmLpae):
    name = "arm-lpae-s1"
    description = "AArch64 LPAE stage 1 (ARM_64_LPAE_S1): SMMUv3/SMMUv2 S1 contexts, panthor"
    kernel_fmt = "ARM_64_LPAE_S1"
    alloc_fn = "arm_64_lpae_alloc_pgtable_s1"
    config_defaults = dict(_COMMON)
    accepted_quirks = ("arm-ns", "arm-ttbr1", "arm-outer-wbwa", "arm-hd", "no-warn")


class ArmLpaeS2(ArmLpae):
    name = "arm-lpae-s2"
    description = "AArch64 LPAE stage 2 (ARM_64_LPAE_S2): SMMU S2 / nesting parents, concatenated pgds"
    kernel_fmt = "ARM_64_LPAE_S2"
    alloc_fn = "arm_64_lpae_alloc_pgtable_s2"
    stage = 2
    register_name = "VTTBR"
    config_defaults = dict(_COMMON)
    accepted_quirks = ("arm-s2fwb", "no-warn")


class ArmLpae32S1(ArmLpaeS1):
    name = "arm-lpae-32-s1"
    description = "AArch32 LPAE stage 1 (ARM_32_LPAE_S1): 4K granule, ias <= 32, oas <= 40"
    kernel_fmt = "ARM_32_LPAE_S1"
    alloc_fn = "arm_32_lpae_alloc_pgtable_s1"
    limits = (32, 40)
    config_defaults = {**_COMMON, "ias": 32, "oas": 40}


class ArmLpae32S2(ArmLpaeS2):
    name = "arm-lpae-32-s2"
    description = "AArch32 LPAE stage 2 (ARM_32_LPAE_S2): 4K granule, ias and oas <= 40"
    kernel_fmt = "ARM_32_LPAE_S2"
    alloc_fn = "arm_32_lpae_alloc_pgtable_s2"
    limits = (40, 40)
    config_defaults = {**_COMMON, "ias": 40, "oas": 40}


class ArmMaliLpae(ArmLpae):
    name = "arm-mali-lpae"
    description = "Mali GPU LPAE (ARM_MALI_LPAE): 4 levels always, leaves type 0b01, no AF (panfrost)"
    kernel_fmt = "ARM_MALI_LPAE"
    alloc_fn = "arm_mali_lpae_alloc_pgtable"
    mali = True
    limits = (48, 40)
    register_name = "TRANSTAB"
    config_defaults = {**_COMMON, "ias": 48, "oas": 40}
    accepted_quirks = ()


DRIVERS: dict[str, dict[str, Any]] = {
    "arm-smmu-v3": {
        "format": "arm-lpae-s1",
        "config": {"granule": SZ_4K, "ias": 48, "oas": 48, "quirks": [], "coherent_walk": True},
        "description": "Arm SMMUv3 stage-1 domain (arm_smmu_domain_finalise: ARM_64_LPAE_S1, ias 48 "
                       "(52 with VAX), oas from IDR5, arm-hd with dirty tracking; root in CD.TTB0)",
    },
    "arm-smmu": {
        "format": "arm-lpae-s1",
        "config": {"granule": SZ_4K, "ias": 48, "oas": 48, "quirks": [], "coherent_walk": True},
        "description": "Arm SMMU v1/v2 AArch64 S1 context (arm_smmu_init_domain_context: ias va_size, "
                       "oas ipa_size; TTBR0 holds the ASID in bits 63:48)",
    },
    "qcom-iommu": {
        "format": "arm-lpae-32-s1",
        "config": {"granule": SZ_4K, "ias": 32, "oas": 40, "quirks": [], "pgsize_bitmap": SZ_4K,
                   "coherent_walk": False},
        "description": "Qualcomm IOMMU (qcom_iommu_init_domain: ARM_32_LPAE_S1, ias 32, oas 40, "
                       "pgsize_bitmap 4K only, non-coherent walk)",
    },
    "ipmmu-vmsa": {
        "format": "arm-lpae-32-s1",
        "config": {"granule": SZ_4K, "ias": 32, "oas": 40, "quirks": ["arm-ns"],
                   "pgsize_bitmap": SZ_4K | SZ_2M | SZ_1G, "coherent_walk": False},
        "description": "Renesas IPMMU-VMSA (ipmmu_domain_init_context: ARM_32_LPAE_S1 with arm-ns, "
                       "ias 32, oas 40, 4K|2M|1G, non-coherent walk)",
    },
    "panfrost": {
        "format": "arm-mali-lpae",
        "config": {"granule": SZ_4K, "ias": 48, "oas": 40, "quirks": [], "pgsize_bitmap": SZ_4K | SZ_2M,
                   "coherent_walk": False},
        "description": "panfrost Mali GPU (panfrost_mmu_ctx_create: ARM_MALI_LPAE, 4K|2M, ias/oas from "
                       "MMU_FEATURES, coherent_walk when the GPU is dma-coherent)",
    },
    "panthor": {
        "format": "arm-lpae-s1",
        "config": {"granule": SZ_4K, "ias": 48, "oas": 40, "quirks": [], "pgsize_bitmap": SZ_4K | SZ_2M,
                   "coherent_walk": False},
        "description": "panthor Mali CSF GPU (panthor_vm_create: ARM_64_LPAE_S1, 4K|2M, ias/oas from "
                       "GPU_MMU_FEATURES; AS_TRANSTAB = ttbr)",
    },
}
