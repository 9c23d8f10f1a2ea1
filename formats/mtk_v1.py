"""MediaTek generation-one M4U (mt2701) page table (drivers/iommu/mtk_iommu_v1.c).

One flat table of M2701_IOMMU_PGT_SIZE = 4 MiB: 1M u32 entries covering the 4 GiB IOVA space
(`arm_iommu_create_mapping(dev, 0, 1ULL << 32)`), index iova >> MT2701_IOMMU_PAGE_SHIFT, 4K pages
only. An entry is (u32)PA | F_DESC_VALID | F_DESC_NONSEC (`mtk_iommu_v1_map`); `prot` is ignored.
REG_MMU_PT_BASE_ADDR holds the table PA (`mtk_iommu_v1_domain_finalise`).

The legacy `mtk_iommu_v1_iova_to_phys` returns entry & ~0xfff: it drops the in-page offset and
does not test F_DESC_VALID.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iommuctl.memory import MemoryFault

from .base import (
    INVALID,
    IOMMU_READ,
    IOMMU_WRITE,
    LEAF,
    ConfigError,
    Descriptor,
    Level,
    PageTable,
    Translation,
)
from .lazy import np

MT2701_IOMMU_PAGE_SHIFT = 12
MT2701_IOMMU_PAGE_SIZE = 1 << MT2701_IOMMU_PAGE_SHIFT
M2701_IOMMU_PGT_SIZE = 4 << 20
F_DESC_VALID = 0x2
F_DESC_NONSEC = 1 << 3
ADDR_MASK = 0xFFFF_F000
U32 = 0xFFFF_FFFF

PTE = Descriptor("mtk_v1_pte", 32, ("pa", 31, 12), ("nonsec", 3, 3), ("valid", 1, 1))


class MtkV1(PageTable):
    leaf_size_is_block = True  # one flat level of 4K pages
    name = "mtk-v1"
    description = "MediaTek M4U generation one (mt2701): flat 4 MiB table of u32 PTEs over 4 GiB, 4K pages"
    kernel_source = "drivers/iommu/mtk_iommu_v1.c"
    entry_size = 4
    config_defaults = {"pa_bits": 32}
    root_register = "pt_base_addr"
    # leaf_prot is the base's read/write: mtk_iommu_v1_map ignores prot (no permission bits).

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        pa_bits = config["pa_bits"]
        if not 13 <= pa_bits <= 32:
            raise ConfigError("pa_bits", f"{pa_bits}: an entry holds a 32-bit PA (13..32)")
        self.levels = [Level(1, MT2701_IOMMU_PAGE_SHIFT, 20)]  # 1M entries
        self.page_sizes = [MT2701_IOMMU_PAGE_SIZE]
        self.oas = pa_bits
        self.windows = [(0, 1 << 32)]
        self._bound: tuple[Any, int] | None = None

    # -- roots ----------------------------------------------------------------------------------
    def root_from_register(self, value: int) -> list[int]:
        """REG_MMU_PT_BASE_ADDR is written with the table PA (a 32-bit writel)."""
        if value > U32:
            raise ValueError(f"pt_base_addr {value:#x} does not fit the 32-bit REG_MMU_PT_BASE_ADDR")
        return [value]

    def root_alloc(self) -> list[tuple[int, int]]:
        return [(M2701_IOMMU_PGT_SIZE, M2701_IOMMU_PGT_SIZE)]  # dma_alloc_coherent, order 10

    def bind(self, mem: Any, roots: Sequence[int]) -> None:
        # the legacy iova_to_phys reads the entry even when it is not valid
        self._bound = (mem, roots[0])

    # -- decode -----------------------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        return LEAF if raw & F_DESC_VALID else INVALID

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        return raw & ADDR_MASK

    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        return PTE

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        if kind == LEAF:
            ns = ", non-secure" if raw & F_DESC_NONSEC else ", secure"
            return f"4 KiB page at PA {raw & ADDR_MASK:#x}{ns} (no permission bits)"
        if raw:
            return "F_DESC_VALID clear: a fault (redirected to the protect buffer)"
        return "empty"

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == INVALID and raw == 0:
            return 0
        bad = raw & ~(ADDR_MASK | F_DESC_VALID | F_DESC_NONSEC) & U32
        return bad | (raw & ADDR_MASK & ~((1 << self.oas) - 1))

    def legacy_iova_to_phys(self, iova: int, t: Translation) -> int:
        """`mtk_iommu_v1_iova_to_phys`: entry & ~0xfff, no in-page offset, valid bit not tested."""
        if t.mapped and t.raw is not None:
            return t.raw & ~(MT2701_IOMMU_PAGE_SIZE - 1)
        if self._bound is None or not 0 <= iova < 1 << 32:
            return 0
        mem, root = self._bound
        try:
            raw = mem.read_uint(root + (iova >> MT2701_IOMMU_PAGE_SHIFT) * 4, 4, self.byteorder)
        except MemoryFault:
            return 0
        return int(raw) & ~(MT2701_IOMMU_PAGE_SIZE - 1)

    def legacy_iova_to_phys_vec(self, iova: np.ndarray, phys: np.ndarray, size: np.ndarray, level: np.ndarray,
                                raw: np.ndarray) -> np.ndarray:
        """The entry of every IOVA read again, valid or not (a hit's is its leaf): & ~0xfff; 0 where
        it cannot be read."""
        out = np.where(size != 0, raw, np.uint64(0)).astype(np.uint64)
        miss = np.flatnonzero((size == 0) & (iova < np.uint64(1 << 32)))
        if self._bound is not None and len(miss):
            mem, root = self._bound
            addrs = np.uint64(root) + (iova[miss] >> np.uint64(MT2701_IOMMU_PAGE_SHIFT)) * np.uint64(4)
            out[miss] = mem.gather(addrs, self.dtype)[0]  # a lane outside memory reads 0
        return out & np.uint64(~(MT2701_IOMMU_PAGE_SIZE - 1) & U32)  # type: ignore[no-any-return]

    # -- vectorised ---------------------------------------------------------------------------------
    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.where((raw & F_DESC_VALID) != 0, LEAF, INVALID).astype(np.int8)

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return raw.astype(np.uint64) & np.uint64(ADDR_MASK)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), MT2701_IOMMU_PAGE_SIZE, dtype=np.uint64)

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.full(len(raw), IOMMU_READ | IOMMU_WRITE, dtype=np.int64)

    # -- encode (mtk_iommu_v1_map) ----------------------------------------------------------------
    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        return (phys & U32) | F_DESC_VALID | F_DESC_NONSEC  # pabase = (u32)paddr; prot ignored

    def encode_leaf_vec(self, phys: np.ndarray, pgsize: int, lvl: Level, prot: int) -> np.ndarray:
        return (phys.astype(np.uint64) & np.uint64(U32)) | np.uint64(F_DESC_VALID | F_DESC_NONSEC)

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        # prot is ignored (no r/w requirement); the PA is truncated to u32 by the driver
        if (phys + size - 1) >> self.oas:
            raise ValueError(f"phys {phys:#x}+{size:#x} is beyond pa_bits ({self.oas}): mtk_iommu_v1_map "
                             "stores a 32-bit PA")


DRIVERS = {
    "mtk-v1": {
        "format": "mtk-v1",
        "config": {},
        "description": "MediaTek M4U generation one, mt2701 (mtk_iommu_v1.c)",
    },
}
