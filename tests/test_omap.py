"""TI OMAP IOMMU (drivers/iommu/omap-iommu.c, omap-iopgtable.h): descriptors worked by hand from
the IOPGD_*/IOPTE_* macros, the 16-fold supersections and large pages, the kernel's images
(fixtures/conformance/omap-omap4-*) and builder round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formats.base import INVALID, IOMMU_READ, LEAF, TABLE, ConfigError, Step
from formats.builder import Arena, Builder
from formats.omap import Omap
from formats.walker import Walker
from iommuctl.memory import PhysMem
from tests import format_harness as h
from tests.format_harness import RW, K, M


def omap() -> Omap:
    return Omap({"pa_bits": 32})


def test_config() -> None:
    f = omap()
    assert f.page_sizes == [4 * K, 64 * K, M, 16 * M]  # OMAP_IOMMU_PGSIZES
    assert [(lv.shift, lv.bits) for lv in f.levels] == [(20, 12), (12, 8)]  # PTRS_PER_IOPGD / _IOPTE
    assert f.leaf_placement(16 * M) == (0, 16) and f.leaf_placement(64 * K) == (1, 16)
    with pytest.raises(ConfigError):
        Omap({"pa_bits": 36})


def test_descriptors_by_hand() -> None:
    f = omap()
    l1, l2 = f.levels
    # iopgd_alloc_super: (pa & IOSUPER_MASK) | prot (0) | IOPGD_SUPER (BIT(18) | 2)
    sup = f.encode_leaf(0x8000_0000, 16 * M, l1, IOMMU_READ)  # prot is ignored
    assert sup == 0x8004_0002
    assert f.classify(sup, l1) == LEAF and f.kind_name(sup, l1, LEAF) == "supersection"
    assert (f.leaf_size(sup, l1), f.leaf_phys(sup, l1), f.leaf_prot(sup, l1)) == (16 * M, 0x8000_0000, RW)
    # iopgd_alloc_section: (pa & IOSECTION_MASK) | IOPGD_SECTION (2)
    sect = f.encode_leaf(0x9AB0_0000, M, l1, RW)
    assert sect == 0x9AB0_0002 and f.kind_name(sect, l1, LEAF) == "section"
    assert f.fields(sect, l1, LEAF) == {"pa_31_20": 0x9AB, "super": False, "mixed": False, "endian": False,
                                        "elsz": 0, "type": 2}
    # iopte_alloc: *iopgd = virt_to_phys(iopte) | IOPGD_TABLE; iopgd_page_paddr masks ~0x3ff
    tbl = f.encode_table(0x9C00_4400, l1)
    assert tbl == 0x9C00_4401 and f.classify(tbl, l1) == TABLE and f.next_table(tbl, l1) == 0x9C00_4400
    # iopte_alloc_large: (pa & IOLARGE_MASK) | IOPTE_LARGE (1); iopte_alloc_page: | IOPTE_SMALL (2)
    large = f.encode_leaf(0x1234_0000, 64 * K, l2, RW)
    small = f.encode_leaf(0x1234_5000, 4 * K, l2, RW)
    assert (large, small) == (0x1234_0001, 0x1234_5002)
    assert (f.leaf_size(large, l2), f.leaf_size(small, l2)) == (64 * K, 4 * K)
    assert f.kind_name(large, l2, LEAF) == "large-page" and f.kind_name(small, l2, LEAF) == "small-page"
    # iopte_is_small tests bit 1 only
    assert f.classify(0x1234_5003, l2) == LEAF and f.leaf_size(0x1234_5003, l2) == 4 * K
    assert f.reserved_bits(0x1234_5003, l2, LEAF) == 1
    # get_iopte_attr bits for 1M/16M sit 6 higher: endianness at bit 15 is defined, bit 16 is not
    assert f.reserved_bits(sect | 1 << 15, l1, LEAF) == 0
    assert f.reserved_bits(sect | 1 << 16, l1, LEAF) == 1 << 16
    # neither table, section nor super: "bogus pgd"
    assert f.classify(0x1230_0003, l1) == INVALID and f.kind_name(0x1230_0003, l1, INVALID) == "bogus"
    assert f.classify(0x1230_0004, l2) == INVALID
    # MMU_TTB: the iopgd PA, 16K aligned (omap2_iommu_enable)
    assert f.root_from_register(0x9C00_0000) == [0x9C00_0000]
    with pytest.raises(ValueError):
        f.root_from_register(0x9C00_1000)


def load_case(name: str) -> tuple[dict, Omap, Walker]:
    return h.load_case(name, Omap, "mmu_ttb")


@pytest.mark.parametrize("name", ["omap-omap4-1", "omap-omap4-3"])
def test_kernel_image(name: str) -> None:
    h.check_kernel_image(*load_case(name))


def test_supersection_in_the_kernel_image_by_hand() -> None:
    """omap-omap4-3 mapping 1: iova 0x7cd00000 -> 0x6fd00000; from 0x7d000000 a 16M supersection."""
    _, fmt, w = load_case("omap-omap4-3")
    steps: list[Step] = []
    t = w.translate(0x7D12_3456, steps)
    assert (t.phys, t.size, t.level) == (0x7012_3456, 16 * M, 1)
    assert t.raw == 0x7004_0002  # (0x70000000 & IOSUPER_MASK) | IOPGD_SUPER
    assert steps[0].index == 0x7D1 and steps[0].kind == "supersection"
    # all 16 replicas hold the same value (iopgd_alloc_super)
    l1 = w.mem.array(w.roots[0] + 0x7D0 * 4, 16, fmt.dtype)
    assert (l1 == 0x7004_0002).all()
    t = w.translate(0x7CE0_0001)  # a 1M section before it
    assert (t.phys, t.size) == (0x6FE0_0001, M)


@pytest.mark.parametrize("name", ["omap-omap4-1", "omap-omap4-3"])
def test_builder_writes_what_the_kernel_wrote(name: str) -> None:
    case, _, w = load_case(name)
    h.check_builder_matches_kernel(case, Omap(dict(case["config"]["user"])), w, chunks=True)


def test_unmap_clears_all_replicas() -> None:
    """iopgtable_clear_entry_core rewinds to the first of 16 replicas and clears them all."""
    f = omap()
    b = Builder(f, Arena(PhysMem(), 0x4000_0000))
    b.map(0x1000_0000, 0x8000_0000, 16 * M, RW)
    b.map(0x2000_0000, 0x8100_0000, 64 * K, RW)
    w = Walker(f, b.mem, b.roots)
    assert w.translate(0x10F0_0000).size == 16 * M
    assert w.unmap_leaf(0x10F0_0000, 16 * M) == 16 * M
    l1 = b.mem.array(b.roots[0], 4096, f.dtype)
    assert f.classify(int(l1[0x200]), f.levels[0]) == TABLE
    assert w.unmap_leaf(0x2000_F000, 64 * K) == 64 * K
    assert l1[0x200] == 0  # the iopte table became all zero: freed, its iopgd entry cleared
    assert list(w.iter_leaves(0, 1 << 32)) == []
    assert w.translate(0x2000_0000).entries_read == 1


def test_junk_entries_never_crash() -> None:
    h.check_junk_never_crashes(omap(), np.random.default_rng(3), 4096)


@st.composite
def mappings(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    out = []
    slots = draw(st.lists(st.integers(0, 63), min_size=1, max_size=4, unique=True))
    for slot in slots:  # one 64 MiB IOVA slot each
        align = draw(st.sampled_from([4 * K, 64 * K, M, 16 * M]))
        off = draw(st.integers(0, (16 * M) // align - 1)) * align if align < 16 * M else 16 * M
        unit = draw(st.sampled_from([4 * K, 64 * K, M]))
        size = draw(st.integers(1, 40)) * unit
        phys = draw(st.integers(0, ((1 << 32) - 64 * M) // align)) * align
        out.append((slot * 64 * M + off, phys, size))
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(maps=mappings())
def test_round_trip(maps: list[tuple[int, int, int]]) -> None:
    f = omap()
    want = [w for iova, phys, size in maps for w in h.greedy(f.page_sizes, iova, phys, size)]
    h.check_round_trip(f, [(iova, phys, size, IOMMU_READ) for iova, phys, size in maps], want, with_prot=False)


def test_example_domain_unmaps_to_empty() -> None:
    h.check_example_domain_unmaps_to_empty("omap")


@pytest.mark.parametrize("config", [{"pa_bits": 32}])
def test_vectorised_hooks_agree_with_scalar(config: dict) -> None:
    h.check_vec_hooks_agree(Omap(config))
