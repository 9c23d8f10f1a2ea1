"""Rockchip IOMMU (drivers/iommu/rockchip-iommu.c): v1 and v2 descriptors worked by hand from
rk_mk_dte/rk_mk_pte/rk_mk_dte_v2/rk_mk_pte_v2, the stale-PTE unmap quirk, the kernel's images
(fixtures/conformance/rockchip-v1-*, rockchip-v2-*) and builder round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formats.base import INVALID, IOMMU_READ, IOMMU_WRITE, LEAF, TABLE, ConfigError, Step
from formats.builder import Arena, Builder
from formats.rockchip import Rockchip
from formats.walker import Walker
from iommuctl.memory import PhysMem
from tests import format_harness as h
from tests.format_harness import RW, K, M


def rk(version: int) -> Rockchip:
    return Rockchip({"version": version, "pa_bits": None})


def test_config() -> None:
    assert (rk(1).oas, rk(2).oas) == (32, 40)  # dma_bit_mask of iommu_data_ops_v1 / _v2
    assert rk(1).pgsize_bitmap == 0x007F_F000  # RK_IOMMU_PGSIZE_BITMAP
    assert [(lv.shift, lv.bits) for lv in rk(1).levels] == [(22, 10), (12, 10)]  # NUM_DT/PT_ENTRIES
    assert Rockchip({"version": "2", "pa_bits": 36}).oas == 36
    with pytest.raises(ConfigError) as e:
        Rockchip({"version": 3, "pa_bits": None})
    assert e.value.key == "version"
    with pytest.raises(ConfigError):
        Rockchip({"version": 1, "pa_bits": 40})


def test_v1_descriptors_by_hand() -> None:
    f = rk(1)
    dt, pt = f.levels
    # rk_mk_dte(pt_dma) = (pt_dma & RK_DTE_PT_ADDRESS_MASK) | RK_DTE_PT_VALID
    assert f.encode_table(0x6A00_0000, dt) == 0x6A00_0001
    assert f.classify(0x6A00_0001, dt) == TABLE and f.next_table(0x6A00_0001, dt) == 0x6A00_0000
    # rk_mk_pte(page, RW) = page | RK_PTE_PAGE_WRITABLE (bit 2) | RK_PTE_PAGE_READABLE (bit 1) | VALID
    pte = f.encode_leaf(0x1234_5000, 4 * K, pt, RW | 4)  # IOMMU_CACHE: "TODO: set cache flags"
    assert pte == 0x1234_5007
    assert (f.leaf_phys(pte, pt), f.leaf_size(pte, pt), f.leaf_prot(pte, pt)) == (0x1234_5000, 4 * K, RW)
    assert f.encode_leaf(0x1234_5000, 4 * K, pt, IOMMU_WRITE) == 0x1234_5005
    assert f.fields(pte, pt, LEAF)["page_address"] == 0x12345
    assert f.fields(pte, pt, LEAF)["writable"] is True and f.fields(pte, pt, LEAF)["read_cache"] is False
    # rk_mk_pte_invalid clears bit 0 only: a stale PTE, not a mapping
    stale = f.invalidate(pte, pt)
    assert stale == 0x1234_5006 and f.classify(stale, pt) == INVALID
    assert f.kind_name(stale, pt, INVALID) == "stale" and f.kind_name(0, pt, INVALID) == "invalid"
    # DTE_ADDR holds the DTE encoding, valid bit included (README: 0x6a000001 for v1)
    assert f.root_from_register(0x6A00_0001) == [0x6A00_0000]
    assert f.reserved_bits(0x6A00_0003, dt, TABLE) == 2  # DTE [11:1] reserved
    assert f.reserved_bits(pte | 0x200, pt, LEAF) == 0x200  # PTE [11:9] reserved


def test_v2_descriptors_by_hand() -> None:
    f = rk(2)
    dt, pt = f.levels
    # rk_mk_dte_v2(0x85_4000_0000): PA[31:12] 0x40000, PA[35:32] = 5 -> [11:8], PA[39:36] = 8 -> [7:4]
    assert f.encode_table(0x85_4000_0000, dt) == 0x4000_0581
    assert f.root_from_register(0x4000_0581) == [0x85_4000_0000]  # the README's DT at 0x8540000000
    # rk_mk_pte_v2(0xAB_CDEF_1000, IOMMU_READ): 0xCDEF1000 | 0xB << 8 | 0xA << 4 | READABLE | VALID
    pte = f.encode_leaf(0xAB_CDEF_1000, 4 * K, pt, IOMMU_READ)
    assert pte == 0xCDEF_1BA3
    assert f.leaf_phys(pte, pt) == 0xAB_CDEF_1000 and f.leaf_prot(pte, pt) == IOMMU_READ
    assert f.fields(pte, pt, LEAF) == {"page_address_31_12": 0xCDEF1, "page_address_35_32": 0xB,
                                       "page_address_39_36": 0xA, "security": False, "writable": False,
                                       "readable": True, "valid": True}
    assert f.classify(f.invalidate(pte, pt), pt) == INVALID
    assert f.reserved_bits(0x4000_0589, dt, TABLE) == 8  # DTE [3:1] reserved


def make(user: dict) -> Rockchip:
    return Rockchip({"pa_bits": None, **user})


def load_case(name: str) -> tuple[dict, Rockchip, Walker]:
    return h.load_case(name, make, "dte_addr")


def leaves_4k(case: dict) -> set[tuple[int, int, int]]:
    return {(c["iova"] + i * 4 * K, c["phys"] + i * 4 * K, 4 * K) for m in case["mappings"] if not m["unmapped"]
            for c in m["chunks"] for i in range(c["count"] * c["pgsize"] // (4 * K))}


CASES = ["rockchip-v1-1", "rockchip-v1-3", "rockchip-v2-1", "rockchip-v2-3"]


@pytest.mark.parametrize("name", CASES)
def test_kernel_image(name: str) -> None:
    h.check_kernel_image(*load_case(name), roots=True, leaves=leaves_4k)


def test_stale_ptes_in_the_kernel_image_are_not_mappings() -> None:
    """rockchip-v1-1 unmapped mapping 4 (iova 0x78fa6000, 16K): its PTEs keep address and flags."""
    case, fmt, w = load_case("rockchip-v1-1")
    m = case["mappings"][4]
    assert m["unmapped"] and m["iova"] == 0x78FA_6000
    steps: list[Step] = []
    t = w.translate(m["iova"], steps)
    assert not t.mapped and steps[-1].kind == "stale"
    assert fmt.pt_address(steps[-1].raw) == m["phys"]  # the address is still there
    assert fmt.legacy_iova_to_phys(m["iova"], t) == 0


@pytest.mark.parametrize("name", CASES)
def test_builder_writes_what_the_kernel_wrote(name: str) -> None:
    """Core pages of 4K..4M (iommu_pgsize on RK_IOMMU_PGSIZE_BITMAP) as runs of 4K PTEs."""
    case, _, w = load_case(name)
    h.check_builder_matches_kernel(case, make(case["config"]["user"]), w, chunks=True)


def test_map_over_a_stale_pte_and_unmap() -> None:
    f = rk(2)
    b = Builder(f, Arena(PhysMem(), 0x4000_0000))
    assert b.map(0x0040_0000, 0xF0_0000_0000, 4 * M, RW) == [(0x0040_0000, 0xF0_0000_0000, 4 * M, 1)]
    w = Walker(f, b.mem, b.roots)
    pt = f.next_table(b.mem.read_uint(b.roots[0] + 4, 4), f.levels[0])
    ptes = b.mem.array(pt, 1024, f.dtype)
    # rk_iommu_map_iova: paddr += SPAGE_SIZE per PTE
    assert int(ptes[1]) == f.encode_leaf(0xF0_0000_1000, 4 * K, f.levels[1], RW)
    assert w.unmap_leaf(0x0040_1000, 4 * K) == 4 * K
    assert int(ptes[1]) == f.encode_leaf(0xF0_0000_1000, 4 * K, f.levels[1], RW) & ~1
    assert not w.translate(0x0040_1000).mapped
    b.map(0x0040_1000, 0x1000_0000, 4 * K, IOMMU_READ)  # a stale PTE is free to reuse
    assert w.translate(0x0040_1234).phys == 0x1000_0234
    with pytest.raises(ValueError):
        b.map(0x0040_2000, 0x1000_0000, 4 * K, RW)  # valid PTE: -EADDRINUSE


def test_junk_entries_never_crash() -> None:
    rng = np.random.default_rng(2)
    for version in (1, 2):
        h.check_junk_never_crashes(rk(version), rng, 1024)


@st.composite
def mappings(draw: st.DrawFn, pa_bits: int) -> list[tuple[int, int, int, int]]:
    out = []
    slots = draw(st.lists(st.integers(0, 1023), min_size=1, max_size=4, unique=True))
    for slot in slots:  # one 4 MiB IOVA slot each
        align = draw(st.sampled_from([4 * K, 64 * K, M]))
        off = draw(st.integers(0, (2 * M) // align - 1)) * align
        size = draw(st.integers(1, 512)) * 4 * K
        phys = draw(st.integers(0, ((1 << pa_bits) - 4 * M) // align)) * align
        prot = draw(st.sampled_from([IOMMU_READ, IOMMU_WRITE, RW, 0]))
        out.append((slot * 4 * M + off, phys, size, prot))
    return out


@pytest.mark.parametrize("version", [1, 2])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(version: int, data: st.DataObject) -> None:
    f = rk(version)
    maps = data.draw(mappings(f.oas))
    h.check_round_trip(f, maps, h.pages_4k(maps))


def test_example_domain_unmaps_to_empty() -> None:
    h.check_example_domain_unmaps_to_empty("rockchip")


@pytest.mark.parametrize("config", [{"version": 1, "pa_bits": None}, {"version": 2, "pa_bits": None}])
def test_vectorised_hooks_agree_with_scalar(config: dict) -> None:
    h.check_vec_hooks_agree(Rockchip(config))
