"""s390 (drivers/iommu/s390-iommu.c, arch/s390/include/asm/pci_dma.h), worked by hand."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats.base import INVALID, IOMMU_READ, IOMMU_WRITE, LEAF, TABLE, ConfigError, Translation
from formats.builder import Arena, Builder
from formats.s390 import S390, origin_levels
from formats.walker import Walker
from iommuctl.domain import load_domain_text
from iommuctl.memory import PhysMem
from tests import format_harness as h

U64 = (1 << 64) - 1


def fmt(**cfg: int | None) -> S390:
    return S390({**S390.config_defaults, **cfg})


def test_levels_chosen_by_the_aperture() -> None:
    # s390_domain_alloc_paging: RTX while aperture <= ZPCI_TABLE_SIZE_RT - start_dma, RSX while
    # <= ZPCI_TABLE_SIZE_RS - start_dma, else RFX; end_dma rewritten to start + aperture - 1
    assert origin_levels(1 << 32, 5 * (1 << 32) - 1) == (3, 5 * (1 << 32) - 1)  # s390-3lvl
    assert origin_levels(1 << 32, (1 << 53) - 1) == (4, (1 << 53) - 1)  # s390-4lvl
    assert origin_levels(1 << 32, U64) == (5, U64)  # s390-5lvl
    assert origin_levels(0, U64) == (3, U64)  # end - start + 1 wraps to 0: RTX
    assert origin_levels(1 << 32, U64, dtsm_rs=False, dtsm_rf=False) == (3, (1 << 42) - 1)
    for levels, end, top in ((3, (1 << 42) - 1, 3), (4, (1 << 53) - 1, 4), (5, U64, 5)):
        f = fmt(end_dma=end)
        assert f.nlevels == levels and f.levels[0].num == top and len(f.levels) == levels
        assert f.windows == [(0, end + 1)]  # geometry: aperture_end = max_tbl_size
    assert fmt(levels=5, end_dma=(1 << 53) - 1).nlevels == 5  # dtsm without RSTO
    assert fmt(levels=3, end_dma=U64).end_dma == (1 << 42) - 1  # the RTX fallback clips
    with pytest.raises(ConfigError):
        fmt(levels=4, end_dma=(1 << 40))  # RTX is always picked when it fits
    with pytest.raises(ConfigError):
        fmt(levels=4, end_dma=U64)
    with pytest.raises(ConfigError):
        fmt(levels=6)
    with pytest.raises(ConfigError):
        fmt(start_dma=1 << 33, end_dma=1 << 32)


def test_iota() -> None:
    f = fmt(levels=3)
    # IOTA = table | ZPCI_IOTA_IOT_ENABLED (0x800) | ZPCI_KEY (0) | ZPCI_IOTA_DT_RT (1 << 2)
    assert f.iota(0x3_5000_0000) == 0x3_5000_0804
    assert f.root_from_register(0x3_5000_0804) == [0x3_5000_0000]
    assert fmt(levels=5).root_from_register(0x1_f001_c80c) == [0x1_f001_c000]  # DT 3: RFTO
    for bad in (0, 0x3_5000_0004, 0x3_5000_0808):  # identity, IOT off, DT 2 on a 3-level domain
        with pytest.raises(ValueError):
            f.root_from_register(bad)


def test_descriptors_by_hand() -> None:
    f = fmt(levels=5)
    rf, rs, rt, stl, pt = f.levels
    # set_rf_rso + validate_rf_entry: origin | ZPCI_TABLE_TYPE_RFX (0xc) | ZPCI_TABLE_LEN_RFX (3)
    assert f.encode_table(0x1234_4000, rf) == 0x1234_400F
    assert f.encode_table(0x1234_4000, rs) == 0x1234_400B  # RSX 0x8
    assert f.encode_table(0x1234_4000, rt) == 0x1234_4007  # RTX 0x4
    assert f.encode_table(0x1234_4800, stl) == 0x1234_4800  # set_st_pto: just the PT origin
    # set_pt_pfaa + validate_pt_entry; ZPCI_TABLE_PROTECTED (0x200) without IOMMU_WRITE
    assert f.encode_leaf(0xAB_CDEF_0000, 4096, pt, IOMMU_READ | IOMMU_WRITE) == 0xAB_CDEF_0000
    assert f.encode_leaf(0xAB_CDEF_0000, 4096, pt, IOMMU_READ) == 0xAB_CDEF_0200
    assert f.leaf_prot(0xAB_CDEF_0200, pt) == IOMMU_READ
    assert f.leaf_prot(0, pt) == IOMMU_READ | IOMMU_WRITE
    # a type must match the level (get_rt_sto & co.); invalid bit 0x20; PTE invalid bit 0x400
    assert f.classify(0x1234_4007, rt) == TABLE and f.classify(0x1234_4007, rs) == INVALID
    assert f.classify(0x1234_4027, rt) == INVALID and f.classify(0x20, stl) == INVALID
    assert f.classify(0, stl) == TABLE and f.classify(0, pt) == LEAF  # zero is valid there
    assert f.classify(0x400, pt) == INVALID
    assert f.next_table(0x1234_4007, rt) == 0x1234_4000 and f.next_table(0x1234_4800, stl) == 0x1234_4800
    assert f.fields(0x1234_400B, rs, TABLE) == {"origin": 0x48D1, "protected": False, "table_offset": 0,
                                                "invalid": False, "table_type": 2, "table_length": 3}
    assert f.fields(0xAB_CDEF_0600, pt, INVALID) == {"pfaa": 0xABC_DEF0, "invalid": True, "protected": True}
    # unmap: invalidate_pt_entry + entry_clr_protected, the frame address stays
    assert f.invalidate(0xAB_CDEF_0200, pt) == 0xAB_CDEF_0400
    assert f.table_fill(stl) == 0x20 and f.table_fill(pt) == 0x400  # dma_alloc_cpu_table / _page_table
    assert f.reserved_bits(0x1234_4017, rt, TABLE) == 0x10
    assert f.reserved_bits(0xAB_CDEF_0801, pt, LEAF) == 0x801


def test_legacy_drops_the_offset() -> None:
    f = fmt()
    # s390_iommu_iova_to_phys returns pte & ZPCI_PTE_ADDR_MASK
    assert f.legacy_iova_to_phys(0x1_0000_0123, Translation(0x1_0000_0123, 0x5_0000_0123, 4096)) == 0x5_0000_0000
    assert f.legacy_iova_to_phys(0x1_0000_0123, Translation(0x1_0000_0123)) == 0


def test_four_levels_by_hand() -> None:
    """s390-4lvl (RSX origin): a map above 2^42 written and read back entry by entry."""
    f = fmt(end_dma=(1 << 53) - 1)
    assert f.nlevels == 4 and f.origin_type == "RSX"
    mem = PhysMem()
    b = Builder(f, Arena(mem, 0x4000_0000))
    iova, phys = 0x0012_3456_789A_B000, 0x7_6543_2000
    b.map(iova, phys, 0x2000, IOMMU_READ)
    root = b.roots[0]
    assert root == 0x4000_0000 and f.iota(root) == 0x4000_0808  # DT = ZPCI_IOTA_RSTO
    rsx, rtx, sx, px = iova >> 42 & 0x7FF, iova >> 31 & 0x7FF, iova >> 20 & 0x7FF, iova >> 12 & 0xFF
    assert (rsx, rtx, sx, px) == (0x48D, 0xAC, 0x789, 0xAB)

    def be(addr: int) -> int:
        return int.from_bytes(mem.read(addr, 8), "big")

    assert be(root) == 0x20  # untouched entries hold ZPCI_TABLE_INVALID
    rse = be(root + rsx * 8)
    assert rse & 0x3FFF == 0xB  # RSE: type RSX | length 3
    rte = be((rse & ~0x3FFF) + rtx * 8)
    assert rte & 0x3FFF == 0x7
    ste = be((rte & ~0x3FFF) + sx * 8)
    assert ste & 0x7FF == 0
    pte_addr = ste + px * 8
    assert be(pte_addr) == phys | 0x200 and be(pte_addr + 8) == phys + 0x1000 | 0x200
    assert be(pte_addr + 16) == 0x400  # fresh page-table entries hold ZPCI_PTE_INVALID
    assert mem.read(pte_addr, 8) == (phys | 0x200).to_bytes(8, "big")  # stored big-endian
    w = Walker(f, mem, f.root_from_register(f.iota(root)))
    t = w.translate(iova + 0x1ABC)
    assert (t.phys, t.size, t.level, t.prot, t.entries_read) == (phys + 0x1ABC, 4096, 1, IOMMU_READ, 4)
    assert f.legacy_iova_to_phys(iova + 0x1ABC, t) == phys + 0x1000
    assert [(i, p) for i, p, *_ in w.iter_leaves(0, 1 << 53)] == [(iova, phys), (iova + 0x1000, phys + 0x1000)]
    assert w.unmap_leaf(iova, 4096) == 4096
    assert be(pte_addr) == phys | 0x400  # the stale frame stays, protect cleared
    assert not w.translate(iova).mapped and w.translate(iova + 0x1000).mapped


@pytest.mark.parametrize("name", ["s390-3lvl-1", "s390-3lvl-3", "s390-5lvl-1", "s390-5lvl-3"])
def test_conformance_case(name: str) -> None:
    case = h.read_case(name)
    dom = load_domain_text(
        f"format: s390\nconfig: {json.dumps(case['config']['user'])}\nttbr: {case['roots']['iota']:#x}\n"
        f"memory:\n  - file: image.bin\n    base: {case['image_base']:#x}\n", h.CONF / name)
    assert dom.roots == [case["roots"]["root_table_phys"]]
    # kernel_iova_to_phys is null where the 5-level kernel dereferenced NULL: reported as 0
    h.check_domain_probes(dom, case, lambda kernel: kernel or 0)
    assert case["kernel_faults"] == 0 or name.startswith("s390-5lvl")


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([(1 << 42) - 1, (1 << 53) - 1, U64]),
       st.lists(st.tuples(st.integers(0, (1 << 40) - 1), st.integers(1, 1 << 38), st.integers(1, 6),
                          st.booleans()), max_size=5))
def test_round_trip(end: int, items: list[tuple[int, int, int, bool]]) -> None:
    f = fmt(end_dma=end)
    mem = PhysMem()
    b = Builder(f, Arena(mem, 0x4000_0000))
    used: set[int] = set()
    want = set()
    for slot, ppn, n, rw in items:
        base = (slot * 4096 * 977) % (end + 1 - 0x10000) & ~0xFFF  # spread over the whole space
        pages = {base + k * 4096 for k in range(n)}
        if pages & used:
            continue
        used |= pages
        b.map(base, ppn * 4096, n * 4096, IOMMU_READ | (IOMMU_WRITE if rw else 0))
        want |= {(base + k * 4096, ppn * 4096 + k * 4096, 4096) for k in range(n)}
    w = Walker(f, mem, b.roots)
    assert {(i, p, s) for i, p, s, *_ in w.iter_leaves(0, end + 1)} == want
    for i, p, _ in want:
        assert w.translate(i + 7).phys == p + 7
