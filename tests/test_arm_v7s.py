"""arm-v7s (io-pgtable-arm-v7s.c): descriptors worked by hand from the kernel macros, the
kernel's arm_v7s_do_selftests, TTBR decoding, replicated leaves, conformance facts, and
hypothesis round trips for every quirk set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formats.arm_v7s import ArmV7s
from formats.base import (
    INVALID,
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    LEAF,
    TABLE,
    ConfigError,
    Step,
)
from formats.builder import Arena, Builder, iommu_pgsize
from formats.walker import Walker
from iommuctl.memory import PhysMem

K, M = 1 << 10, 1 << 20
RW = IOMMU_READ | IOMMU_WRITE
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "conformance"


def v7s(**cfg: Any) -> ArmV7s:
    full: dict[str, Any] = dict(ArmV7s.config_defaults)
    full.update(cfg)
    return ArmV7s(full)


def builder(fmt: ArmV7s, base: int = 0x4000_0000) -> Builder:
    return Builder(fmt, Arena(PhysMem(), base))


L1 = lambda f: f.levels[0]  # noqa: E731
L2 = lambda f: f.levels[1]  # noqa: E731


# -- hand-derived descriptors ------------------------------------------------------------------
def test_section_descriptor_by_hand() -> None:
    f = v7s()
    # arm_v7s_prot_to_pte(R|W|CACHE, 1): attr byte = NG(0x80)|S(0x40)|TEX(1)=0x04|AF(AP0 0x01)|
    # AP_UNPRIV(AP1 0x02) = 0xc7 << ARM_V7S_ATTR_SHIFT(1)=10 -> 0x31c00; B|C = 0xc; TYPE_PAGE = 2
    assert f.encode_leaf(0x1230_0000, M, L1(f), RW | IOMMU_CACHE) == 0x1233_1C0E
    # no IOMMU_WRITE: + AP2; IOMMU_PRIV: no AP1 -> attr 0xe5 << 10 = 0x39400; NOEXEC: XN(1) = BIT(4);
    # no IOMMU_CACHE: neither B nor C
    assert f.encode_leaf(0x1230_0000, M, L1(f), IOMMU_READ | IOMMU_PRIV | IOMMU_NOEXEC) == 0x1233_9412
    # IOMMU_MMIO: TEX 0 and B only -> attr 0xc3
    assert f.encode_leaf(0x1230_0000, M, L1(f), RW | IOMMU_MMIO | IOMMU_CACHE) == 0x1233_0C06
    # ARM_NS: + ARM_V7S_ATTR_NS_SECTION BIT(19); a supersection adds ARM_V7S_CONT_SECTION BIT(18)
    ns = v7s(quirks=["arm-ns"])
    assert ns.encode_leaf(0x1230_0000, M, L1(ns), RW | IOMMU_CACHE) == 0x123B_1C0E
    assert ns.encode_leaf(0x1300_0000, 16 * M, L1(ns), RW | IOMMU_CACHE) == 0x130F_1C0E
    raw = 0x130F_1C0E
    assert f.classify(raw, L1(f)) == LEAF
    assert f.leaf_size(raw, L1(f)) == 16 * M and f.leaf_phys(raw, L1(f)) == 0x1300_0000
    assert f.kind_name(raw, L1(f), LEAF) == "supersection"
    assert f.leaf_prot(0x1233_1C0E, L1(f)) == RW | IOMMU_CACHE
    assert f.leaf_prot(0x1233_9412, L1(f)) == IOMMU_READ | IOMMU_PRIV | IOMMU_NOEXEC
    assert f.leaf_prot(0x1233_0C06, L1(f)) == RW | IOMMU_MMIO


def test_small_and_large_page_by_hand() -> None:
    f = v7s()
    # level 2, R|NOEXEC: attr NG|S|TEX1|AF|AP1|AP2 = 0xe7 << 4 = 0xe70; XN(2) = BIT(0); TYPE_PAGE
    small = f.encode_leaf(0x8765_4000, 4 * K, L2(f), IOMMU_READ | IOMMU_NOEXEC)
    assert small == 0x8765_4E73
    # arm_v7s_pte_to_cont: xn = BIT(0), tex = 0x40 (bits 8:6) -> pte ^= 0x43, then
    # | xn << ARM_V7S_CONT_PAGE_XN_SHIFT (0x8000) | tex << ARM_V7S_CONT_PAGE_TEX_SHIFT (0x1000) | 1
    large = f.encode_leaf(0x8765_0000, 64 * K, L2(f), IOMMU_READ | IOMMU_NOEXEC)
    assert large == 0x8765_9E31
    assert f.leaf_size(large, L2(f)) == 64 * K and f.leaf_phys(large, L2(f)) == 0x8765_0000
    assert f.leaf_prot(large, L2(f)) == IOMMU_READ | IOMMU_NOEXEC
    assert f.leaf_prot(small, L2(f)) == IOMMU_READ | IOMMU_NOEXEC
    assert f.kind_name(large, L2(f), LEAF) == "large-page" and f.kind_name(small, L2(f), LEAF) == "small-page"
    # type 0b11 at level 2 is a small page too (bit 1 set, bit 0 = XN)
    assert f.leaf_size(0x8765_4003, L2(f)) == 4 * K
    # a level-2 0b01 is never a table (ARM_V7S_PTE_IS_TABLE needs lvl 1)
    assert f.classify(0x8765_0001, L2(f)) == LEAF and f.classify(0x8765_0001, L1(f)) == TABLE
    assert f.classify(0xFFFF_FFFC, L1(f)) == INVALID


def test_table_descriptor_by_hand() -> None:
    f = v7s()
    assert f.encode_table(0x4000_0400, L1(f)) == 0x4000_0401  # phys | ARM_V7S_PTE_TYPE_TABLE
    ns = v7s(quirks=["arm-ns"])
    assert ns.encode_table(0x4000_0400, L1(ns)) == 0x4000_0409  # + ARM_V7S_ATTR_NS_TABLE BIT(3)
    assert ns.next_table(0x4000_0409, L1(ns)) == 0x4000_0400
    with pytest.raises(ValueError, match="above 4 GiB"):  # __arm_v7s_alloc_table: does not fit in PTE
        f.encode_table(0x1_0000_0400, L1(f))


MTK = ["arm-ns", "no-perms", "arm-mtk-ext"]


def test_mtk_ext_descriptors_by_hand() -> None:
    f = v7s(quirks=MTK, oas=35)
    # small page at PA 0x7_1234_5000, R|W|CACHE with NO_PERMS: attr NG|S|TEX1 = 0xc4 << 4 = 0xc40,
    # B|C, TYPE_PAGE -> 0xc4e; to_mtk_iopte: PA32 -> BIT(9), PA33 -> BIT(4), PA34 -> BIT(5) = 0x230
    raw = f.encode_leaf(0x7_1234_5000, 4 * K, L2(f), RW | IOMMU_CACHE)
    assert raw == 0x1234_5E7E
    assert f.leaf_phys(raw, L2(f)) == 0x7_1234_5000
    # NO_PERMS stores no AP/XN: the decoded prot is R|W (+ cache)
    assert f.leaf_prot(raw, L2(f)) == RW | IOMMU_CACHE
    # section at PA 0x2_4560_0000 (bit 33 -> BIT(4)), NS section bit: 0xc4 << 10 | 0xe | BIT(19)
    sect = f.encode_leaf(0x2_4560_0000, M, L1(f), RW | IOMMU_CACHE)
    assert sect == 0x4560_0000 | 0xC4 << 10 | 0xE | 1 << 19 | 1 << 4
    assert f.leaf_phys(sect, L1(f)) == 0x2_4560_0000
    # without ARM_MTK_TTBR_EXT table pointers stay below 4 GiB ...
    with pytest.raises(ValueError):
        f.encode_table(0x2_0000_0400, L1(f))
    # ... with it, PA33 of the table goes to BIT(4) as well: 0x400 | TYPE_TABLE | NS_TABLE | BIT(4)
    t = v7s(quirks=MTK + ["arm-mtk-ttbr-ext"], oas=35)
    assert t.encode_table(0x2_0000_0400, L1(t)) == 0x0000_0419
    assert t.next_table(0x0000_0419, L1(t)) == 0x2_0000_0400


def test_mtk_4gb_mode() -> None:
    # mtk_iommu_map ORs PA bit 32 in; mtk_iommu_iova_to_phys clears it for PAs >= 0x1_4000_0000
    f = v7s(quirks=MTK, oas=33, mtk_4gb_mode=True)
    b = builder(f)
    b.map(0x10_0000, 0x4000_0000, 4 * K, RW)
    t = b.walker.translate(0x10_0123)
    assert t.phys == 0x1_4000_0123
    assert f.legacy_iova_to_phys(0x10_0123, t) == 0x4000_0123


def test_config_rejected_as_the_kernel_does() -> None:
    with pytest.raises(ConfigError, match="no-perms"):
        v7s(quirks=["arm-mtk-ext"])  # "If ARM_MTK_4GB is enabled, the NO_PERMS is also expected"
    with pytest.raises(ConfigError, match="arm-mtk-ext"):
        v7s(quirks=["no-perms", "arm-mtk-ttbr-ext"])
    with pytest.raises(ConfigError, match="refuses"):
        v7s(quirks=["arm-ttbr1"])
    with pytest.raises(ConfigError) as e:
        v7s(ias=34)  # > ARM_V7S_ADDR_BITS without MTK
    assert e.value.key == "ias"
    with pytest.raises(ConfigError):
        v7s(oas=35)
    with pytest.raises(ConfigError):
        v7s(quirks=MTK, oas=36)
    with pytest.raises(ConfigError):
        v7s(page_sizes=["4K", "2M"])
    assert v7s(quirks=MTK, ias=34, oas=35).levels[0].entries == 1 << 14  # 2^(ias-20)
    assert v7s(page_sizes=["4K", "1M"]).page_sizes == [4 * K, M]


def test_ttbr_register() -> None:
    f = v7s()
    # coherent: PA | ARM_V7S_TTBR_S | NOS | IRGN(WBWA) (bit 6) | ORGN(WBWA) (bit 3) = PA | 0x6a
    assert f.ttbr_value(0x8000_4000) == 0x8000_406A
    assert f.root_from_register(0x8000_406A) == [0x8000_4000]
    m = v7s(quirks=MTK + ["arm-mtk-ttbr-ext"], oas=35)
    # MTK: paddr | upper_32_bits(paddr): PA[34:32] in bits 2:0
    assert m.ttbr_value(0x6_4000_0000) == 0x4000_0006
    assert m.root_from_register(0x4000_0006) == [0x6_4000_0000]
    with pytest.raises(ValueError):
        f.root_from_register(1 << 32)


def test_ttbr_of_every_conformance_case() -> None:
    n = 0
    for d in sorted(FIXTURES.glob("arm-v7s-*")):
        case = json.loads((d / "case.json").read_text())
        cfg = case["config"]
        quirks = [q.removeprefix("IO_PGTABLE_QUIRK_").lower().replace("_", "-") for q in cfg["quirks_list"]]
        f = v7s(ias=cfg["ias"], oas=cfg["oas"], quirks=quirks)
        assert f.root_from_register(case["roots"]["ttbr"]) == [case["roots"]["root_tables"][0]["phys"]]
        assert f.levels[0].entries == case["kernel_internal"]["l1_entries"]
        assert f.root_alloc()[0][0] == case["roots"]["root_tables"][0]["alloc_size"]
        n += 1
    assert n >= 6


def test_mtk_conformance_case_high_pa_leaf() -> None:
    """arm-v7s-mtk-ext-32-34-1, mapping 1: 16M at iova 0x2a00_0000 -> phys 0x3_5400_0000
    (R|CACHE|PRIV). The kernel wrote 16 copies of: PA[31:24] 0x54, PA33 -> BIT(4), PA32 -> BIT(9),
    NO_PERMS attr NG|S|TEX1 at bit 10, B|C, TYPE_PAGE, NS_SECTION, CONT_SECTION."""
    d = FIXTURES / "arm-v7s-mtk-ext-32-34-1"
    case = json.loads((d / "case.json").read_text())
    m = case["mappings"][1]
    assert (m["iova"], m["phys"], m["size"]) == (0x2A00_0000, 0x3_5400_0000, 16 * M)
    mem = PhysMem()
    mem.add_file(d / "image.bin", case["image_base"])
    f = v7s(quirks=["no-perms", "arm-mtk-ext"], oas=34)
    w = Walker(f, mem, f.root_from_register(case["roots"]["ttbr"]))
    want = 0x5400_0000 | 0xC4 << 10 | 0xE | 1 << 18 | 1 << 9 | 1 << 4
    for i in range(16):
        assert mem.read_uint(case["image_base"] + (0x2A0 + i) * 4, 4) == want
    t = w.translate(0x2A12_3456)
    assert (t.phys, t.size, t.level, t.raw) == (0x3_5412_3456, 16 * M, 1, want)
    assert f.reserved_bits(want, L1(f), LEAF) == 0
    probe = next(p for p in case["probes"] if p["mapping"] == 1 and p["kind"] == "inside")
    assert w.translate(probe["iova"]).phys == probe["kernel_iova_to_phys"]
    leaves = [x for x in w.iter_leaves(0x2A00_0000, 0x2B00_0000)]
    assert [(x[0], x[1], x[2]) for x in leaves] == [(0x2A00_0000, 0x3_5400_0000, 16 * M)]
    assert all(f.replicas_disagree(mem.array(w.tops[0].table, 4096, f.dtype), L1(f)) == [] for _ in [0])


# -- arm_v7s_do_selftests ------------------------------------------------------------------------
def test_arm_v7s_do_selftests() -> None:
    """The kernel's selftest: ias/oas 32, ARM_NS, 4K|64K|1M|16M."""
    f = v7s(quirks=["arm-ns"])
    b = builder(f)
    w = b.walker
    # Empty page tables shouldn't provide any translations.
    for iova in (42, (1 << 30) + 42, (2 << 30) + 42):
        assert f.legacy_iova_to_phys(iova, w.translate(iova)) == 0
    # Distinct mappings of different granule sizes at 0, 16M, 32M, 48M.
    iova = 0
    for size in (4 * K, 64 * K, M, 16 * M):
        f.check_map(iova, iova, size, RW | IOMMU_NOEXEC | IOMMU_CACHE)
        b.map_page(iova, iova, size, RW | IOMMU_NOEXEC | IOMMU_CACHE)
        with pytest.raises(ValueError, match="EEXIST"):  # overlapping mappings
            b.map_page(iova, iova + size, size, IOMMU_READ | IOMMU_NOEXEC)
        t = w.translate(iova + 42)
        assert f.legacy_iova_to_phys(iova + 42, t) == iova + 42 and t.size == size
        iova += 16 * M
    # Full unmap, then remap with IOMMU_WRITE only.
    iova = 0
    for size in (4 * K, 64 * K, M, 16 * M):
        assert w.unmap_leaf(iova, size) == size
        assert not w.translate(iova + 42).mapped
        b.map_page(iova, iova, size, IOMMU_WRITE)
        t = w.translate(iova + 42)
        assert t.phys == iova + 42 and t.size == size
        # AP2 clear (writable), AF always: prot reads back as R|W, TEX 1 without C: no cache
        assert t.prot == RW
        iova += 16 * M


