"""Rockchip IOMMU page tables (drivers/iommu/rockchip-iommu.c).

Two levels of 1024 32-bit entries, one 4 KiB page each, over a 32-bit IOVA: the directory (DT)
is indexed by iova[31:22] (`rk_iova_dte_index`), a page table (PT) by iova[21:12]
(`rk_iova_pte_index`). The hardware has only 4 KiB PTEs; the domain still advertises every
power of two from 4K to 4M (`RK_IOMMU_PGSIZE_BITMAP`) and `rk_iommu_map_iova` writes a page of
size N as N/4K consecutive PTEs, the PA stepping by 4K.

Variants (`rk_iommu_dt_ids`): v1 "rockchip,iommu" (`iommu_data_ops_v1`: address in [31:12],
32-bit PA) and v2 "rockchip,rk3568-iommu" (`iommu_data_ops_v2`: PA[35:32] in [11:8] and
PA[39:36] in [7:4], 40-bit PA), for DTEs, PTEs and the DTE_ADDR register alike
(`rk_dte_pt_address_v2`, `rk_mk_dte_v2`).

Unmap clears only the valid bit (`rk_mk_pte_invalid`): an invalid PTE can keep a stale address,
which is not a mapping.
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
    prot_str,
)
from .lazy import np

SPAGE_SIZE = 1 << 12
U32 = 0xFFFF_FFFF
RK_DTE_PT_ADDRESS_MASK = 0xFFFF_F000  # also RK_PTE_PAGE_ADDRESS_MASK
RK_DTE_PT_VALID = 1 << 0  # also RK_PTE_PAGE_VALID
RK_PTE_PAGE_READABLE = 1 << 1
RK_PTE_PAGE_WRITABLE = 1 << 2
DTE_HI_MASK1, DTE_HI_SHIFT1 = 0xF00, 24  # entry [11:8] <-> PA[35:32]
DTE_HI_MASK2, DTE_HI_SHIFT2 = 0xF0, 32  # entry [7:4] <-> PA[39:36]
RK_IOMMU_PGSIZE_BITMAP = 0x007F_F000


class Rockchip(PageTable):
    leaf_size_is_block = True  # 4K pages only
    name = "rockchip"
    description = "Rockchip IOMMU: DT/PT of 1024 entries, 4K PTEs only (4K..4M mapped as runs), v2 40-bit PA"
    kernel_source = "drivers/iommu/rockchip-iommu.c"
    entry_size = 4
    config_defaults = {"version": 1, "pa_bits": None}
    root_register = "dte_addr"
    prot_key_mask = RK_PTE_PAGE_READABLE | RK_PTE_PAGE_WRITABLE  # leaf_prot reads only these
    # legacy_iova_to_phys is the base's: rk_iommu_iova_to_phys gives 0 when the DTE or PTE valid bit
    # is clear, else pt_address(pte) + iova[11:0].

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        version = config.get("version", 1)
        if isinstance(version, str) and version.strip().lower().lstrip("v").isdigit():
            version = int(version.strip().lower().lstrip("v"))
        if version not in (1, 2):
            raise ConfigError("version", f"{version!r} is not a Rockchip IOMMU version: 1 (\"rockchip,iommu\") "
                                         "or 2 (\"rockchip,rk3568-iommu\")")
        self.version = int(version)
        max_pa = 40 if self.version == 2 else 32  # rk_ops->dma_bit_mask
        pa_bits = config.get("pa_bits")
        if pa_bits is None:
            pa_bits = max_pa
        if not isinstance(pa_bits, int) or not 13 <= pa_bits <= max_pa:
            raise ConfigError("pa_bits", f"{pa_bits!r}: Rockchip v{self.version} entries hold at most "
                                         f"{max_pa} PA bits (13..{max_pa})")
        self.levels = [Level(1, 22, 10), Level(2, 12, 10)]
        self.page_sizes = [1 << s for s in range(12, 23)]  # RK_IOMMU_PGSIZE_BITMAP
        self.oas = pa_bits
        self.windows = [(0, 1 << 32)]  # aperture_end = DMA_BIT_MASK(32)
        if self.version == 2:
            addr = (("pt_address_31_12", 31, 12), ("pt_address_35_32", 11, 8), ("pt_address_39_36", 7, 4))
            self._dte = Descriptor("dte v2", 32, *addr, ("valid", 0, 0))
            paddr = (("page_address_31_12", 31, 12), ("page_address_35_32", 11, 8),
                     ("page_address_39_36", 7, 4))
            self._pte = Descriptor("pte v2", 32, *paddr, ("security", 3, 3), ("writable", 2, 2),
                                   ("readable", 1, 1), ("valid", 0, 0))
        else:
            self._dte = Descriptor("dte", 32, ("pt_address", 31, 12), ("valid", 0, 0))
            self._pte = Descriptor("pte", 32, ("page_address", 31, 12), ("read_allocate", 8, 8),
                                   ("read_cache", 7, 7), ("write_buffer", 6, 6), ("write_allocate", 5, 5),
                                   ("write_cache", 4, 4), ("override_cache", 3, 3), ("writable", 2, 2),
                                   ("readable", 1, 1), ("valid", 0, 0))

    # -- address packing ---------------------------------------------------------------------
    def pt_address(self, raw: int) -> int:
        """rk_ops->pt_address: the same decoder for DTEs, PTEs and DTE_ADDR."""
        if self.version == 1:
            return raw & RK_DTE_PT_ADDRESS_MASK  # rk_dte_pt_address
        return (((raw & DTE_HI_MASK2) << DTE_HI_SHIFT2) | ((raw & DTE_HI_MASK1) << DTE_HI_SHIFT1)
                | (raw & RK_DTE_PT_ADDRESS_MASK))  # rk_dte_pt_address_v2

    def mk_address(self, pa: int) -> int:
        """The address bits of rk_mk_dte / rk_mk_dte_v2 (which rk_mk_pte_v2 reuses)."""
        if self.version == 1:
            return pa & RK_DTE_PT_ADDRESS_MASK
        packed = ((pa & RK_DTE_PT_ADDRESS_MASK) | ((pa & (0xF << 32)) >> DTE_HI_SHIFT1)
                  | ((pa & (0xF << 36)) >> DTE_HI_SHIFT2))
        return packed & 0xFFFF_FFF0  # RK_DTE_PT_ADDRESS_MASK_V2

    def root_from_register(self, value: int) -> list[int]:
        """RK_MMU_DTE_ADDR holds mk_dtentries(dt_dma), valid bit included (`rk_iommu_enable`);
        the hardware ignores the low bits, as `log_iova`'s rk_ops->pt_address(mmu_dte_addr) does."""
        if value >> 32:
            raise ValueError(f"dte_addr {value:#x} does not fit the 32-bit DTE_ADDR register")
        return [self.pt_address(value)]

    # -- decode ------------------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        if not raw & RK_DTE_PT_VALID:  # rk_dte_is_pt_valid / rk_pte_is_page_valid
            return INVALID
        return TABLE if lvl.num == 1 else LEAF

    def next_table(self, raw: int, lvl: Level) -> int:
        return self.pt_address(raw)

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        return self.pt_address(raw)

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        return ((IOMMU_READ if raw & RK_PTE_PAGE_READABLE else 0)
                | (IOMMU_WRITE if raw & RK_PTE_PAGE_WRITABLE else 0))

    kind_name_reads_raw = True

    def kind_name(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            return "table"
        if kind == LEAF:
            return "page"
        return "stale" if raw else "invalid"

    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        return self._dte if lvl.num == 1 else self._pte  # also what explain's fields decode with

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == TABLE:
            return f"page table at {self.pt_address(raw):#x}"
        if kind == LEAF:
            return f"4 KiB page at PA {self.pt_address(raw):#x}, {prot_str(self.leaf_prot(raw, lvl))}"
        if raw:
            return (f"valid bit clear: not a mapping (a stale address {self.pt_address(raw):#x} "
                    "left by unmap, which clears only bit 0)")
        return "empty"

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == INVALID:
            return 0
        if self.version == 1:
            # DTE [11:1] reserved; PTE [11:9] reserved ([8:3] are cache flags the hardware defines)
            return raw & (0xFFE if lvl.num == 1 else 0xE00)
        return raw & (0xE if lvl.num == 1 else 0)  # v2: DTE [3:1] reserved

    # -- vectorised --------------------------------------------------------------------------
    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        valid = (raw.astype(np.uint64) & np.uint64(1)) != 0
        return np.where(valid, TABLE if lvl.num == 1 else LEAF, INVALID).astype(np.int8)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), SPAGE_SIZE, dtype=np.uint64)

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64)
        pa = r & np.uint64(RK_DTE_PT_ADDRESS_MASK)
        if self.version == 2:
            pa |= ((r & np.uint64(DTE_HI_MASK2)) << np.uint64(DTE_HI_SHIFT2)) | (
                (r & np.uint64(DTE_HI_MASK1)) << np.uint64(DTE_HI_SHIFT1))
        return pa

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.int64)
        return ((r >> 1) & 1) * IOMMU_READ | ((r >> 2) & 1) * IOMMU_WRITE

    def reserved_bits_vec(self, raw: np.ndarray, lvl: Level, kinds: np.ndarray) -> np.ndarray:
        if self.version == 1:
            mask = 0xFFE if lvl.num == 1 else 0xE00
        else:
            mask = 0xE if lvl.num == 1 else 0
        return np.where(kinds == INVALID, np.uint64(0), raw.astype(np.uint64) & np.uint64(mask))

    # -- encode (rk_iommu_map) -------------------------------------------------------------------
    def encode_table(self, table: int, lvl: Level) -> int:
        return self.mk_address(table) | RK_DTE_PT_VALID  # rk_mk_dte / rk_mk_dte_v2

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        flags = (RK_PTE_PAGE_READABLE if prot & IOMMU_READ else 0) | (
            RK_PTE_PAGE_WRITABLE if prot & IOMMU_WRITE else 0)
        return self.mk_address(phys) | flags | RK_DTE_PT_VALID  # rk_mk_pte / rk_mk_pte_v2

    def encode_leaf_vec(self, phys: np.ndarray, pgsize: int, lvl: Level, prot: int) -> np.ndarray:
        p = phys.astype(np.uint64)
        addr = p & np.uint64(RK_DTE_PT_ADDRESS_MASK)
        if self.version == 2:
            addr |= ((p & np.uint64(0xF << 32)) >> np.uint64(DTE_HI_SHIFT1)) | (
                (p & np.uint64(0xF << 36)) >> np.uint64(DTE_HI_SHIFT2))
        return addr | np.uint64(self.encode_leaf(0, SPAGE_SIZE, lvl, prot))

    def leaf_placement(self, pgsize: int) -> tuple[int, int]:
        # every core page size lands in one PT as pgsize/4K PTEs (never crosses a DTE: aligned, <= 4M)
        if not pgsize & RK_IOMMU_PGSIZE_BITMAP or pgsize & (pgsize - 1):
            raise ValueError(f"rockchip: page size {pgsize:#x} is not in RK_IOMMU_PGSIZE_BITMAP")
        return 1, pgsize // SPAGE_SIZE

    def encode_leaves(self, phys: int, pgsize: int, lvl: Level, prot: int, n: int) -> list[int]:
        # rk_iommu_map_iova: one PTE per 4K, paddr += SPAGE_SIZE
        return [self.encode_leaf(phys + k * SPAGE_SIZE, SPAGE_SIZE, lvl, prot) for k in range(n)]

    def invalidate(self, raw: int, lvl: Level) -> int:
        return raw & ~RK_DTE_PT_VALID  # rk_mk_pte_invalid

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        # The driver maps prot 0 as a valid PTE without R/W flags.
        if (phys + size - 1) >> self.oas:
            raise ValueError(f"phys {phys:#x}+{size:#x} is beyond pa_bits ({self.oas})")


DRIVERS = {
    "rockchip": {
        "format": "rockchip",
        "config": {"version": 1},
        "description": "Rockchip IOMMU (rockchip-iommu.c): version 1 \"rockchip,iommu\", 2 \"rockchip,rk3568-iommu\"",
    },
}
