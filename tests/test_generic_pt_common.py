"""generic_pt formats together (formats/generic_pt/): the kernel conformance cases (decoding the
kernel's images from `root:` and from the raw hardware root word, and rebuilding them with our
encoder: the same leaves and, slot for slot, the same 64-bit descriptors the kernel wrote),
NS(get_info) page sizes, configuration refusals, the dynamic top, the legacy iova_to_phys
quirk, hypothesis round trips for every format and level count, and junk entries.

Kernel: drivers/iommu/generic_pt/ at the v7.1 merge window (the blobs listed in
fixtures/conformance/README-vectors.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iommuctl
from formats import drivers, get_format
from formats.base import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_READ,
    IOMMU_WRITE,
    LEAF,
    TABLE,
    ConfigError,
    WalkError,
)
from formats.builder import Arena, Builder, iommu_pgsize
from formats.generic_pt.common import ERANGE_PHYS, GenericPt
from formats.walker import Walker
from iommuctl.memory import PhysMem

from .mapping_strategy import draw_layout

CASES = sorted(p for p in (Path(__file__).parent.parent / "fixtures" / "conformance").glob("generic_pt-*")
               if (p / "case.json").exists())
FMT_OF = {"generic_pt-amdv1": "amdv1", "generic_pt-vtdss": "vtdss", "generic_pt-x86_64": "x86-64",
          "generic_pt-riscv64": "riscv64"}
RW = IOMMU_READ | IOMMU_WRITE


def fmt(fid: str, **cfg: Any) -> GenericPt:
    cls = get_format(fid)
    c = dict(cls.config_defaults)
    c.update(cfg)
    f = cls(c)
    assert isinstance(f, GenericPt)
    return f


def case_config(case: dict[str, Any], level_key: str = "top_level") -> dict[str, Any]:
    cfg = case["config"]
    return {"levels": case["roots"][level_key] + 1, "vasz": cfg["max_vasz_lg2"], "oasz": cfg["max_oasz_lg2"],
            "features": [f.removeprefix("PT_FEAT_").lower().replace("_", "-") for f in cfg["features_list"]]}


def load(case_dir: Path) -> dict[str, Any]:
    return json.loads((case_dir / "case.json").read_text())  # type: ignore[no-any-return]


def image_mem(case_dir: Path, case: dict[str, Any]) -> PhysMem:
    mem = PhysMem()
    mem.add_bytes(case["image_base"], (case_dir / "image.bin").read_bytes())
    return mem


def hw_root_word(f: GenericPt, case: dict[str, Any]) -> int:
    """The raw root word the hardware holds, built from pt_iommu_<fmt>_hw_info's fields."""
    r = case["roots"]
    if f.name == "amdv1":  # DTE[0]: V | TV | mode [11:9] | host page table root [51:12]
        return 0b11 | r["mode"] << 9 | r["host_pt_root"]
    if f.name == "vtdss":  # PASID entry qword 0: P | AW [4:2] | PGTT=2 [8:6] | SSPTPTR
        return 1 | r["aw"] << 2 | 2 << 6 | r["ssptptr"]
    if f.name == "x86-64":  # FSPTPTR / GCR3 entry with its valid bit
        return r["gcr3_pt"] | 1
    return r["fsc_iosatp_mode"] << 60 | r["ppn"]  # iosatp MODE [63:60] | PPN [43:0]


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_conformance_decode(case_dir: Path) -> None:
    """Every probe from `root:` and from the hardware root word: phys, size, legacy, level and
    the kernel's own leaf descriptor; then the leaf set."""
    case = load(case_dir)
    fid = FMT_OF[case["format"]]
    f = fmt(fid, **case_config(case))
    assert f.bitmap == case["config"]["pgsize_bitmap"]  # NS(get_info)
    assert f.windows == [(w["base"], w["base"] + w["size"]) for w in case["config"]["iova_windows"]]
    mem = image_mem(case_dir, case)
    # the raw root word names the levels: start from a wrong level count and let it correct us
    g = fmt(fid, **{**case_config(case), **({"levels": None} if fid != "amdv1" else {"levels": 2})})
    roots_hw = g.root_from_register(hw_root_word(g, case))
    assert roots_hw == [case["roots"]["top_table_phys"]]
    assert g.top_level == case["roots"]["top_level"]
    for w in (Walker(f, mem, [case["roots"]["top_table_phys"]]), Walker(g, mem, roots_hw)):
        for p in case["probes"]:
            t = w.translate(p["iova"])
            legacy = w.fmt.legacy_iova_to_phys(p["iova"], t)
            assert legacy == p["kernel_iova_to_phys"]
            if p["expected_pgsize"] is None:
                assert not t.mapped
                continue
            assert (t.phys, t.size) == (p["kernel_iova_to_phys"], p["expected_pgsize"])
            assert (t.level, t.raw) == (p["kernel_leaf"]["level"], p["kernel_leaf"]["entry"])
    want = {(c["iova"] + i * c["pgsize"], c["phys"] + i * c["pgsize"], c["pgsize"])
            for m in case["mappings"] if not m["unmapped"] for c in m["chunks"] for i in range(c["count"])}
    w = Walker(f, mem, [case["roots"]["top_table_phys"]])
    got = {lf[:3] for s, e in f.windows for lf in w.iter_leaves(s, e)}
    assert got == want


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_conformance_encode(case_dir: Path) -> None:
    """Our map path rebuilds the kernel's leaves from the case's mappings, starting at the
    initial top (amdv1 grows like increase_top did), and writes bit-identical leaf words."""
    case = load(case_dir)
    f = fmt(FMT_OF[case["format"]], **case_config(case, "initial_top_level"))
    mem = PhysMem()
    b = Builder(f, Arena(mem, 0x10_0000_0000))
    for m in case["mappings"]:
        if not m["unmapped"]:
            b.map(m["iova"], m["phys"], m["size"], m["prot"])
    assert f.top_level == case["roots"]["top_level"]  # top_changes reproduced
    w = Walker(f, mem, b.roots)
    want = {(c["iova"] + i * c["pgsize"], c["phys"] + i * c["pgsize"], c["pgsize"])
            for m in case["mappings"] if not m["unmapped"] for c in m["chunks"] for i in range(c["count"])}
    assert {lf[:3] for s, e in f.windows for lf in w.iter_leaves(s, e)} == want
    for p in case["probes"]:
        if p.get("kernel_leaf"):
            t = w.translate(p["iova"])
            assert t.raw == p["kernel_leaf"]["entry"], hex(p["iova"])