def test_partial_unmap_of_a_large_leaf_is_refused() -> None:
    # __arm_v7s_unmap: "Unmap of a partial large IOPTE is not allowed" -> 0
    b = builder(v7s())
    b.map(0, 0x100_0000, 64 * K, RW)
    assert b.walker.unmap_leaf(0x1000, 4 * K) == 0
    assert b.walker.translate(0x1000).size == 64 * K


# -- the walker over replicated leaves -----------------------------------------------------------
def test_walk_yields_one_leaf_per_large_page_and_supersection() -> None:
    f = v7s()
    b = builder(f)
    b.map(0x100_0000, 0x2345_0000, 64 * K, RW)
    b.map(0x300_0000, 0x5600_0000, 16 * M, RW)
    leaves = [(x[0], x[1], x[2], x[3]) for x in b.walker.iter_leaves(0, 1 << 32)]
    assert leaves == [(0x100_0000, 0x2345_0000, 64 * K, 2), (0x300_0000, 0x5600_0000, 16 * M, 1)]
    # a range starting inside each still yields the whole leaf, once
    assert [x[2] for x in b.walker.iter_leaves(0x100_8000, 0x100_9000)] == [64 * K]
    assert [x[0] for x in b.walker.iter_leaves(0x380_0000, 0x390_0000)] == [0x300_0000]


