"""s390 zPCI I/O translation tables (drivers/iommu/s390-iommu.c, arch/s390/include/asm/pci_dma.h).

64-bit entries, big-endian (native `unsigned long` on s390). Up to five levels, named after the
table that holds the entry; levels here are numbered from the page table up (1 PT, 2 ST, 3 RT,
4 RS, 5 RF) so a level keeps its number whatever the domain's depth:

    level  table            index bits (calc_*)        entries     size / alignment
    5      region-first     iova[63:53] ZPCI_RF_SHIFT  2048        ZPCI_TABLE_SIZE 16K
    4      region-second    iova[52:42] ZPCI_RS_SHIFT  2048        16K
    3      region-third     iova[41:31] ZPCI_RT_SHIFT  2048        16K
    2      segment          iova[30:20] ZPCI_ST_SHIFT  2048        16K
    1      page             iova[19:12] (ZPCI_PT_BITS) 256         ZPCI_PT_SIZE 2K

The domain's top table (its origin type) is chosen by `s390_domain_alloc_paging` from the
aperture: RTX (3 levels) while it fits ZPCI_TABLE_SIZE_RT - start_dma, RSX (4) while it fits
ZPCI_TABLE_SIZE_RS - start_dma, else RFX (5); the IOTA names it in its DT field.

Region entries: origin [63:14] (ZPCI_RTE_ADDR_MASK), table offset [7:6], invalid bit 5
(ZPCI_TABLE_INVALID), table type [3:2] (the level of the table holding the entry: RFX 0xc, RSX
0x8, RTX 0x4) and table length [1:0]; protect bit 9. The lookup helpers (`get_rt_sto` ...) follow
an entry only when its type matches. Segment entries: page-table origin [63:11], type 0 (SX),
invalid bit 5. Page entries: frame [63:12], invalid bit 10 (ZPCI_PTE_INVALID), protect bit 9
(ZPCI_TABLE_PROTECTED, set when the mapping lacks IOMMU_WRITE); reading is always allowed.
Fresh region/segment tables hold 0x20 and page tables 0x400 (`dma_alloc_cpu_table`,
`dma_alloc_page_table`), because an all-zero segment or page entry is valid. Unmapping only sets
the invalid bit and clears protect (`dma_update_cpu_trans`): the frame address stays.

The legacy `s390_iommu_iova_to_phys` returns pte & ZPCI_PTE_ADDR_MASK: the frame without the
in-page offset, 0 on a miss. With 5 levels, an invalid region-first entry makes it dereference
NULL (`get_rto_from_iova` indexes what `get_rso_from_iova` returned); that oops is reported here
as 0, what the later fix "iommu/s390: Fix NULL dereference in iova_to_phys() with
ZPCI_TABLE_TYPE_RFX" returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import (
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
    Translation,
)
from .lazy import np

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

# arch/s390/include/asm/pci_dma.h
ZPCI_IOTA_IOT_ENABLED = 0x800
ZPCI_IOTA_RTTO, ZPCI_IOTA_RSTO, ZPCI_IOTA_RFTO = 1, 2, 3
ZPCI_IOTA_DT_MASK = 0xC
ZPCI_TABLE_SIZE_RT = 1 << 42
ZPCI_TABLE_SIZE_RS = 1 << 53
ZPCI_TABLE_TYPE_MASK = 0xC
ZPCI_TABLE_TYPE_RFX, ZPCI_TABLE_TYPE_RSX, ZPCI_TABLE_TYPE_RTX, ZPCI_TABLE_TYPE_SX = 0xC, 0x8, 0x4, 0x0
ZPCI_TABLE_LEN_RTX = 0x3  # = _RSX = _RFX
ZPCI_TABLE_OFFSET_MASK = 0xC0
ZPCI_TABLE_SIZE = 0x4000
ZPCI_PT_SIZE = 0x800
ZPCI_RTE_FLAG_MASK = 0x3FFF
ZPCI_STE_FLAG_MASK = 0x7FF
ZPCI_PTE_FLAG_MASK = 0xFFF
ZPCI_PTE_INVALID = 0x400
ZPCI_TABLE_INVALID = 0x20
ZPCI_TABLE_PROTECTED = 0x200

RTE_ADDR_MASK = ~ZPCI_RTE_FLAG_MASK & U64
STE_ADDR_MASK = ~ZPCI_STE_FLAG_MASK & U64
PTE_ADDR_MASK = ~ZPCI_PTE_FLAG_MASK & U64

PT, ST, RT, RS, RF = 1, 2, 3, 4, 5
ALL_LEVELS = {  # num -> Level (ZPCI_*_SHIFT, ZPCI_TABLE_BITS / ZPCI_PT_BITS)
    RF: Level(RF, 53, 11), RS: Level(RS, 42, 11), RT: Level(RT, 31, 11), ST: Level(ST, 20, 11),
    PT: Level(PT, 12, 8),
}
REGION_TYPE = {RF: ZPCI_TABLE_TYPE_RFX, RS: ZPCI_TABLE_TYPE_RSX, RT: ZPCI_TABLE_TYPE_RTX}
TABLE_NAMES = {RF: "region-first", RS: "region-second", RT: "region-third", ST: "segment", PT: "page"}
ENTRY_KIND = {RF: "rfe", RS: "rse", RT: "rte", ST: "ste", PT: "pte"}
# levels -> (IOTA DT, origin type, max_tbl_size)
ORIGIN = {3: (ZPCI_IOTA_RTTO, "RTX", ZPCI_TABLE_SIZE_RT - 1), 4: (ZPCI_IOTA_RSTO, "RSX", ZPCI_TABLE_SIZE_RS - 1),
          5: (ZPCI_IOTA_RFTO, "RFX", U64)}
DT_LEVELS = {dt: lv for lv, (dt, _, _) in ORIGIN.items()}

REGION_ENTRY = Descriptor("region_entry", 64, ("origin", 63, 14), ("protected", 9, 9), ("table_offset", 7, 6),
                          ("invalid", 5, 5), ("table_type", 3, 2), ("table_length", 1, 0))
SEGMENT_ENTRY = Descriptor("segment_entry", 64, ("pt_origin", 63, 11), ("protected", 9, 9), ("invalid", 5, 5),
                           ("table_type", 3, 2))
PAGE_ENTRY = Descriptor("page_entry", 64, ("pfaa", 63, 12), ("invalid", 10, 10), ("protected", 9, 9))
IOTA = Descriptor("iota", 64, ("origin", 63, 12), ("iot_enabled", 11, 11), ("key", 8, 5), ("dt", 3, 2))

# bits the driver never sets per entry kind (flag bits outside the defined fields)
REGION_RESERVED = ZPCI_RTE_FLAG_MASK & ~(ZPCI_TABLE_PROTECTED | ZPCI_TABLE_OFFSET_MASK | ZPCI_TABLE_INVALID
                                         | ZPCI_TABLE_TYPE_MASK | 0x3)
SEGMENT_RESERVED = ZPCI_STE_FLAG_MASK & ~(ZPCI_TABLE_PROTECTED | ZPCI_TABLE_INVALID | ZPCI_TABLE_TYPE_MASK)
PAGE_RESERVED = ZPCI_PTE_FLAG_MASK & ~(ZPCI_PTE_INVALID | ZPCI_TABLE_PROTECTED)


def origin_levels(start_dma: int, end_dma: int, dtsm_rs: bool = True, dtsm_rf: bool = True,
                  aperture: int = U64) -> tuple[int, int]:
    """`s390_domain_alloc_paging`: (levels, rewritten end_dma) for a device's DMA range, with
    unsigned long arithmetic (an end - start + 1 of 2^64 wraps to 0, which picks RTX)."""
    size = min(aperture, (end_dma - start_dma + 1) & U64)
    if size <= (ZPCI_TABLE_SIZE_RT - start_dma) & U64:
        levels = 3
    elif size <= (ZPCI_TABLE_SIZE_RS - start_dma) & U64 and dtsm_rs:
        levels = 4
    elif dtsm_rf:
        levels = 5
    else:  # "Assume RTX available"
        levels, size = 3, (ZPCI_TABLE_SIZE_RT - start_dma) & U64
    return levels, (start_dma + size - 1) & U64


class S390(PageTable):
    leaf_size_is_block = True  # 4K pages only
    name = "s390"
    description = "s390 zPCI DMA translation: 3-5 levels (RTX/RSX/RFX origin), big-endian 64-bit entries, 4K"
    kernel_source = "drivers/iommu/s390-iommu.c, arch/s390/include/asm/pci_dma.h"
    entry_size = 8
    byteorder = "big"
    config_defaults = {"levels": None, "start_dma": 1 << 32, "end_dma": None, "pa_bits": 64}
    root_register = "iota"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        levels, start, end, pa_bits = config["levels"], config["start_dma"], config["end_dma"], config["pa_bits"]
        if levels is not None and levels not in ORIGIN:
            raise ConfigError("levels", f"{levels!r}: s390 tables have 3 (RTX), 4 (RSX) or 5 (RFX) levels")
        if not isinstance(start, int) or start % PAGE_SIZE:
            raise ConfigError("start_dma", f"{start!r} is not a 4K-aligned address")
        if end is None:
            # no DMA range given: the whole reach of the chosen origin (s390_iommu_aperture=0)
            end = ORIGIN[levels or 3][2]
        if not isinstance(end, int) or end < start:
            raise ConfigError("end_dma", f"{end!r} is below start_dma {start:#x} (probe_device refuses it)")
        derived, new_end = origin_levels(start, end)
        if levels is None:
            levels = derived
        elif levels != derived:
            if levels == 5 and derived == 4:
                pass  # a device whose dtsm offers RFTO but not RSTO
            elif levels == 3:
                # dtsm without RSTO/RFTO: the driver falls back to RTX and clips the aperture
                _, new_end = origin_levels(start, end, dtsm_rs=False, dtsm_rf=False)
            else:
                raise ConfigError("levels", f"{levels}: s390_domain_alloc_paging picks {derived} levels "
                                            f"({ORIGIN[derived][1]}) for start_dma {start:#x}, end_dma {end:#x}")
        max_tbl = ORIGIN[levels][2]
        if start > max_tbl:
            raise ConfigError("start_dma", f"{start:#x} is beyond the {ORIGIN[levels][1]} aperture end "
                                           f"{max_tbl:#x} (attach_dev refuses it)")
        if not 13 <= pa_bits <= 64:
            raise ConfigError("pa_bits", f"{pa_bits}: a page entry holds frame address bits 63:12 (13..64)")
        self.nlevels = levels
        self.start_dma = start
        self.end_dma = new_end  # zdev->end_dma as the driver rewrites it
        self.max_tbl_size = max_tbl
        self.origin_type = ORIGIN[levels][1]
        self.levels = [ALL_LEVELS[n] for n in range(levels, 0, -1)]
        self.page_sizes = [PAGE_SIZE]
        self.oas = pa_bits
        # geometry: aperture_start 0, aperture_end max_tbl_size (map and iova_to_phys check it)
        self.windows = [(0, max_tbl + 1)]

    # -- roots ----------------------------------------------------------------------------------
    def root_from_register(self, value: int) -> list[int]:
        """The IOTA `s390_iommu_domain_reg_ioat` registers: table origin | ZPCI_IOTA_IOT_ENABLED |
        ZPCI_KEY | DT << 2, DT naming the origin type (RTTO 1, RSTO 2, RFTO 3)."""
        if value >> 64:
            raise ValueError(f"iota {value:#x} is wider than 64 bits")
        if value == 0:
            raise ValueError("iota 0 is an identity (untranslated) domain: there is no table")
        if not value & ZPCI_IOTA_IOT_ENABLED:
            raise ValueError(f"iota {value:#x} has ZPCI_IOTA_IOT_ENABLED (0x800) clear: translation is off")
        dt = (value & ZPCI_IOTA_DT_MASK) >> 2
        if DT_LEVELS.get(dt) != self.nlevels:
            names = {0: "STO", 1: "RTTO", 2: "RSTO", 3: "RFTO"}
            raise ValueError(f"iota {value:#x} designates a {names[dt]} table; config.levels {self.nlevels} "
                             f"takes DT {ORIGIN[self.nlevels][0]} ({self.origin_type} origin)")
        return [value & PTE_ADDR_MASK]

    def iota(self, root: int) -> int:
        """The IOTA the driver registers for a root table (get_iota_region_flag, ZPCI_KEY 0)."""
        return root | ZPCI_IOTA_IOT_ENABLED | ORIGIN[self.nlevels][0] << 2

    def root_alloc(self) -> list[tuple[int, int]]:
        return [(ZPCI_TABLE_SIZE, ZPCI_TABLE_SIZE)]  # dma_alloc_cpu_table: the region-table cache

    def init_tables(self, mem: Any, roots: Sequence[int], alloc: Any) -> None:
        top = self.levels[0]
        for r in roots:
            mem.array(r, top.entries, self.dtype)[:] = self.table_fill(top)

    def table_fill(self, lvl: Level) -> int:
        return ZPCI_PTE_INVALID if lvl.num == PT else ZPCI_TABLE_INVALID

    def table_alloc(self, lvl: Level) -> tuple[int, int]:
        if lvl.num == PT:
            return ZPCI_PT_SIZE, ZPCI_PT_SIZE  # dma_page_table_cache
        return ZPCI_TABLE_SIZE, ZPCI_TABLE_SIZE  # dma_region_table_cache

    # -- decode -----------------------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        if lvl.num == PT:
            return INVALID if raw & ZPCI_PTE_INVALID else LEAF  # pt_entry_isvalid
        if raw & ZPCI_TABLE_INVALID:  # reg_entry_isvalid
            return INVALID
        want = REGION_TYPE.get(lvl.num, ZPCI_TABLE_TYPE_SX)
        return TABLE if raw & ZPCI_TABLE_TYPE_MASK == want else INVALID  # get_rt_sto & co.

    def next_table(self, raw: int, lvl: Level) -> int:
        return raw & (STE_ADDR_MASK if lvl.num == ST else RTE_ADDR_MASK)

    def next_table_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return raw.astype(np.uint64) & np.uint64(STE_ADDR_MASK if lvl.num == ST else RTE_ADDR_MASK)

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        return raw & PTE_ADDR_MASK

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        return IOMMU_READ if raw & ZPCI_TABLE_PROTECTED else IOMMU_READ | IOMMU_WRITE

    def kind_name(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            return "table"
        return "page" if kind == LEAF else "invalid"

    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        if lvl.num == PT:
            return PAGE_ENTRY
        return SEGMENT_ENTRY if lvl.num == ST else REGION_ENTRY

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        where = f"{TABLE_NAMES.get(lvl.num, lvl.num)}-table entry"
        if kind == LEAF:
            ro = "read-only (protected)" if raw & ZPCI_TABLE_PROTECTED else "read/write"
            return f"{where}: 4 KiB frame at {raw & PTE_ADDR_MASK:#x}, {ro}"
        if kind == TABLE:
            nxt = TABLE_NAMES.get(lvl.num - 1, "next-level")
            extra = ""
            if lvl.num != ST:
                tl, tf = raw & 0x3, (raw & ZPCI_TABLE_OFFSET_MASK) >> 6
                if (tf, tl) != (0, ZPCI_TABLE_LEN_RTX):
                    extra = (f"; table offset {tf}, length {tl}: the driver always writes 0 and 3 (whole "
                             "table), other values limit which next-level indexes the hardware accepts")
            if raw & ZPCI_TABLE_PROTECTED:
                extra += "; protect bit set (the driver clears it on table links)"
            return f"{where}: {nxt} table at {self.next_table(raw, lvl):#x}{extra}"
        if lvl.num == PT:
            return (f"{where}: invalid (ZPCI_PTE_INVALID); stale frame {raw & PTE_ADDR_MASK:#x} left by unmap"
                    if raw & PTE_ADDR_MASK else f"{where}: invalid (ZPCI_PTE_INVALID)")
        if raw & ZPCI_TABLE_INVALID:
            return f"{where}: invalid (ZPCI_TABLE_INVALID)"
        want = REGION_TYPE.get(lvl.num, ZPCI_TABLE_TYPE_SX)
        return (f"{where}: table type {(raw & ZPCI_TABLE_TYPE_MASK) >> 2} is not this level's "
                f"({want >> 2}): the driver's lookup refuses it")

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == INVALID:
            return 0
        if lvl.num == PT:
            return (raw & PAGE_RESERVED) | (raw & PTE_ADDR_MASK & ~((1 << self.oas) - 1) & U64)
        if lvl.num == ST:
            return raw & SEGMENT_RESERVED
        return raw & REGION_RESERVED

    def invalidate(self, raw: int, lvl: Level) -> int:
        # dma_update_cpu_trans(.., ZPCI_PTE_INVALID): invalidate_pt_entry + entry_clr_protected
        return (raw | ZPCI_PTE_INVALID) & ~ZPCI_TABLE_PROTECTED

    def legacy_iova_to_phys(self, iova: int, t: Translation) -> int:
        """`s390_iommu_iova_to_phys`: pte & ZPCI_PTE_ADDR_MASK (no in-page offset), 0 on a miss or
        outside [aperture_start, aperture_end]. (The 5-level NULL dereference reads as 0.)"""
        if not t.mapped or iova > self.max_tbl_size:
            return 0
        return t.phys & PTE_ADDR_MASK

    def legacy_iova_to_phys_vec(self, iova: np.ndarray, phys: np.ndarray, size: np.ndarray, level: np.ndarray,
                                raw: np.ndarray) -> np.ndarray:
        ok = (size != 0) & (iova <= np.uint64(self.max_tbl_size))
        return np.where(ok, phys & np.uint64(PTE_ADDR_MASK), np.uint64(0)).astype(np.uint64)  # type: ignore[no-any-return]

    # -- vectorised ---------------------------------------------------------------------------------
    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64)
        if lvl.num == PT:
            return np.where((r & np.uint64(ZPCI_PTE_INVALID)) != 0, INVALID, LEAF).astype(np.int8)
        want = np.uint64(REGION_TYPE.get(lvl.num, ZPCI_TABLE_TYPE_SX))
        ok = ((r & np.uint64(ZPCI_TABLE_INVALID)) == 0) & ((r & np.uint64(ZPCI_TABLE_TYPE_MASK)) == want)
        return np.where(ok, TABLE, INVALID).astype(np.int8)

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return raw.astype(np.uint64) & np.uint64(PTE_ADDR_MASK)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), PAGE_SIZE, dtype=np.uint64)

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        ro = (raw.astype(np.uint64) & np.uint64(ZPCI_TABLE_PROTECTED)) != 0
        return np.where(ro, IOMMU_READ, IOMMU_READ | IOMMU_WRITE).astype(np.int64)

    # -- encode (s390_iommu_map_pages -> dma_walk_cpu_trans, dma_update_cpu_trans) ---------------
    def encode_table(self, table: int, lvl: Level) -> int:
        if lvl.num == ST:
            return table & STE_ADDR_MASK  # set_st_pto + validate_st_entry: just the PT origin
        # set_r*_r*o + validate_r*_entry + entry_clr_protected: origin | type | length 3
        return (table & RTE_ADDR_MASK) | REGION_TYPE[lvl.num] | ZPCI_TABLE_LEN_RTX

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        # set_pt_pfaa + validate_pt_entry, protected unless IOMMU_WRITE
        return (phys & PTE_ADDR_MASK) | (0 if prot & IOMMU_WRITE else ZPCI_TABLE_PROTECTED)

    def encode_leaf_vec(self, phys: np.ndarray, pgsize: int, lvl: Level, prot: int) -> np.ndarray:
        flag = np.uint64(0 if prot & IOMMU_WRITE else ZPCI_TABLE_PROTECTED)
        return (phys.astype(np.uint64) & np.uint64(PTE_ADDR_MASK)) | flag

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        # no r/w requirement: a mapping without IOMMU_WRITE is a read-only (protected) one
        if (phys + size - 1) >> self.oas:
            raise ValueError(f"phys {phys:#x}+{size:#x} is beyond pa_bits ({self.oas})")


DRIVERS = {
    "s390": {
        "format": "s390",
        "config": {},
        "description": "s390 zPCI IOMMU (s390-iommu.c): levels from the device's DMA range",
    },
}