def test_registry_and_drivers() -> None:
    d = drivers()
    assert {k: d[k]["format"] for k in ("amd-v1", "amd-v2", "intel-ss", "intel-fs", "riscv", "iommufd-mock")} == {
        "amd-v1": "amdv1", "amd-v2": "x86-64", "intel-ss": "vtdss", "intel-fs": "x86-64", "riscv": "riscv64",
        "iommufd-mock": "amdv1-mock"}
    for spec in d.values():
        if spec["format"] in ("amdv1", "amdv1-mock", "vtdss", "x86-64", "riscv64"):
            fmt(spec["format"], **spec["config"])


# --- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fid,cfg,key", [
    ("vtdss", {"levels": 2}, "levels"),                      # vtdss_pt_iommu_fmt_init: top 2..4
    ("vtdss", {"levels": 3, "vasz": 48}, "levels"),          # pt_init_common: top too small for vasz
    ("x86-64", {"levels": 3}, "levels"),                     # x86_64_pt_iommu_fmt_init: top 3 or 4
    ("riscv64", {"vasz": 40}, "vasz"),                       # riscvpt_iommu_fmt_init: 39/48/57 only
    ("riscv64", {"vasz": 39, "levels": 4}, "levels"),
    ("amdv1", {"levels": 7}, "levels"),
    ("amdv1", {"vasz": 65}, "vasz"),                         # > PT_MAX_VA_ADDRESS_LG2
    ("vtdss", {"oasz": 53}, "oasz"),                         # > PT_MAX_OUTPUT_ADDRESS_LG2
    ("vtdss", {"features": ["sign-extend"]}, "features"),    # not in PT_SUPPORTED_FEATURES
    ("amdv1-mock", {"features": ["dynamic-top"]}, "features"),  # iommu_mock.c supports none
    ("riscv64", {"features": ["riscv-svpbmt"]}, "features"),  # not in this tree's riscv64
    ("x86-64", {"features": ["bogus"]}, "features"),
    ("x86-64", {"pgsize_bitmap": 0x2000}, "pgsize_bitmap"),
    ("amdv1", {"sme_me_mask": 3}, "sme_me_mask"),
])
def test_config_refusals(fid: str, cfg: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        fmt(fid, **cfg)
    assert e.value.key == key


def test_feature_spelling_and_defaults() -> None:
    f = fmt("x86-64", features=["PT_FEAT_SIGN_EXTEND", "flush_range"])
    assert f.features == {"sign-extend", "flush-range"}
    assert fmt("vtdss", vasz=39).top_level == 2 and fmt("vtdss", levels=5).max_vasz == 57
    assert fmt("riscv64", vasz=57).top_level == 4 and fmt("riscv64", levels=3).max_vasz == 39
    # amdv1 without DYNAMIC_TOP: max_vasz = 12 + 9 * (starting_level + 1) (amdv1pt_iommu_fmt_init)
    a = fmt("amdv1", levels=3, features=["amdv1-force-coherence"], vasz=64)
    assert a.max_vasz == 39 and a.windows == [(0, 1 << 39)]
    # the top already spans vasz: pt_init_common clears DYNAMIC_TOP
    assert "dynamic-top" not in fmt("amdv1", levels=6).features
    assert "full-va" in fmt("amdv1", levels=6).features  # a 64-bit top range sets FULL_VA


def test_pgsize_bitmaps() -> None:
    """NS(get_info) with each format's pt_possible_sizes, below 2^max_oasz_lg2."""
    assert fmt("vtdss").bitmap == (1 << 12) | (1 << 21) | (1 << 30)
    assert fmt("x86-64").bitmap == (1 << 12) | (1 << 21) | (1 << 30)
    # riscv: every level has leaves (Sv48 top 512G), 64K with Svnapot
    assert fmt("riscv64", vasz=48).bitmap == (1 << 12) | (1 << 16) | (1 << 21) | (1 << 30) | (1 << 39)
    assert fmt("riscv64", vasz=39, features=["sign-extend"]).bitmap == (1 << 12) | (1 << 21) | (1 << 30)
    # amdv1 dynamic top, vasz 48: levels whose item is below 2^48, every power of two but 512G
    assert fmt("amdv1", vasz=48).bitmap == ((1 << 48) - (1 << 12)) & ~(1 << 39)
    # vasz 64: up to 2^51 (amdv1pt_possible_sizes caps at bit 51); oasz 52 keeps it
    assert fmt("amdv1").bitmap == ((1 << 52) - (1 << 12)) & ~(1 << 39)
    # the selftest mock: 2K..128G (3 levels of 2K granule)
    assert fmt("amdv1-mock").bitmap == (1 << 38) - (1 << 11)
    assert fmt("amdv1-mock", pgsize_bitmap=(1 << 20) | 4096).page_sizes == [4096, 1 << 20]
    # oasz hides sizes at or above 2^oasz
    assert fmt("vtdss", oasz=30).bitmap == (1 << 12) | (1 << 21)


# --- legacy iova_to_phys quirk --------------------------------------------------------------------


def built(fid: str, maps: list[tuple[int, int, int, int]], **cfg: Any) -> tuple[GenericPt, Builder]:
    f = fmt(fid, **cfg)
    b = Builder(f, Arena(PhysMem(), 0x10_0000_0000))
    for m in maps:
        b.map(*m)
    return f, b


def test_legacy_out_of_range_is_minus_erange() -> None:
    """DOMAIN_NS(iova_to_phys) returns make_range()'s errno as phys_addr_t: -ERANGE for a
    non-canonical IOVA, one above max_vasz, and (amdv1) one above the current top."""
    assert ERANGE_PHYS == 0xFFFF_FFFF_FFFF_FFDE
    f, b = built("x86-64", [(0x1000, 0x5000, 0x1000, RW)])
    t = b.walker.translate(0x0000_8000_0000_0000)  # non-canonical with sign-extend 48
    assert not t.mapped and f.legacy_iova_to_phys(0x0000_8000_0000_0000, t) == ERANGE_PHYS
    t = b.walker.translate(0xFFFF_8000_0000_0000)  # canonical upper half, unmapped: 0
    assert f.legacy_iova_to_phys(0xFFFF_8000_0000_0000, t) == 0
    assert f.legacy_iova_to_phys(0x1234, b.walker.translate(0x1234)) == 0x5234
    g, c = built("amdv1", [(0x1000, 0x5000, 0x1000, RW)], vasz=48)
    assert g.top_level == 2  # starting_level 2 still spans the mapping
    t = c.walker.translate(1 << 40)  # inside vasz 48 but above what mode 3 decodes
    assert g.legacy_iova_to_phys(1 << 40, t) == ERANGE_PHYS
    assert g.legacy_iova_to_phys(0x2000, c.walker.translate(0x2000)) == 0


def test_dynamic_top_growth() -> None:
    """increase_top: each new top links the old one at index 0 (amdv1pt_install_table with
    NextLevel = the new top's level); mode follows the top; a leaf level above the top grows it."""
    f, b = built("amdv1", [(0x1000, 0x5000, 0x1000, RW)], vasz=64)
    old = b.roots[0]
    b.map(1 << 50, 1 << 40, 1 << 40, RW)  # needs VA bit 50: level 4 (mode 5)
    assert f.top_level == 4 and f.config["levels"] == 5
    w = b.walker
    top = b.roots[0]
    e3 = w.read_entry(top)  # index 0 of the level-4 top
    assert e3 == 1 | 4 << 9 | (f.next_table(e3, f.levels[0])) | (3 << 61)
    e2 = w.read_entry(f.next_table(e3, f.levels[0]))
    assert f.next_table(e2, f.levels[1]) == old and (e2 >> 9) & 7 == 3
    assert w.translate(0x1000).phys == 0x5000 and w.translate((1 << 50) + 5).phys == (1 << 40) + 5
    assert w.translate((1 << 50) + 5).size == 1 << 40  # a NextLevel=7 1T leaf at level 3
    # a 2^56 page can live only at level 4 or 5; a mapping at 2^63 needs mode 6
    b.map(1 << 63, 0, 1 << 40, IOMMU_READ)
    assert f.top_level == 5 and f.levels[0].bits == 7  # level 5 decodes VA[63:57]
    with pytest.raises(ValueError):
        built("amdv1", [((1 << 48), 0, 0x1000, RW)], vasz=48)  # beyond vasz: -ERANGE


# --- hypothesis round trips -------------------------------------------------------------------------

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("amdv1", {"levels": 1}), ("amdv1", {"levels": 2, "features": ["amdv1-force-coherence"]}),
    ("amdv1", {"levels": 3}), ("amdv1", {"levels": 4, "vasz": 48}), ("amdv1", {"levels": 5}),
    ("amdv1", {"levels": 6, "features": []}),
    ("amdv1-mock", {"levels": 2}), ("amdv1-mock", {"levels": 3}), ("amdv1-mock", {"levels": 4}),
    ("amdv1-mock", {"pgsize_bitmap": (1 << 20) | 4096}),
    ("vtdss", {"levels": 3}), ("vtdss", {"levels": 4, "features": ["vtdss-force-coherence"]}),
    ("vtdss", {"levels": 5}), ("vtdss", {"levels": 5, "vasz": 39, "features": ["dma-incoherent"]}),
    ("x86-64", {"levels": 4}), ("x86-64", {"levels": 5}), ("x86-64", {"levels": 4, "vasz": 47, "features": []}),
    ("x86-64", {"levels": 5, "vasz": 56, "features": ["x86-64-amd-encrypt-tables"], "sme_me_mask": 1 << 47,
                "oasz": 47}),
    ("riscv64", {"vasz": 39}), ("riscv64", {"vasz": 48, "features": ["sign-extend"]}), ("riscv64", {"vasz": 57}),
]
PROTS = st.sampled_from([IOMMU_READ, IOMMU_WRITE, RW]).flatmap(
    lambda rw: st.sets(st.sampled_from([IOMMU_CACHE, IOMMU_NOEXEC, IOMMU_MMIO])).map(lambda x: rw | sum(x)))


