from __future__ import annotations

import pytest

from formats.base import IOMMU_CACHE, IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE, parse_prot, prot_str
from formats.builder import iommu_pgsize
from iommuctl.numbers import fmt_size, parse_number


@pytest.mark.parametrize("text,value", [("0x8000_0000", 0x8000_0000), ("4096", 4096), ("4K", 4096),
                                        ("2M", 2 << 20), ("1G", 1 << 30), ("1T", 1 << 40), ("16KiB", 16384),
                                        (7, 7)])
def test_parse_number(text: object, value: int) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "4Q", "zz", None, True, 1.5, [1]])
def test_parse_number_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_number(text)


def test_fmt_size() -> None:
    assert [fmt_size(x) for x in (4096, 2 << 20, 1 << 30, 3 << 40, 100)] == ["4K", "2M", "1G", "3T", "100"]


def test_prot_text_round_trip() -> None:
    p = IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE | IOMMU_NOEXEC
    assert prot_str(p) == "rw,cache,noexec"
    assert parse_prot("rw,cache,noexec") == p
    assert parse_prot("r") == IOMMU_READ
    with pytest.raises(ValueError):
        parse_prot("rx")


LPAE_4K = (1 << 12) | (1 << 21) | (1 << 30)


def test_iommu_pgsize_worked_examples() -> None:
    # iommu.c iommu_pgsize(): the largest size fitting alignment and length ...
    assert iommu_pgsize(LPAE_4K, 0x4000_0000, 0x8000_0000, 1 << 30) == (1 << 30, 1)
    # ... and for the small size, only up to the next larger size's boundary when iova and
    # paddr are congruent modulo it and the remaining length reaches past that boundary.
    assert iommu_pgsize(LPAE_4K, 0x1F_F000, 0x3F_F000, 0x40_1000) == (4096, 1)
    # not congruent modulo 2M: all the 4K pages at once
    assert iommu_pgsize(LPAE_4K, 0x1000, 0x2000, 0x40_0000) == (4096, 0x400)
    # length does not reach a whole 2M past the boundary: all small pages
    assert iommu_pgsize(LPAE_4K, 0x1F_F000, 0x3F_F000, 0x20_0000) == (4096, 0x200)


def test_descriptor_encode_matches_construct() -> None:
    from formats.base import Descriptor

    d = Descriptor("demo", 64, ("xn", 54, 53), ("addr", 47, 12), ("af", 10, 10), ("sh", 9, 8), ("type", 1, 0))
    values = {"xn": 3, "addr": 0x12345, "af": 1, "sh": 3, "type": 3}
    raw = d.encode(**values)
    assert raw == (3 << 53) | (0x12345 << 12) | (1 << 10) | (3 << 8) | 3
    assert raw == d.build(**values)
    assert d.decode(raw) == {"xn": 3, "addr": 0x12345, "af": True, "sh": 3, "type": 3}
    with pytest.raises(ValueError):
        d.encode(sh=4)


def test_block_over_a_table_replaces_it_as_io_pgtable_does() -> None:
    # __arm_lpae_map: a table found where a block goes is freed and the block written.
    from iommuctl.domain import load_domain_text

    dom = load_domain_text("format: arm-lpae-s1\nconfig: {granule: 4K, ias: 39, oas: 40}\nmappings:\n"
                           "  - {iova: 0x40001000, phys: 0x80001000, size: 4K}\n"
                           "  - {iova: 0x40000000, phys: 0x1000000000, size: 1G}\n")
    t = dom.translate(0x40001000)
    assert (t.phys, t.size) == (0x1000001000, 1 << 30)
    with pytest.raises(Exception, match="EEXIST"):
        load_domain_text("format: exynos\nmappings:\n  - {iova: 0x1000, phys: 0x1000, size: 4K}\n"
                         "  - {iova: 0x0, phys: 0x100000, size: 1M}\n")
