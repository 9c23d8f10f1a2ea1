"""Exynos SYSMMU (drivers/iommu/exynos-iommu.c): descriptors worked by hand from the driver's
macros for v3.3 (PG_ENT_SHIFT 0) and v5.0 (PG_ENT_SHIFT 4), the ZERO_LV2LINK quirk, the kernel's
own images (fixtures/conformance/exynos-v5-*), and round trips through the builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formats.base import INVALID, IOMMU_READ, IOMMU_WRITE, LEAF, TABLE, ConfigError, Step, Translation, WalkError
from formats.builder import Arena, Builder
from formats.exynos import Exynos, parse_version
from formats.walker import Walker
from iommuctl.memory import PhysMem
from tests import format_harness as h
from tests.format_harness import PHYS_ADDR_MAX, RW, K, M


def v3() -> Exynos:
    return Exynos({"version": "3.3", "pa_bits": None})


def v5() -> Exynos:
    return Exynos({"version": "5.0", "pa_bits": None})


# -- configuration -------------------------------------------------------------------------------

def test_version_parsing_follows_mmu_version_register() -> None:
    assert parse_version("3.3") == (3, 3)
    assert parse_version("5.0") == (5, 0)
    assert parse_version("7") == (7, 0)
    # MMU_RAW_VER(reg) = reg[31:21]; MAKE_MMU_VER(5, 0) = 5 << 7 = 0x280 -> reg 0x280 << 21
    assert parse_version(str(0x280 << 21)) == (5, 0)
    assert parse_version(str(((3 << 7) | 3) << 21)) == (3, 3)
    # __sysmmu_get_version: "controllers on some SoCs don't report proper version"
    assert parse_version(str(0x8000_0001)) == (1, 0)
    with pytest.raises(ConfigError) as e:
        parse_version("banana")
    assert e.value.key == "version"


def test_geometry_per_version() -> None:
    a, b = v3(), v5()
    assert (a.shift, a.oas, b.shift, b.oas) == (0, 32, 4, 36)  # SYSMMU_PG_ENT_SHIFT / SYSMMU_V5_PG_ENT_SHIFT
    assert a.page_sizes == [4 * K, 64 * K, M]  # SECT_SIZE | LPAGE_SIZE | SPAGE_SIZE
    assert [(lv.shift, lv.bits) for lv in b.levels] == [(20, 12), (12, 8)]  # NUM_LV1ENTRIES, NUM_LV2ENTRIES
    assert b.windows == [(0, 1 << 32)]  # sysmmu_iova_t is u32
    assert Exynos({"version": "5.0", "pa_bits": 32}).oas == 32
    with pytest.raises(ConfigError):
        Exynos({"version": "3.3", "pa_bits": 36})  # v3 entries hold 32 PA bits


# -- hand-worked descriptors -----------------------------------------------------------------------

def test_v5_descriptors_by_hand() -> None:
    f = v5()
    l1, l2 = f.levels
    # mk_lv1ent_sect(pa, prot) = (pa >> 4) | SYSMMU_V5_LV1_PROT[3] (3 << 4) | 2
    sect = f.encode_leaf(0x9_8760_0000, M, l1, RW)
    assert sect == 0x9876_0000 | 0x30 | 2 == 0x98760032
    assert f.classify(sect, l1) == LEAF and f.kind_name(sect, l1, LEAF) == "section"
    assert f.leaf_phys(sect, l1) == 0x9_8760_0000  # section_phys: (E << 4) & SECT_MASK
    assert f.leaf_prot(sect, l1) == RW
    assert f.fields(sect, l1, LEAF) == {"pa_35_20": 0x9876, "prot": 3, "type": 2}
    # mk_lv2ent_lpage(pa, IOMMU_READ) = (pa >> 4) | SYSMMU_V5_LV2_PROT[1] (1 << 2) | 1
    large = f.encode_leaf(0x8_1234_0000, 64 * K, l2, IOMMU_READ)
    assert large == 0x8123_4000 | 0x4 | 1 == 0x81234005
    assert (f.leaf_size(large, l2), f.leaf_phys(large, l2), f.leaf_prot(large, l2)) == (
        64 * K, 0x8_1234_0000, IOMMU_READ)
    # mk_lv2ent_spage(pa, IOMMU_WRITE) = (pa >> 4) | SYSMMU_V5_LV2_PROT[2] (2 << 2) | 2
    small = f.encode_leaf(0xF_FFFF_F000, 4 * K, l2, IOMMU_WRITE)
    assert small == 0xFFFF_FF00 | 0x8 | 2 == 0xFFFFFF0A
    assert (f.leaf_size(small, l2), f.leaf_phys(small, l2), f.leaf_prot(small, l2)) == (
        4 * K, 0xF_FFFF_F000, IOMMU_WRITE)
    assert f.kind_name(small, l2, LEAF) == "small-page" and f.kind_name(large, l2, LEAF) == "large-page"
    # mk_lv1ent_page(pa) = (pa >> 4) | 1; lv2table_base = (E & 0xFFFFFFC0) << 4
    link = f.encode_table(0xA_4000_0400, l1)
    assert link == 0xA400_0041
    assert f.classify(link, l1) == TABLE and f.next_table(link, l1) == 0xA_4000_0400
    # pt_base holds the lv1 PA >> SPAGE_ORDER from v5 on (__sysmmu_set_ptbase)
    assert f.root_from_register(0xA40004) == [0xA_4000_4000]


def test_v3_descriptors_by_hand() -> None:
    f = v3()
    l1, l2 = f.levels
    # SYSMMU_LV1_PROT[IOMMU_READ] = (1 << 15) | (1 << 10)
    sect_r = f.encode_leaf(0x4560_0000, M, l1, IOMMU_READ)
    assert sect_r == 0x4560_0000 | 0x8400 | 2 == 0x45608402
    assert f.leaf_prot(sect_r, l1) == IOMMU_READ
    assert f.fields(sect_r, l1, LEAF) == {"pa_31_20": 0x456, "read_only": True, "access": True, "type": 2}
    # IOMMU_WRITE alone is "not supported, use read/write": bit 10 only
    sect_w = f.encode_leaf(0x4560_0000, M, l1, IOMMU_WRITE)
    assert sect_w == 0x45600402 and f.leaf_prot(sect_w, l1) == RW
    assert f.encode_leaf(0x4560_0000, M, l1, 0) == 0x45600002  # LV1_PROT[0]: no access
    assert f.leaf_prot(0x45600002, l1) == 0
    # SYSMMU_LV2_PROT[RW] = 1 << 4; large type 01
    large = f.encode_leaf(0x1234_0000, 64 * K, l2, RW)
    assert large == 0x12340011 and f.leaf_phys(large, l2) == 0x1234_0000
    # SYSMMU_LV2_PROT[IOMMU_READ] = (1 << 9) | (1 << 4); small type 10
    small = f.encode_leaf(0xFFFF_F000, 4 * K, l2, IOMMU_READ | 4)  # IOMMU_CACHE dropped
    assert small == 0xFFFFF212 and f.leaf_prot(small, l2) == IOMMU_READ
    # lv2ent_small tests bit 1 only: 11 is a small page too
    assert f.classify(0xFFFFF213, l2) == LEAF and f.leaf_size(0xFFFFF213, l2) == 4 * K
    assert f.reserved_bits(0xFFFFF213, l2, LEAF) == 1
    assert f.encode_table(0x2000_0400, l1) == 0x20000401
    assert f.next_table(0x20000401, l1) == 0x2000_0400
    assert f.root_from_register(0x2000_4000) == [0x2000_4000]  # v1-v3 pt_base: the PA itself
    # lv1ent_fault: type 00 or 11
    assert f.classify(0x45600003, l1) == INVALID and f.classify(0, l1) == INVALID
    # reserved: bits the driver's mk_lv1ent_sect never sets
    assert f.reserved_bits(0x45600002 | (1 << 12), l1, LEAF) == 1 << 12


def test_v3_walk_of_a_hand_made_image() -> None:
    """lv1 at 0x1000_0000 with ZERO_LV2LINK everywhere (zero table at 0x1000_8000), a section for
    iova 0x0030_0000, a link for iova 0x0050_0000 to an lv2 with a large and a small page."""
    f = v3()
    l1_pa, zero_pa, l2_pa = 0x1000_0000, 0x1000_8000, 0x1000_8400
    zl = zero_pa | 1  # mk_lv1ent_page(zero_lv2_table)
    l1 = np.full(4096, zl, dtype="<u4")
    l1[3] = 0x4560_8402  # section, read-only
    l1[5] = l2_pa | 1
    l2 = np.zeros(256, dtype="<u4")
    l2[0x10:0x20] = 0x7770_0011  # 64K large page, 16 identical entries at lv2ent_offset 0x10
    l2[0x21] = 0x8889_9012  # small page, read/write
    mem = PhysMem()
    mem.add_bytes(l1_pa, l1.tobytes())
    mem.add_bytes(zero_pa, bytes(1024))
    mem.add_bytes(l2_pa, l2.tobytes())
    w = Walker(f, mem, f.root_from_register(l1_pa))
    assert f.zero_link == zl  # bind: the link several slots share, to an all-zero table
    t = w.translate(0x0031_2345)
    assert (t.phys, t.size, t.prot, t.level) == (0x4561_2345, M, IOMMU_READ, 1)
    t = w.translate(0x0051_ABCD)
    assert (t.phys, t.size, t.prot) == (0x7770_ABCD, 64 * K, RW)
    t = w.translate(0x0052_1FFF)
    assert (t.phys, t.size) == (0x8889_9FFF, 4 * K)
    assert not w.translate(0x0052_2000).mapped
    steps: list[Step] = []
    t = w.translate(0x0090_0000, steps)  # an unmapped slot holding ZERO_LV2LINK
    assert not t.mapped and [s.kind for s in steps] == ["zero-link"]
    assert f.legacy_iova_to_phys(0x0090_0000, t) == 0
    leaves = list(w.iter_leaves(0, 1 << 32))
    assert [(i, p, s) for i, p, s, *_ in leaves] == [
        (0x0030_0000, 0x4560_0000, M), (0x0051_0000, 0x7770_0000, 64 * K), (0x0052_1000, 0x8889_9000, 4 * K)]


def test_unmapped_slots_without_zero_link_detection_are_a_shared_table() -> None:
    """Without the ZERO_LV2LINK rule, 4095 slots linking one table would be "a table reached
    twice"; with a non-zero shared table, that is what the image is."""
    f = v3()
    l1 = np.full(4096, 0x1000_8001, dtype="<u4")
    l2 = np.zeros(256, dtype="<u4")
    l2[0] = 0x1234_5012
    mem = PhysMem()
    mem.add_bytes(0x1000_0000, l1.tobytes())
    mem.add_bytes(0x1000_8000, l2.tobytes())
    w = Walker(f, mem, [0x1000_0000])
    assert f.zero_link is None
    with pytest.raises(WalkError):
        list(w.leaves(0, 1 << 32))