def test_replicas_that_disagree_are_reported() -> None:
    f = v7s()
    b = builder(f)
    b.map(0x10_0000, 0x2345_0000, 64 * K, RW)
    l2 = f.next_table(b.mem.read_uint(b.roots[0] + 4, 4), L1(f))
    ents = b.mem.array(l2, 256, f.dtype)
    assert f.replicas_disagree(ents, L2(f)) == []
    good = int(ents[0])
    b.mem.write_uint(l2 + 5 * 4, 4, good ^ 1 << 20)  # copy 5 names another PA
    assert f.replicas_disagree(b.mem.array(l2, 256, f.dtype), L2(f)) == [(0, sorted([good, good ^ 1 << 20]))]
    b.mem.write_uint(l2 + 5 * 4, 4, 0)  # a hole inside the group
    assert f.replicas_disagree(b.mem.array(l2, 256, f.dtype), L2(f)) == [(0, [0, good])]


def test_reserved_bits_and_explain() -> None:
    f = v7s(quirks=["arm-ns"])
    b = builder(f)
    b.map(0x20_0000, 0x4510_0000, 4 * K, RW | IOMMU_CACHE)
    steps: list[Step] = []
    t = b.walker.translate(0x20_0010, steps)
    assert t.phys == 0x4510_0010
    assert [s.kind for s in steps] == ["table", "small-page"]
    assert steps[0].fields["ns"] is True and steps[0].fields["type"] == 1
    assert steps[1].fields["pa_31_12"] == 0x45100 and steps[1].fields["tex"] == 1
    assert steps[1].fields["ap1_unpriv"] is True and steps[1].fields["ap2_rdonly"] is False
    assert all(f.reserved_bits(s.raw, f.levels[i], TABLE if i == 0 else LEAF) == 0 for i, s in enumerate(steps))
    assert f.reserved_bits(steps[1].raw | 1 << 7, L2(f), LEAF) == 1 << 7  # TEX[1] never written
    # supersection with the architectural extended-PA bits 23:20 set: the kernel masks them away
    assert f.reserved_bits(0x1304_1C0E | 1 << 18 | 1 << 20, L1(f), LEAF) == 1 << 20
    m = v7s(quirks=MTK, oas=35)
    assert m.fields(0x1234_5E7E, L2(m), LEAF)["pa_34"] is True
    assert "supersection" in f.note(0x130F_1C0E, L1(f), LEAF)


