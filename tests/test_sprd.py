"""sprd (drivers/iommu/sprd-iommu.c): flat u32 PPN table, worked by hand from the driver."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats.base import INVALID, LEAF, PHYS_ADDR_MAX, ConfigError, Translation
from formats.builder import Arena, Builder
from formats.sprd import Sprd
from formats.walker import Walker
from iommuctl.domain import load_domain_text
from iommuctl.memory import PhysMem
from tests import format_harness as h


def fmt(**cfg: int) -> Sprd:
    return Sprd({**Sprd.config_defaults, **cfg})


def test_geometry_is_the_hard_coded_aperture() -> None:
    f = fmt()
    # sprd_iommu_domain_alloc_paging: aperture [0, SZ_256M - 1]; sprd_iommu_pgt_size: 65536 u32
    assert f.windows == [(0, 256 << 20)]
    assert f.levels[0].entries == 65536 and f.levels[0].shift == 12
    assert f.page_sizes == [4096]
    assert f.root_alloc() == [(256 << 10, 256 << 10)]  # dma_alloc_coherent, order-6 block


def test_descriptor_by_hand() -> None:
    f = fmt()
    lvl = f.levels[0]
    # sprd_iommu_map: pgt[i] = (u32)paddr >> SPRD_IOMMU_PAGE_SHIFT; prot ignored
    raw = f.encode_leaf(0x8765_4000, 4096, lvl, 0)
    assert raw == 0x87654
    assert f.encode_leaf(0x1_8765_4000, 4096, lvl, 3) == 0x87654  # (u32) truncation
    assert f.classify(raw, lvl) == LEAF and f.classify(0, lvl) == INVALID
    assert f.leaf_phys(raw, lvl) == 0x8765_4000
    assert f.fields(raw, lvl, LEAF) == {"ppn": 0x87654}
    # a PPN needing more than pa_bits (32): bits 31:20 of the entry are never written by map
    assert f.reserved_bits(0x0010_0000, lvl, LEAF) == 0x0010_0000
    assert fmt(pa_bits=44).reserved_bits(0x0010_0000, lvl, LEAF) == 0


def test_index_subtracts_aperture_start_and_root_register() -> None:
    f = fmt(aperture_start=0x1000_0000, aperture_size=0x10_0000)
    lvl = f.levels[0]
    assert f.index(0x1000_3000, lvl) == 3  # (iova - start) >> SPRD_IOMMU_PAGE_SHIFT
    assert f.windows == [(0x1000_0000, 0x1010_0000)]
    # SPRD_EX_FIRST_PPN = pgt_pa >> 12 (sprd_iommu_first_ppn)
    assert f.root_from_register(0x84040) == [0x8404_0000]
    with pytest.raises(ValueError):
        f.root_from_register(1 << 32)


def test_config_errors() -> None:
    for bad in ({"aperture_start": 0x123}, {"aperture_size": 0}, {"aperture_size": 0x1800}, {"pa_bits": 48}):
        with pytest.raises(ConfigError):
            fmt(**bad)


def test_legacy_returns_the_in_page_offset_on_a_miss() -> None:
    f = fmt(aperture_start=0x1000_0000)
    # sprd_iommu_iova_to_phys: (entry << 12) + ((iova - start) & 0xfff), entry 0 on a miss
    assert f.legacy_iova_to_phys(0x1000_0abc, Translation(0x1000_0abc)) == 0xabc
    assert f.legacy_iova_to_phys(0x0abc, Translation(0x0abc)) == 0  # outside: WARN_ON, 0
    hit = Translation(0x1000_0abc, 0x8000_0abc, 4096)
    assert f.legacy_iova_to_phys(0x1000_0abc, hit) == 0x8000_0abc
    # the batch form: a miss, outside the aperture, a hit
    iova = np.array([0x1000_0abc, 0x0abc, 0x1000_0abc], dtype=np.uint64)
    phys = np.array([PHYS_ADDR_MAX, PHYS_ADDR_MAX, 0x8000_0abc], dtype=np.uint64)
    size = np.array([0, 0, 4096], dtype=np.uint64)
    vec = f.legacy_iova_to_phys_vec(iova, phys, size, np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.uint64))
    assert vec.tolist() == [0xabc, 0, 0x8000_0abc]


@pytest.mark.parametrize("name", ["sprd-ex-1", "sprd-ex-3"])
def test_conformance_case(name: str) -> None:
    case = h.read_case(name)
    u = case["config"]["user"]
    dom = load_domain_text(
        f"format: sprd\nconfig: {json.dumps(u)}\nttbr: {case['roots']['first_ppn']:#x}\n"
        f"memory:\n  - file: image.bin\n    base: {case['image_base']:#x}\n", h.CONF / name)
    assert dom.roots == [case["roots"]["root_table_phys"]]
    misses = h.check_domain_probes(dom, case)
    assert misses > 0


def build(f: Sprd, maps: list[tuple[int, int, int]]) -> Walker:
    mem = PhysMem()
    b = Builder(f, Arena(mem, 0x4000_0000))
    for iova, phys, size in maps:
        b.map(iova, phys, size, 1)
    return Walker(f, mem, b.roots)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(1, 0xFFFFF), st.integers(1, 8)), max_size=6),
       st.sampled_from([0, 0x2000_0000]))
def test_round_trip(items: list[tuple[int, int, int]], start: int) -> None:
    f = fmt(aperture_start=start, aperture_size=1 << 20)
    maps: list[tuple[int, int, int]] = []
    used: set[int] = set()
    for slot, ppn, n in items:
        pages = set(range(slot, min(slot + n, 256)))
        if pages & used or ppn + n > 0xFFFFF:
            continue
        used |= pages
        maps.append((start + slot * 4096, ppn * 4096, len(pages) * 4096))
    w = build(f, maps)
    want = {(i + k, p + k, 4096) for i, p, s in maps for k in range(0, s, 4096)}
    got = {(i, p, s) for i, p, s, *_ in w.iter_leaves(start, start + (1 << 20))}
    assert got == want
    for i, p, _ in want:
        assert w.translate(i + 5).phys == p + 5
    for i, _, s in maps:  # sprd_iommu_unmap memsets the entries to 0
        for k in range(0, s, 4096):
            assert w.unmap_leaf(i + k, 4096) == 4096
    assert not list(w.iter_leaves(start, start + (1 << 20)))
