"""vtdss descriptors worked by hand from drivers/iommu/generic_pt/fmt/vtdss.h: VTDSS_FMT_R =
BIT(0), VTDSS_FMT_W = BIT(1), VTDSS_FMT_PS = BIT(7), VTDSS_FMT_D = BIT(9), VTDSS_FMT_SNP =
BIT(11), VTDSS_FMT_OA = GENMASK(51, 12), vtdss_pt_sw_bit(0) = BIT(10); no present bit."""

from __future__ import annotations

from typing import Any

import pytest

from formats.base import INVALID, IOMMU_READ, IOMMU_WRITE, LEAF, TABLE, Level
from formats.builder import Arena, Builder
from formats.generic_pt.vtdss import VtdSs
from iommuctl.memory import PhysMem

RW = IOMMU_READ | IOMMU_WRITE
L0, L1, L2, L3 = Level(0, 12, 9), Level(1, 21, 9), Level(2, 30, 9), Level(3, 39, 9)


def ss(**cfg: Any) -> VtdSs:
    c = dict(VtdSs.config_defaults)
    c.update(cfg)
    return VtdSs(c)


def test_words() -> None:
    f = ss()
    assert f.encode_leaf(0x4020_0000, 1 << 21, L1, RW) == 0x4020_0083  # OA | R | W | PS
    assert f.encode_leaf(0x1234_5000, 4096, L0, IOMMU_READ) == 0x1234_5001  # no PS at level 0
    assert f.encode_table(0x1234_5000, L2) == 0x1234_5003  # vtdss_pt_install_table: R | W | OA
    fc = ss(features=["vtdss-force-coherence"])
    assert fc.encode_leaf(0x4020_0000, 1 << 21, L1, RW) == 0x4020_0883  # + SNP
    inc = ss(features=["dma-incoherent"])
    assert inc.encode_table(0x1234_5000, L2) == 0x1234_5403  # + SW bit 0 (CACHE_FLUSH_DONE)
    assert inc.reserved_bits(0x1234_5403, L2, TABLE) == 0 and f.reserved_bits(0x1234_5403, L2, TABLE) == 1 << 10


def test_no_present_bit() -> None:
    """vtdss_pt_load_entry_raw: only an all-zero word is empty; PS only counts at levels 1-2."""
    f = ss()
    assert f.classify(0, L0) == INVALID
    assert f.classify(1 << 9, L0) == LEAF  # D alone: present, grants nothing
    assert f.leaf_prot(1 << 9, L0) == 0
    assert f.classify(1 << 9, L1) == TABLE
    assert f.classify(0x80 | 0x1000, L2) == LEAF and f.classify(0x80 | 0x1000, L3) == TABLE
    with pytest.raises(ValueError):  # vtdss_pt_iommu_set_prot: R or W needed
        f.set_prot(0)
    with pytest.raises(ValueError):  # VTDSS_FORCE_WRITEABLE (ERRATA_772415_SPR17)
        ss(features=["vtdss-force-writeable"]).set_prot(IOMMU_READ)


def test_pasid_entry_root() -> None:
    """pt_iommu_vtdss_hw_info: aw = top_level - 1; PASID entry qword 0 SSPTPTR/AW/PGTT."""
    f = ss(levels=4)
    assert f.pasid_entry(0x8000_0000) == 0x8000_0000 | 2 << 6 | 2 << 2 | 1
    g = ss(levels=4)
    assert g.root_from_register(0x8000_0000 | 2 << 6 | 3 << 2 | 1) == [0x8000_0000]
    # AW 3 = 5 levels; vasz stays 48, so the top decodes nothing (index 0 only), as
    # compute_vasz_lg2_ss may configure it
    assert g.top_level == 4 and g.levels[0].bits == 0 and g.windows == [(0, 1 << 48)]
    with pytest.raises(ValueError):
        ss().root_from_register(0x8000_0000 | 1 << 6 | 2 << 2)  # PGTT first-stage only
    with pytest.raises(ValueError):
        ss().root_from_register(0x8000_0000 | 2 << 6)  # AW 0


def test_deep_table_narrow_va() -> None:
    """compute_vasz_lg2_ss may give a 5-level table for a 39-bit VA: the top indexes with
    (va mod 2^39) >> 48 = 0 (pt_range_to_index), one entry used."""
    f = ss(levels=5, vasz=39)
    assert f.levels[0].bits == 0 and f.windows == [(0, 1 << 39)]
    b = Builder(f, Arena(PhysMem(), 0x1000_0000))
    b.map(0x7F_C000_0000, 0x1_0000_0000, 1 << 30, RW)
    t = b.walker.translate(0x7F_C000_1234)
    assert (t.phys, t.size, t.level, t.entries_read) == (0x1_0000_1234, 1 << 30, 2, 3)


def test_kunit_mixed() -> None:
    """kunit_iommu_pt.h test_mixed: [0x3fe400 << 12, 0x4c0600 << 12) identity needs 14 x 2M,
    3 x 1G, 3 x 2M."""
    f = ss()
    b = Builder(f, Arena(PhysMem(), 0x1_0000_0000_0000))
    start, end = 0x3FE400 << 12, 0x4C0600 << 12
    b.map(start, start, end - start, RW)
    sizes = [lf[2] for lf in b.walker.iter_leaves(0, 1 << 48)]
    assert sizes == [1 << 21] * 14 + [1 << 30] * 3 + [1 << 21] * 3