def test_junk_entries_never_raise_unexpectedly() -> None:
    f = v7s(quirks=MTK, oas=35)
    for raw in (0xFFFF_FFFF, 0x1, 0x2, 0x3, 0xDEAD_BEEF, 0x8000_0001):
        for lvl in f.levels:
            k = f.classify(raw, lvl)
            f.fields(raw, lvl, k)
            f.note(raw, lvl, k)
            f.reserved_bits(raw, lvl, k)
            if k == LEAF:
                f.leaf_phys(raw, lvl)
                f.leaf_prot(raw, lvl)


# -- vectorised hooks agree with the scalar ones -------------------------------------------------
@pytest.mark.parametrize("quirks", [[], ["arm-ns"], MTK, MTK + ["arm-mtk-ttbr-ext"], ["no-perms"]])
def test_vec_hooks_match_scalar(quirks: list[str]) -> None:
    import numpy as np

    f = v7s(quirks=quirks, oas=35 if "arm-mtk-ext" in quirks else 32)
    raws = np.random.default_rng(1).integers(0, 1 << 32, 2000, dtype=np.uint64).astype(np.uint32)
    for lvl in f.levels:
        k = f.classify_vec(raws, lvl)
        assert k.tolist() == [f.classify(int(r), lvl) for r in raws]
        lf = raws[k == LEAF]
        assert f.leaf_size_vec(lf, lvl).tolist() == [f.leaf_size(int(r), lvl) for r in lf]
        assert f.leaf_phys_vec(lf, lvl).tolist() == [f.leaf_phys(int(r), lvl) for r in lf]
        assert f.leaf_prot_vec(lf, lvl).tolist() == [f.leaf_prot(int(r), lvl) for r in lf]
        tb = raws[k == TABLE]
        assert f.next_table_vec(tb, lvl).tolist() == [f.next_table(int(r), lvl) for r in tb]
    phys = np.arange(0, 300, dtype=np.uint64) * np.uint64(0x1_0000_3000) & np.uint64((1 << f.oas) - 1 & ~0xFFF)
    for prot in (RW, IOMMU_READ | IOMMU_MMIO, IOMMU_WRITE | IOMMU_CACHE | IOMMU_NOEXEC | IOMMU_PRIV):
        assert f.encode_leaf_vec(phys, 4 * K, L2(f), prot).tolist() == \
            [f.encode_leaf(int(p), 4 * K, L2(f), prot) for p in phys]


