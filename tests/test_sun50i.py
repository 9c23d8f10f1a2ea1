"""Allwinner sun50i IOMMU (drivers/iommu/sun50i-iommu.c): descriptors worked by hand from
sun50i_mk_dte/sun50i_mk_pte and the ACI enum, the kernel's images
(fixtures/conformance/sun50i-h6-*) and builder round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formats.base import INVALID, IOMMU_READ, IOMMU_WRITE, LEAF, TABLE, ConfigError, WalkError
from formats.builder import Arena, Builder
from formats.sun50i import Sun50i
from formats.walker import Walker
from iommuctl.memory import PhysMem

CONF = Path(__file__).resolve().parent.parent / "fixtures" / "conformance"
PHYS_ADDR_MAX = (1 << 64) - 1
K, M = 1 << 10, 1 << 20
RW = IOMMU_READ | IOMMU_WRITE


def sun() -> Sun50i:
    return Sun50i({"pa_bits": 32})


def test_config() -> None:
    f = sun()
    assert f.page_sizes == [4 * K]
    assert [(lv.shift, lv.bits) for lv in f.levels] == [(20, 12), (12, 8)]  # NUM_DT_ENTRIES, NUM_PT_ENTRIES
    assert f.root_alloc() == [(16 * K, 16 * K)] and f.table_alloc(f.levels[1]) == (K, K)  # DT_SIZE, PT_SIZE
    with pytest.raises(ConfigError):
        Sun50i({"pa_bits": 40})


def test_descriptors_by_hand() -> None:
    f = sun()
    dt, pt = f.levels
    # sun50i_mk_dte: (pt_dma & SUN50I_DTE_PT_ADDRESS_MASK GENMASK(31, 10)) | SUN50I_DTE_PT_VALID (1)
    dte = f.encode_table(0x4800_4400, dt)
    assert dte == 0x4800_4401 and f.classify(dte, dt) == TABLE and f.next_table(dte, dt) == 0x4800_4400
    # sun50i_dte_is_pt_valid: attrs [1:0] must be exactly 01
    assert f.classify(0x4800_4403, dt) == INVALID and f.classify(0x4800_4402, dt) == INVALID
    # sun50i_mk_pte: page | FIELD_PREP(SUN50I_PTE_ACI_MASK GENMASK(7, 4), aci) | SUN50I_PTE_PAGE_VALID BIT(1)
    assert f.encode_leaf(0x6900_1000, 4 * K, pt, RW) == 0x6900_1042  # ACI_RD_WR = 4
    assert f.encode_leaf(0x6900_1000, 4 * K, pt, IOMMU_READ) == 0x6900_1022  # ACI_RD = 2
    assert f.encode_leaf(0x6900_1000, 4 * K, pt, IOMMU_WRITE) == 0x6900_1032  # ACI_WR = 3
    assert f.encode_leaf(0x6900_1000, 4 * K, pt, 0) == 0x6900_1012  # ACI_NONE = 1
    for raw, prot in ((0x6900_1042, RW), (0x6900_1022, IOMMU_READ), (0x6900_1032, IOMMU_WRITE),
                      (0x6900_1012, 0)):
        assert f.classify(raw, pt) == LEAF and f.leaf_prot(raw, pt) == prot
        assert f.leaf_phys(raw, pt) == 0x6900_1000 and f.leaf_size(raw, pt) == 4 * K
    assert f.fields(0x6900_1042, pt, LEAF) == {"page_address": 0x69001, "aci": 4, "valid": True}
    assert f.classify(0x6900_1040, pt) == INVALID  # bit 1 clear
    # reserved: PTE [11:8], [3:2], [0]; ACI 0 is DO_NOT_USE
    assert f.reserved_bits(0x6900_1143, pt, LEAF) == 0x101
    assert f.reserved_bits(0x6900_1002, pt, LEAF) == 0
    assert f.reserved_bits(0x6900_10F2, pt, LEAF) == 0xF0
    assert f.reserved_bits(0x4800_4405, dt, TABLE) == 4  # DTE [9:2]
    assert f.root_from_register(0x4800_0000) == [0x4800_0000]  # IOMMU_TTB_REG = dt_dma


def load_case(name: str) -> tuple[dict, Sun50i, Walker]:
    case = json.loads((CONF / name / "case.json").read_text())
    fmt = Sun50i(dict(case["config"]["user"]))
    mem = PhysMem()
    mem.add_file(CONF / name / "image.bin", case["image_base"])
    return case, fmt, Walker(fmt, mem, fmt.root_from_register(case["roots"]["ttb"]))


@pytest.mark.parametrize("name", ["sun50i-h6-1", "sun50i-h6-3"])
def test_kernel_image(name: str) -> None:
    case, fmt, w = load_case(name)
    for p in case["probes"]:
        t = w.translate(p["iova"])
        want = (p["expected_phys"], p["expected_pgsize"]) if p["expected_phys"] is not None else (PHYS_ADDR_MAX, 0)
        assert (t.phys, t.size) == want
        assert fmt.legacy_iova_to_phys(p["iova"], t) == p["kernel_iova_to_phys"]
    want_leaves = {(c["iova"] + i * c["pgsize"], c["phys"] + i * c["pgsize"], c["pgsize"])
                   for m in case["mappings"] if not m["unmapped"] for c in m["chunks"] for i in range(c["count"])}
    assert {(i, p, s) for i, p, s, *_ in w.iter_leaves(0, 1 << 32)} == want_leaves


def test_kernel_image_prot_by_hand() -> None:
    """sun50i-h6-1 mapping 0: prot R|W|CACHE|MMIO|PRIV -> ACI_RD_WR; PTE = 0x6900c000 | 0x40 | 2."""
    case, fmt, w = load_case("sun50i-h6-1")
    m = case["mappings"][0]
    assert (m["iova"], m["phys"]) == (0x3525_8000, 0x6900_C000)
    t = w.translate(0x3525_8123)
    assert (t.phys, t.size, t.prot, t.raw) == (0x6900_C123, 4 * K, RW, 0x6900_C042)


@pytest.mark.parametrize("name", ["sun50i-h6-1", "sun50i-h6-3"])
def test_builder_writes_what_the_kernel_wrote(name: str) -> None:
    case, _, w = load_case(name)
    fmt = Sun50i(dict(case["config"]["user"]))
    b = Builder(fmt, Arena(PhysMem(), 0x4000_0000))
    for m in case["mappings"]:
        if not m["unmapped"]:
            b.map(m["iova"], m["phys"], m["size"], m["prot"])
    assert list(Walker(fmt, b.mem, b.roots).iter_leaves(0, 1 << 32)) == list(w.iter_leaves(0, 1 << 32))


def test_junk_entries_never_crash() -> None:
    rng = np.random.default_rng(4)
    f = sun()
    mem = PhysMem()
    mem.add_bytes(0x1000_0000, rng.integers(0, 1 << 32, 4096, dtype=np.uint64).astype("<u4").tobytes())
    w = Walker(f, mem, [0x1000_0000])
    for iova in rng.integers(0, 1 << 32, 100).tolist():
        try:
            w.translate(int(iova))
        except WalkError:
            pass
    with pytest.raises(WalkError):
        list(w.leaves(0, 1 << 32))


@st.composite
def mappings(draw: st.DrawFn) -> list[tuple[int, int, int, int]]:
    out = []
    slots = draw(st.lists(st.integers(0, 1023), min_size=1, max_size=4, unique=True))
    for slot in slots:
        off = draw(st.integers(0, 511)) * 4 * K
        size = draw(st.integers(1, 300)) * 4 * K  # up to 1.2M: crosses DTEs
        phys = draw(st.integers(0, ((1 << 32) - 4 * M) >> 12)) << 12
        out.append((slot * 4 * M + off, phys, size, draw(st.sampled_from([0, IOMMU_READ, IOMMU_WRITE, RW]))))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(maps=mappings())
def test_round_trip(maps: list[tuple[int, int, int, int]]) -> None:
    f = sun()
    b = Builder(f, Arena(PhysMem(), 0x4000_0000))
    want = []
    for iova, phys, size, prot in maps:
        b.map(iova, phys, size, prot)
        want += [(iova + k, phys + k, 4 * K, prot) for k in range(0, size, 4 * K)]
    w = Walker(f, b.mem, b.roots)
    assert [(i, p, s, pr) for i, p, s, _, pr, _ in w.iter_leaves(0, 1 << 32)] == sorted(want)
    for iova, phys, size, _ in maps:
        assert w.translate(iova + size - 1).phys == phys + size - 1


def test_example_domain_unmaps_to_empty() -> None:
    """The bundled example:sun50i builds, translates its mappings, and a private copy unmaps leaf by
    leaf (as unmap-sim's callers do) down to an empty domain, the image untouched."""
    from iommuctl.domain import load_domain

    dom = load_domain("example:sun50i")
    assert dom.fmt.name == "sun50i" and dom.description
    leaves = [(int(b.iova[i]), int(b.size[i])) for b in dom.leaves(0, 1 << 32) for i in range(len(b))]
    assert leaves and sum(s for _, s in leaves) == sum(m.size for m in dom.mappings)
    for m in dom.mappings:
        pages = getattr(m, "pages", None)  # scattered: one physical page per IOVA page
        last = m.phys + m.size - 1 if pages is None else int(pages[-1]) + m.page - 1
        assert dom.iova_to_phys_length(m.iova + m.size - 1)[0] == last
    work = dom.copy()
    for iova, size in leaves:
        assert work.walker.unmap_leaf(iova, size) == size
    assert list(work.walker.iter_leaves(0, 1 << 32)) == []
    assert sum(int(b.size.sum()) for b in dom.leaves(0, 1 << 32)) == sum(s for _, s in leaves)


@pytest.mark.parametrize("config", [{"pa_bits": 32}])
def test_vectorised_hooks_agree_with_scalar(config: dict) -> None:
    """The numpy hooks the walker and check use give what the per-entry hooks give, on random
    descriptors and on every low-bit pattern."""
    f = Sun50i(config)
    rng = np.random.default_rng(7)
    raws = np.concatenate([rng.integers(0, 1 << 32, 3000, dtype=np.uint64),
                           np.arange(4096, dtype=np.uint64)]).astype("<u4")
    for lvl in f.levels:
        kinds = f.classify_vec(raws, lvl)
        assert kinds.tolist() == [f.classify(int(r), lvl) for r in raws]
        assert f.reserved_bits_vec(raws, lvl, kinds).tolist() == [
            f.reserved_bits(int(r), lvl, int(k)) for r, k in zip(raws, kinds)]
        leaf = raws[kinds == LEAF]
        assert f.leaf_phys_vec(leaf, lvl).tolist() == [f.leaf_phys(int(r), lvl) for r in leaf]
        assert f.leaf_size_vec(leaf, lvl).tolist() == [f.leaf_size(int(r), lvl) for r in leaf]
        assert f.leaf_prot_vec(leaf, lvl).tolist() == [f.leaf_prot(int(r), lvl) for r in leaf]
    pages = (rng.integers(0, 1 << (f.oas - 12), 64, dtype=np.uint64) << np.uint64(12))
    lvl = f.levels[-1]
    for prot in (0, IOMMU_READ, IOMMU_WRITE, RW):
        assert f.encode_leaf_vec(pages, 4096, lvl, prot).tolist() == [
            f.encode_leaf(int(p), 4096, lvl, prot) for p in pages]
