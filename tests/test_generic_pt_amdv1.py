"""amdv1 and amdv1-mock descriptors worked by hand from drivers/iommu/generic_pt/fmt/amdv1.h:
AMDV1PT_FMT_PR = BIT(0), AMDV1PT_FMT_D = BIT(6), AMDV1PT_FMT_NEXT_LEVEL = GENMASK(11, 9),
AMDV1PT_FMT_OA = GENMASK(51, 12), AMDV1PT_FMT_FC = BIT(60), AMDV1PT_FMT_IR = BIT(61),
AMDV1PT_FMT_IW = BIT(62), AMDV1PT_FMT_NL_SIZE = 7; the mock (AMDV1_IOMMUFD_SELFTEST) has
PT_GRANULE_LG2SZ 11. Values are restated here, not imported from the format."""

from __future__ import annotations

from typing import Any

import pytest

from formats.base import IOMMU_MMIO, IOMMU_READ, IOMMU_WRITE, LEAF, TABLE, Level
from formats.builder import Arena, Builder
from formats.generic_pt.amdv1 import AmdV1, AmdV1Mock
from iommuctl.memory import PhysMem

PR, NL7, FC, IR, IW = 1, 7 << 9, 1 << 60, 1 << 61, 1 << 62
RW = IOMMU_READ | IOMMU_WRITE


def amd(cls: type[AmdV1] = AmdV1, **cfg: Any) -> AmdV1:
    c = dict(cls.config_defaults)
    c.update(cfg)
    return cls(c)


L0, L1, L2 = Level(0, 12, 9), Level(1, 21, 9), Level(2, 30, 9)


def test_leaf_words() -> None:
    f = amd()
    # 4K rw leaf, FORCE_COHERENCE forced on (iommu_amdv1.c PT_FORCE_ENABLED_FEATURES): NL 0
    assert f.encode_leaf(0x1234_5000, 4096, L0, RW) == PR | 0x1234_5000 | FC | IR | IW == 0x7000_0000_1234_5001
    # 32K at level 0: 8 items, NL=7, OA |= 2^(15-12-1)-1 = 0b11 -> bits 12,13 set, bit 14 clear
    raw = f.encode_leaf(0x2_0010_0000, 1 << 15, L0, RW)
    assert raw == 0x7000_0002_0010_3E01
    assert f.leaf_placement(1 << 15) == (2, 8)  # pt_pgsz_lg2_to_level: (15 - 12) / 9 = 0
    assert f.leaf_size(raw, L0) == 1 << 15 and f.leaf_phys(raw, L0) == 0x2_0010_0000
    # 4M at level 1: code 2^(22-13)-1 = 0x1ff in OA bits 12..20; ffz from bit 11+21-12 = 20 is 1
    raw = f.encode_leaf(0x3_0040_0000, 1 << 22, L1, IOMMU_READ)
    assert raw == PR | NL7 | 0x3_0040_0000 | 0x1FF << 12 | FC | IR == 0x3000_0003_005F_FE01
    assert f.leaf_size(raw, L1) == 1 << 22 and f.leaf_phys(raw, L1) == 0x3_0040_0000
    assert f.kind_name(raw, L1, LEAF) == "contiguous" and f.leaf_prot(raw, L1) == IOMMU_READ
    # without FORCE_COHERENCE: no FC (amdv1pt_iommu_set_prot)
    g = amd(features=["dynamic-top", "amdv1-encrypt-tables"])
    assert g.encode_leaf(0x5000, 4096, L0, IOMMU_WRITE) == PR | 0x5000 | IW


def test_table_word() -> None:
    """amdv1pt_install_table: PR | NextLevel = the entry's own level | OA | IR | IW."""
    f = amd()
    raw = f.encode_table(0x4000_1000, L2)
    assert raw == 0x6000_0000_4000_1401
    assert f.classify(raw, L2) == TABLE and f.next_table(raw, L2) == 0x4000_1000
    assert f.classify(raw, L0) == LEAF  # level 0 is always an OA (amdv1pt_load_entry_raw)
    assert f.classify(raw & ~PR, L2) == 0
    assert f.reserved_bits(raw, L2, TABLE) == 0
    assert f.reserved_bits(raw | (1 << 9), L2, TABLE) != 0  # NextLevel 3 at level 2: skips a level