def expected_prot(f: GenericPt, prot: int) -> int:
    """What each format's leaf keeps of IOMMU_* prot (its set_prot, read back)."""
    if f.name in ("amdv1", "amdv1-mock"):
        return prot & RW
    if f.name == "vtdss":
        return prot & RW
    if f.name == "x86-64":  # always readable; NOEXEC is not mapped to XD; MMIO by the missing C-bit
        return IOMMU_READ | (prot & IOMMU_WRITE) | (prot & IOMMU_MMIO if getattr(f, "sme", 0) else 0)
    read = IOMMU_READ if prot & RW else 0  # riscv: WRITE adds R too
    return read | (prot & IOMMU_WRITE) | (prot & IOMMU_NOEXEC)


@st.composite
def domains(draw: st.DrawFn) -> tuple[GenericPt, list[tuple[int, int, int, int]]]:
    fid, cfg = draw(st.sampled_from(CONFIGS))
    f = fmt(fid, **cfg)
    window = draw(st.sampled_from(f.windows))
    start, end = window
    end = min(end, start + (1 << min(f.max_vasz, 50)))
    region = min((end - start) // 8, 1 << 32)
    return f, draw_layout(draw, f, start, region, PROTS, 4, 20)


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(domains(), st.randoms(use_true_random=False))
def test_random_mappings_round_trip(dom: tuple[GenericPt, list[tuple[int, int, int, int]]], rnd: Any) -> None:
    """Random mappings -> Builder -> Walker gives back the mappings, leaves sized as
    pt_compute_best_pgsize / iommu_pgsize pick them, each contiguous leaf reported once."""
    f, maps = dom
    b = Builder(f, Arena(PhysMem(), 0x10_0000_0000 if f.oas > 36 else 0x8000_0000))
    want = set()
    for iova, phys, size, prot in maps:
        b.map(iova, phys, size, prot)
        i, p, n = iova, phys, size
        while n:
            pgsize, count = iommu_pgsize(f.bitmap, i, p, n)
            for _ in range(count):
                want.add((i, p, pgsize, expected_prot(f, prot)))
                i, p, n = i + pgsize, p + pgsize, n - pgsize
    got = {(lf[0], lf[1], lf[2], lf[4]) for s, e in f.windows for lf in b.walker.iter_leaves(s, e)}
    assert got == want
    for iova, phys, size, _ in maps:
        for off in (0, size - 1, rnd.randrange(size)):
            t = b.walker.translate(iova + off)
            assert t.phys == phys + off
            assert f.legacy_iova_to_phys(iova + off, t) == phys + off
            leaf = [x for x in want if x[0] <= iova + off < x[0] + x[2]]
            assert len(leaf) == 1 and t.size == leaf[0][2] and t.prot == leaf[0][3]
    # unmap each leaf by its size: the domain ends empty (kernel __unmap_range clears whole entries)
    for iova, _, size, _ in want:
        assert b.walker.unmap_leaf(iova, size) == size
    assert not any(len(x) for s, e in f.windows for x in b.walker.leaves(s, e))


# --- junk never raises anything but WalkError / ValueError ---------------------------------------

JUNK = [fmt(fid, **cfg) for fid, cfg in CONFIGS[::2]]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(JUNK), st.lists(st.integers(0, (1 << 64) - 1), min_size=1, max_size=16))
def test_junk_entries(f: GenericPt, raws: list[int]) -> None:
    arr = np.array(raws, dtype=np.uint64)
    for level in f.levels:
        kinds = f.classify_vec(arr, level)
        for raw, kind in zip(raws, kinds):
            assert f.classify(raw, level) == kind
            f.fields(raw, level, kind)
            f.note(raw, level, kind)
            f.reserved_bits(raw, level, kind)
            f.kind_name(raw, level, kind)
            if kind == TABLE:
                assert list(f.next_table_vec(np.array([raw], dtype=np.uint64), level)) == [f.next_table(raw, level)]
        leaves = arr[kinds == LEAF]
        if len(leaves):
            assert list(f.leaf_phys_vec(leaves, level)) == [f.leaf_phys(int(r), level) for r in leaves]
            assert list(f.leaf_prot_vec(leaves, level)) == [f.leaf_prot(int(r), level) for r in leaves]
            sizes = [min(f.leaf_size(int(r), level), 1 << 63) for r in leaves]
            assert list(f.leaf_size_vec(leaves, level)) == sizes
    mem = PhysMem()
    size = max(f.levels[0].entries * 8, 4096)
    data = (raws * (size // 8 // len(raws) + 1))[: size // 8]
    mem.add_bytes(0x10_0000, np.array(data, dtype=np.uint64).tobytes())
    w = Walker(f, mem, [0x10_0000])
    try:
        for s, e in f.windows:
            for _ in w.leaves(s, e):
                pass
        w.translate(f.windows[0][0])
    except WalkError:
        pass


# --- bundled examples through the domain API -------------------------------------------------------


@pytest.mark.parametrize("name", ["amd-v1", "intel-ss", "riscv-sv48", "x86-64-fs"])
def test_examples(name: str) -> None:
    dom = iommuctl.load_domain(f"example:{name}")
    assert dom.description
    sizes = {int(s) for s0, e0 in dom.windows for b in dom.leaves(s0, e0) for s in b.size}
    assert len(sizes) >= 3
    for m in dom.mappings:
        phys, size = dom.iova_to_phys_length(m.iova)
        assert phys == m.phys and size in sizes


# --- a leaf where a table is (iommu_pt.h __map_range_leaf -> clear_contig) -----------------------

def test_leaf_over_an_empty_table_replaces_it() -> None:
    # increase_top links the old top at index 0 of the new one; a 2M leaf at IOVA 0 then lands on
    # that (empty) table entry: clear_contig's __collect_tables finds no OA entry, frees the table
    # and the leaf is installed. Likewise a table emptied by unmap. A table with a leaf below is
    # -EADDRINUSE.
    f = fmt("amdv1", levels=1)
    b = Builder(f, Arena(PhysMem(), 0x10_0000_0000))
    b.map(0, 0x8000_0000, 2 << 20, IOMMU_READ)
    assert [(v, p, size, lvl) for v, p, size, lvl, *_ in b.walker.iter_leaves(0, 1 << 40)] == [
        (0, 0x8000_0000, 2 << 20, 1)]  # the top grew to level 1; its entry 0 is the leaf now
    b.map(0x40_0000, 0x9000_0000, 0x1000, IOMMU_READ)
    assert b.walker.unmap_leaf(0x40_0000, 0x1000) == 0x1000  # generic_pt keeps the emptied table
    b.map(0x40_0000, 0x9000_0000, 2 << 20, IOMMU_READ)
    assert b.walker.translate(0x40_1234).size == 2 << 20
    b.map(0x80_0000, 0xA000_0000, 0x1000, IOMMU_READ)
    with pytest.raises(ValueError, match="EADDRINUSE"):
        b.map(0x80_0000, 0xA000_0000, 2 << 20, IOMMU_READ)