# -- the kernel's images ---------------------------------------------------------------------------

def make(user: dict) -> Exynos:
    return Exynos({"pa_bits": None, **user})


def load_case(name: str) -> tuple[dict, Exynos, Walker]:
    return h.load_case(name, make, "pt_base")


@pytest.mark.parametrize("name", ["exynos-v5-1", "exynos-v5-3"])
def test_kernel_image(name: str) -> None:
    case, fmt, w = load_case(name)
    assert fmt.zero_link == case["config"]["kernel"]["ZERO_LV2LINK"]
    h.check_kernel_image(case, fmt, w, roots=True)


def test_exynos_v5_1_probe_by_hand() -> None:
    """Mapping 1 of exynos-v5-1 (iova 0xf4700000, 20 small pages of phys 0xc91bd8000, prot RW|CACHE)."""
    case, fmt, w = load_case("exynos-v5-1")
    t = w.translate(0xF470_0123)
    assert (t.phys, t.size, t.prot) == (0xC_91BD_8123, 4 * K, RW)
    # mk_lv2ent_spage(0xc91bd8000, RW) = 0xc91bd800 | (3 << 2) | 2
    assert t.raw == 0xC91BD80E


@pytest.mark.parametrize("name", ["exynos-v5-1", "exynos-v5-3"])
def test_builder_writes_what_the_kernel_wrote(name: str) -> None:
    """The kernel's mappings, rebuilt: the same chunks (iommu_pgsize) and leaf descriptors."""
    case, _, w = load_case(name)
    h.check_builder_matches_kernel(case, make(case["config"]["user"]), w, chunks=True)