def test_possible_sizes_kunit() -> None:
    """amdv1pt_possible_sizes; kunit test_entry_possible_sizes special-cases level 3's bitmap
    0xff0000000000 (no 512G); level 5 holds no leaves (amdv1pt_can_have_leaf)."""
    f = amd()
    assert f.possible_sizes(3) == 0xFF00_0000_0000
    assert f.possible_sizes(0) == 0x1F_F000  # 4K..1M
    assert f.possible_sizes(4) == ((1 << 52) - (1 << 48))  # 256T.., capped at 2^51
    assert f.possible_sizes(5) == 0
    assert f.num_items_lg2(5) == 7  # the top entry covers VA[63:57]


def test_size_code_decode_edge() -> None:
    """NL=7 with no ones: one zero at bit 12 at level 0 -> ffz(entry >> 11) = 1 -> 8K."""
    f = amd()
    assert f.leaf_size(PR | NL7 | 0x8000, L0) == 8192
    # a level-0 entry with NextLevel 1..6: an OA whose amdv1pt_entry_oa is 0 (it WARNs)
    raw = PR | (3 << 9) | 0x8000
    assert f.classify(raw, L0) == LEAF and f.leaf_phys(raw, L0) == 0
    assert f.reserved_bits(raw, L0, LEAF) == 3 << 9


def test_sme_c_bit() -> None:
    """ENCRYPT_TABLES with sme_me_mask: __sme_set on tables and non-MMIO leaves, __sme_clr on
    decode; a leaf without the C-bit reads back as IOMMU_MMIO."""
    c = 1 << 47
    f = amd(sme_me_mask=c)
    assert f.encode_table(0x4000_1000, L2) == 0x6000_0000_4000_1401 | c
    assert f.next_table(0x6000_0000_4000_1401 | c, L2) == 0x4000_1000
    leaf = f.encode_leaf(0x5000, 4096, L0, RW)
    assert leaf & c and f.leaf_phys(leaf, L0) == 0x5000 and f.leaf_prot(leaf, L0) == RW
    mmio = f.encode_leaf(0x5000, 4096, L0, RW | IOMMU_MMIO)
    assert not mmio & c and f.leaf_prot(mmio, L0) == RW | IOMMU_MMIO


def test_dte_root() -> None:
    """set_dte_v1: DTE[0] = V | TV | mode [11:9] | host root [51:12] | IR | IW."""
    f = amd(levels=3)
    dte = f.dte(0x8000_1000)
    assert dte == 0x6000_0000_8000_1603
    g = amd(levels=3)
    assert g.root_from_register(0x8000_1000 | 4 << 9) == [0x8000_1000]
    assert g.top_level == 3  # mode 4
    for bad in (0x8000_1000, 0x8000_1000 | 7 << 9):  # mode 0 (no translation), 7 (reserved)
        with pytest.raises(ValueError):
            amd().root_from_register(bad)


def test_mock_words() -> None:
    """The mock shifts by PT_GRANULE_LG2SZ 11: PTE bit 12 is address bit 11."""
    f = amd(AmdV1Mock)
    assert [lv.shift for lv in f.levels] == [29, 20, 11] and f.max_vasz == 38
    m0 = Level(0, 11, 9)
    assert f.encode_leaf(0x800, 2048, m0, RW) == PR | 1 << 12 | IR | IW == 0x6000_0000_0000_1001  # no FC
    # 4K = two 2K items: NL=7 and code 2^(12-11-1)-1 = 0; ffz(entry >> 11) = 1 (NL's bit 11 is 1)
    raw = f.encode_leaf(0x1000, 4096, m0, RW)
    assert raw == 0x6000_0000_0000_2E01
    assert f.leaf_size(raw, m0) == 4096 and f.leaf_phys(raw, m0) == 0x1000
    assert f.next_table(PR | (1 << 9) | (0x20 << 12), Level(1, 20, 9)) == 0x20 << 11
    assert f.root_register is None


def test_mock_huge_map() -> None:
    """MOCK_IOMMUPT_HUGE: pgsize_bitmap MOCK_HUGE_PAGE_SIZE (512 * 2K) | PAGE_SIZE: a 1M page
    is one level-1 item (item 1M), 4K is two level-0 items."""
    f = amd(AmdV1Mock, pgsize_bitmap=(1 << 20) | 4096)
    b = Builder(f, Arena(PhysMem(), 0x1000_0000))
    b.map(0x100_0000, 0x4000_0000, (1 << 20) + 8192, RW)
    leaves = list(b.walker.iter_leaves(0, 1 << 38))
    assert [(lf[0], lf[2], lf[3]) for lf in leaves] == [
        (0x100_0000, 1 << 20, 1), (0x110_0000, 4096, 0), (0x110_1000, 4096, 0)]
