"""riscv64 descriptors worked by hand from drivers/iommu/generic_pt/fmt/riscv.h: RISCVPT_V..D =
BIT(0)..BIT(7), RISCVPT_PPN64 = GENMASK(53, 10), RISCVPT_PPN64_64K = GENMASK(53, 14),
RISCVPT_PPN64_64K_SZ = BIT(13), RISCVPT_N = BIT(63); iosatp MODE 8/9/10 = Sv39/48/57."""

from __future__ import annotations

from typing import Any

import pytest

from formats.base import IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE, LEAF, TABLE, Level
from formats.builder import Arena, Builder
from formats.generic_pt.riscv64 import RiscV64
from iommuctl.memory import PhysMem

RW = IOMMU_READ | IOMMU_WRITE
L0, L1, L2 = Level(0, 12, 9), Level(1, 21, 9), Level(2, 30, 9)


def rv(**cfg: Any) -> RiscV64:
    c = dict(RiscV64.config_defaults)
    c.update(cfg)
    return RiscV64(c)


def test_words() -> None:
    f = rv()
    # V|R|W|X|U|A|D = 0xdf; PPN 0x80123 << 10
    assert f.encode_leaf(0x8012_3000, 4096, L0, RW) == 0x2004_8CDF
    # read-only without NOEXEC is R|X (riscvpt_iommu_set_prot): V|R|X|U|A = 0x5b
    assert f.encode_leaf(0x8012_3000, 4096, L0, IOMMU_READ) == 0x2004_8C5B
    assert f.leaf_prot(0x2004_8C5B, L0) == IOMMU_READ
    assert f.leaf_prot(0x2004_8CD7, L0) == RW | IOMMU_NOEXEC  # X clear
    assert f.encode_table(0x8012_3000, L2) == 0x2004_8C01  # V | PPN only
    assert f.classify(0x2004_8C01, L2) == TABLE and f.classify(0x2004_8C01, L0) == LEAF
    assert f.classify(0x2004_8C5B, L2) == LEAF  # every level can hold a leaf


def test_napot_64k() -> None:
    """64K at PA 0x8012_0000: PPN field 0x80128 (ppn[3:0] = 1000b) with N, in all 16 items."""
    f = rv()
    raw = f.encode_leaf(0x8012_0000, 1 << 16, L0, RW)
    assert raw == 0x8000_0000_2004_A0DF
    assert f.leaf_size(raw, L0) == 1 << 16 and f.leaf_phys(raw, L0) == 0x8012_0000
    assert f.leaf_placement(1 << 16) == (3, 16)
    b = Builder(f, Arena(PhysMem(), 0x1000_0000))
    b.map(0x10_0000, 0x8012_0000, 1 << 16, RW)
    leaves = list(b.walker.iter_leaves(0, 1 << 47))
    assert [(lf[0], lf[1], lf[2]) for lf in leaves] == [(0x10_0000, 0x8012_0000, 1 << 16)]  # yielded once
    t = b.walker.translate(0x10_FFFF)
    assert (t.phys, t.size) == (0x8012_FFFF, 1 << 16)
    # without the feature the map path never writes it; a stray N still spans 16 items
    # (riscvpt_entry_num_contig_lg2 tests the compile-time feature) and the OA keeps ppn[3]
    g = rv(features=["sign-extend"])
    assert g.bitmap & (1 << 16) == 0 and g.leaf_phys(raw, L0) == 0x8012_8000
    assert g.legacy_iova_to_phys(0x10_FFFF, t) == 0x8012_8000 | 0xFFFF == 0x8012_FFFF


def test_iosatp_root() -> None:
    """pt_iommu_riscv_64_hw_info: fsc_iosatp_mode = top_level + 6, ppn = top >> 12."""
    f = rv(vasz=48)
    assert f.iosatp(0x8000_0000) == 9 << 60 | 0x80000
    g = rv(vasz=48)
    assert g.root_from_register(10 << 60 | 0x80000) == [0x8000_0000]
    assert g.top_level == 4 and g.max_vasz == 57
    with pytest.raises(ValueError):
        rv().root_from_register(0x80000)  # MODE 0 = Bare


def test_sv39_top_leaf_and_halves() -> None:
    f = rv(vasz=39)
    assert f.windows == [(0, 1 << 38), ((1 << 64) - (1 << 38), 1 << 64)]
    assert f.bitmap == (1 << 12) | (1 << 16) | (1 << 21) | (1 << 30)
    b = Builder(f, Arena(PhysMem(), 0x1000_0000))
    b.map((1 << 64) - (1 << 30), 0x4000_0000, 1 << 30, RW)  # a top-level 1G leaf in the upper half
    t = b.walker.translate((1 << 64) - 1)
    assert (t.phys, t.size, t.level) == (0x7FFF_FFFF, 1 << 30, 2)
    assert b.walker.translate((1 << 64) - (1 << 30) - 1).size == 0