def test_unmap_writes_zero_link_back() -> None:
    """exynos_iommu_unmap: a section becomes ZERO_LV2LINK; a large page zeroes its 16 entries."""
    f = v5()
    b = Builder(f, Arena(PhysMem(), 0x4000_0000))
    zl = f.zero_link
    assert zl is not None and f.classify(zl, f.levels[0]) == INVALID
    l1 = b.mem.array(b.roots[0], 4096, f.dtype)
    assert (l1 == zl).all()  # every slot starts as ZERO_LV2LINK
    b.map(0x0010_0000, 0x2_0000_0000, M, RW)
    b.map(0x0020_0000, 0x2_0010_0000, 64 * K, RW)
    assert l1[1] != zl and l1[2] != zl
    w = Walker(f, b.mem, b.roots)
    assert w.unmap_leaf(0x0010_0000, M) == M
    assert l1[1] == zl
    assert w.unmap_leaf(0x0020_0000, 64 * K) == 64 * K
    assert list(w.iter_leaves(0, 1 << 32)) == []


def test_section_on_an_existing_lv2_table_is_refused() -> None:
    f = v5()
    b = Builder(f, Arena(PhysMem(), 0x4000_0000))
    b.map(0x0010_0000, 0x2_0000_0000, 4 * K, RW)
    with pytest.raises(ValueError):
        b.map(0x0010_0000, 0x2_0010_0000, M, RW)  # lv1set_section: -EADDRINUSE