# -- hypothesis round trips ----------------------------------------------------------------------
def expected_prot(f: ArmV7s, prot: int) -> int:
    """What arm_v7s_prot_to_pte keeps of prot, as leaf_prot reads it back."""
    out = IOMMU_READ
    if f.ap:
        out |= prot & (IOMMU_WRITE | IOMMU_PRIV | IOMMU_NOEXEC)
    else:
        out |= IOMMU_WRITE
    if prot & IOMMU_MMIO:
        return out | IOMMU_MMIO
    return out | (prot & IOMMU_CACHE)


PROTS = st.sampled_from([RW, IOMMU_READ, IOMMU_WRITE, RW | IOMMU_CACHE, IOMMU_READ | IOMMU_NOEXEC,
                         RW | IOMMU_MMIO, RW | IOMMU_PRIV | IOMMU_CACHE | IOMMU_NOEXEC])
UNITS = st.sampled_from([4 * K, 64 * K, M, 16 * M])


@st.composite
def mappings(draw: Any, ias: int, pa_bits: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping mappings, iova and phys aligned to a random unit (so every page size shows)."""
    out = []
    iova = 0
    for _ in range(draw(st.integers(1, 5))):
        unit = draw(UNITS)
        iova = -(-iova // unit) * unit + draw(st.integers(0, 3)) * unit
        size = draw(st.integers(1, 3)) * unit + draw(st.sampled_from([0, 0, 4 * K, 68 * K]))
        if iova + size > 1 << ias:
            break
        phys_unit = draw(st.sampled_from([unit, max(unit // 16, 4 * K)]))  # congruent or not
        phys = draw(st.integers(1, ((1 << pa_bits) - size) // phys_unit - 1)) * phys_unit
        out.append((iova, phys, size, draw(PROTS)))
        iova += size
    return out


CONFIGS: dict[str, tuple[dict[str, Any], int]] = {
    "plain": ({}, 0x4000_0000),
    "ns": ({"quirks": ["arm-ns"]}, 0x4000_0000),
    "no-perms": ({"quirks": ["no-perms"]}, 0x4000_0000),
    "mtk": ({"quirks": MTK, "oas": 35}, 0x4000_0000),
    "mtk-34": ({"quirks": MTK, "ias": 34, "oas": 35}, 0x4000_0000),
    "mtk-ttbr-ext": ({"quirks": MTK + ["arm-mtk-ttbr-ext"], "oas": 35}, 0x6_4000_0000),
    "mtk-34-ttbr-ext": ({"quirks": MTK + ["arm-mtk-ttbr-ext"], "ias": 34, "oas": 35}, 0x6_4000_0000),
    "ias-30": ({"ias": 30}, 0x4000_0000),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_round_trip(name: str, data: Any) -> None:
    cfg, base = CONFIGS[name]
    f = v7s(**cfg)
    maps = data.draw(mappings(f.ias, min(f.oas, 35)))
    b = builder(f, base)
    want = []
    for iova, phys, size, prot in maps:
        b.map(iova, phys, size, prot)
        va, pa, left = iova, phys, size
        while left:
            pg, count = iommu_pgsize(f.pgsize_bitmap, va, pa, left)
            for _ in range(count):
                want.append((va, pa, pg, expected_prot(f, prot)))
                va, pa, left = va + pg, pa + pg, left - pg
    got = [(x[0], x[1], x[2], x[4]) for x in b.walker.iter_leaves(0, 1 << f.ias)]
    assert got == want
    # translation of a byte in each leaf, and the TTBR round trip
    w2 = Walker(f, b.mem, f.root_from_register(f.ttbr_value(b.roots[0])))
    for va, pa, pg, _ in want[:: max(1, len(want) // 20)]:
        t = w2.translate(va + pg - 1)
        assert (t.phys, t.size) == (pa + pg - 1, pg)
        assert f.legacy_iova_to_phys(va + pg - 1, t) == pa + pg - 1
    # unmap everything leaf by leaf: the space is empty again
    for va, _, pg, _ in want:
        assert b.walker.unmap_leaf(va, pg) == pg
    assert list(b.walker.iter_leaves(0, 1 << f.ias)) == []


def test_reserved_bits_vec_matches_scalar() -> None:
    import numpy as np

    for quirks in ([], ["arm-ns"], MTK, MTK + ["arm-mtk-ttbr-ext"]):
        f = v7s(quirks=quirks, oas=35 if "arm-mtk-ext" in quirks else 32)
        raws = np.random.default_rng(5).integers(0, 1 << 32, 3000, dtype=np.uint64).astype(np.uint32)
        for lvl in f.levels:
            k = f.classify_vec(raws, lvl)
            assert f.reserved_bits_vec(raws, lvl, k).tolist() == \
                [f.reserved_bits(int(r), lvl, int(x)) for r, x in zip(raws, k)]


def test_check_reports_a_large_page_copy_that_disagrees() -> None:
    from iommuctl.check import check_domain
    from iommuctl.domain import load_domain_text

    dom = load_domain_text("format: arm-v7s\nmappings:\n  - {iova: 0x100000, phys: 0x23450000, size: 64K}\n",
                           Path("."), "t").copy()
    assert check_domain(dom)[0] == []
    t = dom.translate(0x105000)
    assert t.entry is not None and t.raw is not None
    dom.mem.write_uint(t.entry, 4, t.raw ^ 1 << 20)  # copy 6 names another PA
    rules = {f.rule for f in check_domain(dom)[0]}
    assert "replica-mismatch" in rules


def test_cli_walk_leaves_large_page_and_supersection(tmp_path: Path) -> None:
    import subprocess
    import sys

    dom = tmp_path / "d.yaml"
    dom.write_text("driver: msm-iommu\nmappings:\n"
                   "  - {iova: 0x1000000, phys: 0x23450000, size: 64K, prot: rw}\n"
                   "  - {iova: 0x3000000, phys: 0x56000000, size: 16M, prot: r}\n")
    res = subprocess.run([sys.executable, "-m", "iommuctl", "walk", "--leaves", "--json", str(dom)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    leaves = [(r["iova"], r["phys"], r["pgsize"], r.get("count", 1)) for r in rows if "summary" not in r]
    assert leaves == [("0x1000000", "0x23450000", 64 * K, 1), ("0x3000000", "0x56000000", 16 * M, 1)]
    assert rows[-1]["summary"]["leaves"] == {str(64 * K): 1, str(16 * M): 1}
