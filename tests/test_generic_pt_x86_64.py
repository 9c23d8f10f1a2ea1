"""x86-64 descriptors worked by hand from drivers/iommu/generic_pt/fmt/x86_64.h: X86_64_FMT_P =
BIT(0), _RW = BIT(1), _U = BIT(2), _A = BIT(5), _D = BIT(6), _PS = BIT(7), _OA = GENMASK(51, 12),
_XD = BIT(63); x86_64_pt_sw_bit(0) = BIT(9)."""

from __future__ import annotations

from typing import Any

import pytest

from formats.base import IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE, LEAF, TABLE, ConfigError, Level
from formats.builder import Arena, Builder
from formats.generic_pt.x86_64 import X86_64
from iommuctl.memory import PhysMem

RW = IOMMU_READ | IOMMU_WRITE
L0, L1, L2, L3 = Level(0, 12, 9), Level(1, 21, 9), Level(2, 30, 9), Level(3, 39, 9)


def x86(**cfg: Any) -> X86_64:
    c = dict(X86_64.config_defaults)
    c.update(cfg)
    return X86_64(c)


def test_words() -> None:
    f = x86()
    assert f.encode_leaf(0x1234_5000, 4096, L0, RW) == 0x1234_5067  # P|RW|U|A|D
    assert f.encode_leaf(0x1234_5000, 4096, L0, IOMMU_READ | IOMMU_NOEXEC) == 0x1234_5025  # P|U|A, no XD
    assert f.encode_leaf(0x4020_0000, 1 << 21, L1, RW) == 0x4020_00E7  # + PS
    assert f.encode_table(0x1234_5000, L3) == 0x1234_5027  # x86_64_pt_install_table: P|RW|U|A
    assert x86(features=["dma-incoherent"]).encode_table(0x1234_5000, L3) == 0x1234_5227
    assert f.classify(0x4020_00E7, L1) == LEAF and f.classify(0x4020_00E7, L3) == TABLE  # PS ignored at 3
    assert f.classify(0x1234_5066, L0) == 0  # P clear
    assert f.leaf_prot(0x1234_5025 | 1 << 63, L0) == IOMMU_READ | IOMMU_NOEXEC
    assert f.reserved_bits(0x4020_10E7, L1, LEAF) == 1 << 12  # PAT / misaligned bits of a 2M page


def test_sign_extend_windows() -> None:
    """PT_FEAT_SIGN_EXTEND: both canonical halves; the top index keeps the sign bit, so the
    upper half lands in top entries 256..511."""
    f = x86()
    assert f.windows == [(0, 1 << 47), ((1 << 64) - (1 << 47), 1 << 64)]
    b = Builder(f, Arena(PhysMem(), 0x1000_0000))
    b.map(0xFFFF_8000_0000_0000, 0x1_0000_0000, 1 << 21, RW)
    steps: list[Any] = []
    t = b.walker.translate(0xFFFF_8000_0000_1234, steps)
    assert steps[0].index == 256 and t.phys == 0x1_0000_1234 and t.size == 1 << 21
    g = x86(vasz=47, features=[])  # AMD v2: no sign extension, 47 bits
    assert g.windows == [(0, 1 << 47)]
    assert x86(levels=5).windows[1][0] == (1 << 64) - (1 << 56)


def test_root_word() -> None:
    f = x86()
    assert f.root_from_register(0x8000_1000 | 1) == [0x8000_1000]  # GCR3 entry with GCR3_VALID
    assert x86(features=["x86-64-amd-encrypt-tables"], sme_me_mask=1 << 47).root_from_register(
        0x8000_1000 | 1 << 47 | 1) == [0x8000_1000]


def test_refusals() -> None:
    with pytest.raises(ConfigError):
        x86(levels=3)
    with pytest.raises(ConfigError):  # sign-extend with dynamic-top (not supported anyway)
        x86(features=["sign-extend", "dynamic-top"])
    f = x86(oasz=40)
    with pytest.raises(ValueError):
        f.check_map(0, 1 << 40, 4096, RW)  # map_range: paddr beyond max_oasz -> -ERANGE
    assert f.classify(0x27, L3) == TABLE