def test_junk_entries_never_crash() -> None:
    f = v5()

    def leaf_is_checkable(t: Translation) -> None:
        assert f.reserved_bits(t.raw or 0, f.levels[(t.level or 1) - 1], LEAF) >= 0

    h.check_junk_never_crashes(f, np.random.default_rng(1), 4096, 200, leaf_is_checkable)


# -- round trips -----------------------------------------------------------------------------------

@st.composite
def mappings(draw: st.DrawFn, pa_bits: int) -> list[tuple[int, int, int, int]]:
    out: list[tuple[int, int, int, int]] = []
    slots = draw(st.lists(st.integers(0, 1023), min_size=1, max_size=5, unique=True))
    for slot in slots:  # one 4 MiB slot each: mappings never overlap
        align = draw(st.sampled_from([4 * K, 64 * K, M]))
        off = draw(st.integers(0, (2 * M) // align - 1)) * align
        size = draw(st.integers(1, 2 * M // (4 * K))) * 4 * K
        phys = draw(st.integers(0, ((1 << pa_bits) - 4 * M) // align)) * align
        if draw(st.booleans()):
            phys += off % M - phys % M if phys % M >= off % M else off % M  # congruent: big pages
        prot = draw(st.sampled_from([IOMMU_READ, IOMMU_WRITE, RW]))
        out.append((slot * 4 * M + off, phys, size, prot))
    return out


@pytest.mark.parametrize("version", ["3.3", "5.0"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(version: str, data: st.DataObject) -> None:
    f = Exynos({"version": version, "pa_bits": None})
    maps = data.draw(mappings(f.oas))
    want = []
    for iova, phys, size, prot in maps:
        stored = prot if version == "5.0" else (IOMMU_READ if prot == IOMMU_READ else RW)
        want += [(i, p, s, stored) for i, p, s in h.greedy(f.page_sizes, iova, phys, size)]
    h.check_round_trip(f, maps, want, 0x4000_0000 if version == "3.3" else 0x8_0000_0000, legacy=True)


def test_example_domain_unmaps_to_empty() -> None:
    h.check_example_domain_unmaps_to_empty("exynos")


def test_v3_domain_file_with_pt_base(tmp_path: Path) -> None:
    """What the hidden exynos-v3 cases look like to the loader: config {version: "3.3", pa_bits:
    32} and ttbr: the raw pt_base (v1-v3: the lv1 PA itself), over an image the builder made."""
    from iommuctl.domain import load_domain_text

    f = v3()
    arena = Arena(PhysMem(), 0x6000_0000)
    b = Builder(f, arena)
    b.map(0x1230_0000, 0x8760_0000, 2 * M, IOMMU_READ)  # 2 sections, read-only (bits 15|10)
    b.map(0x2000_0000, 0x9000_0000, 68 * K, IOMMU_WRITE)  # 64K large + 4K small, stored as RW
    (tmp_path / "img.bin").write_bytes(arena.image())
    text = (f'format: exynos\nconfig:\n  version: "3.3"\n  pa_bits: 32\nttbr: {b.roots[0]:#x}\n'
            f"memory:\n  - file: img.bin\n    base: 0x6000_0000\n")
    dom = load_domain_text(text, tmp_path)
    assert dom.roots == b.roots
    assert isinstance(dom.fmt, Exynos) and dom.fmt.zero_link == f.zero_link  # learnt from the image alone
    t = dom.translate(0x1241_2345)
    assert (t.phys, t.size, t.prot, t.raw) == (0x8771_2345, M, IOMMU_READ, 0x8770_8402)
    t = dom.translate(0x2000_FFFF)
    assert (t.phys, t.size, t.prot, t.raw) == (0x9000_FFFF, 64 * K, RW, 0x9000_0011)
    t = dom.translate(0x2001_0FFF)
    assert (t.phys, t.size, t.raw) == (0x9001_0FFF, 4 * K, 0x9001_0012)
    assert dom.iova_to_phys_length(0x2001_1000) == (PHYS_ADDR_MAX, 0)
    assert dom.iova_to_phys(0x2001_1000) == 0 and dom.iova_to_phys(0x2001_0FFF) == 0x9001_0FFF


@pytest.mark.parametrize("config", [{"version": "3.3", "pa_bits": None}, {"version": "5.0", "pa_bits": None}])
def test_vectorised_hooks_agree_with_scalar(config: dict) -> None:
    h.check_vec_hooks_agree(Exynos(config))
