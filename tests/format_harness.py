"""Scaffolding the driver-private format tests share: the kernel's images in fixtures/conformance,
builder fidelity against the kernel's chunks, round trips, the bundled example domains, junk
robustness and vec-vs-scalar hook agreement. Each test file calls these with its format's own
specifics; the hand-worked descriptors stay in the format's own file."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

from formats.base import IOMMU_READ, IOMMU_WRITE, LEAF, PageTable, Translation, WalkError
from formats.builder import Arena, Builder
from formats.walker import Walker
from iommuctl.memory import PhysMem

CONF = Path(__file__).resolve().parent.parent / "fixtures" / "conformance"
PHYS_ADDR_MAX = (1 << 64) - 1
K, M = 1 << 10, 1 << 20
RW = IOMMU_READ | IOMMU_WRITE
U32_SPACE = 1 << 32

Mapping = tuple[int, int, int, int]  # (iova, phys, size, prot)


# -- the kernel's images ---------------------------------------------------------------------------

def read_case(name: str) -> dict[str, Any]:
    return json.loads((CONF / name / "case.json").read_text())  # type: ignore[no-any-return]


def load_case(name: str, make: Callable[[dict[str, Any]], PageTable],
              register: str) -> tuple[dict[str, Any], Any, Walker]:
    """The case, its format made by `make(config.user)`, and a walker over its image rooted where
    the raw root `register` says."""
    case = read_case(name)
    fmt = make(dict(case["config"]["user"]))
    mem = PhysMem()
    mem.add_file(CONF / name / "image.bin", case["image_base"])
    return case, fmt, Walker(fmt, mem, fmt.root_from_register(case["roots"][register]))


def kernel_leaves(case: dict[str, Any]) -> set[tuple[int, int, int]]:
    """(iova, phys, pgsize) of every page the kernel's map wrote, as its chunks say."""
    return {(c["iova"] + i * c["pgsize"], c["phys"] + i * c["pgsize"], c["pgsize"])
            for m in case["mappings"] if not m["unmapped"] for c in m["chunks"] for i in range(c["count"])}


def check_kernel_image(case: dict[str, Any], fmt: PageTable, w: Walker, *, roots: bool = False,
                       leaves: Callable[[dict[str, Any]], set[tuple[int, int, int]]] = kernel_leaves) -> None:
    """Every probe answers what the kernel answered (iova_to_phys_length and the legacy
    iova_to_phys), and the walk finds exactly the pages the kernel mapped."""
    if roots:
        assert w.roots == [case["roots"]["root_table_phys"]]
    for p in case["probes"]:
        t = w.translate(p["iova"])
        want = (p["expected_phys"], p["expected_pgsize"]) if p["expected_phys"] is not None else (PHYS_ADDR_MAX, 0)
        assert (t.phys, t.size) == want
        assert fmt.legacy_iova_to_phys(p["iova"], t) == p["kernel_iova_to_phys"]
    assert {(i, p, s) for i, p, s, *_ in w.iter_leaves(0, U32_SPACE)} == leaves(case)


def check_builder_matches_kernel(case: dict[str, Any], fmt: PageTable, w: Walker, *,
                                 chunks: bool = False) -> None:
    """The kernel's mappings rebuilt into a fresh `fmt` give the same leaves as the kernel's image
    (and, with `chunks`, the same iommu_pgsize chunks the kernel's map made)."""
    b = Builder(fmt, Arena(PhysMem(), 0x4000_0000))
    for m in case["mappings"]:
        if not m["unmapped"]:
            got = b.map(m["iova"], m["phys"], m["size"], m["prot"])
            if chunks:
                assert got == [(c["iova"], c["phys"], c["pgsize"], c["count"]) for c in m["chunks"]]
    built = Walker(fmt, b.mem, b.roots)
    assert list(built.iter_leaves(0, U32_SPACE)) == list(w.iter_leaves(0, U32_SPACE))


def check_domain_probes(dom: Any, case: dict[str, Any],
                        legacy: Callable[[Any], int] = lambda v: v) -> int:
    """A domain loaded from a case answers every probe as the kernel did; `legacy` maps the case's
    kernel_iova_to_phys to what iova_to_phys returns. Returns the number of misses probed."""
    misses = 0
    for p in case["probes"]:
        t = dom.translate(p["iova"])
        if p["expected_phys"] is None:
            misses += 1
            assert not t.mapped
        else:
            assert (t.phys, t.size) == (p["expected_phys"], p["expected_pgsize"])
        assert dom.iova_to_phys(p["iova"]) == legacy(p["kernel_iova_to_phys"])
    return misses


# -- junk ------------------------------------------------------------------------------------------

def check_junk_never_crashes(f: PageTable, rng: np.random.Generator, entries: int, probes: int = 100,
                             on_mapped: Callable[[Translation], None] | None = None) -> None:
    """A root table of random 32-bit words: translate gives answers or WalkErrors, and the range
    walk (which reaches junk table pointers outside memory) raises WalkError."""
    mem = PhysMem()
    mem.add_bytes(0x1000_0000, rng.integers(0, 1 << 32, entries, dtype=np.uint64).astype("<u4").tobytes())
    w = Walker(f, mem, [0x1000_0000])
    for iova in rng.integers(0, 1 << 32, probes).tolist():
        try:
            t = w.translate(int(iova))
        except WalkError:
            continue
        if on_mapped is not None and t.mapped:
            on_mapped(t)
    with pytest.raises(WalkError):
        list(w.leaves(0, U32_SPACE))


# -- round trips -----------------------------------------------------------------------------------

def greedy(page_sizes: list[int], iova: int, phys: int, size: int) -> list[tuple[int, int, int]]:
    """iommu_pgsize's choice, page by page: the largest size aligned for iova and phys that fits."""
    out = []
    while size:
        pg = max(s for s in page_sizes if not (iova | phys) & (s - 1) and s <= size)
        out.append((iova, phys, pg))
        iova, phys, size = iova + pg, phys + pg, size - pg
    return out


def pages_4k(maps: Sequence[Mapping]) -> list[Mapping]:
    """The 4K leaves a format with 4K PTEs only writes for `maps`."""
    return [(iova + k, phys + k, 4 * K, prot) for iova, phys, size, prot in maps for k in range(0, size, 4 * K)]


@st.composite
def slot_mappings_4k(draw: st.DrawFn, pa_bits: int) -> list[Mapping]:
    """Up to four mappings, one 4 MiB IOVA slot each, of up to 300 4K pages (crossing a 1M or 4M
    directory entry), any prot."""
    out = []
    slots = draw(st.lists(st.integers(0, 1023), min_size=1, max_size=4, unique=True))
    for slot in slots:
        off = draw(st.integers(0, 511)) * 4 * K
        size = draw(st.integers(1, 300)) * 4 * K
        phys = draw(st.integers(0, ((1 << pa_bits) - 4 * M) >> 12)) << 12
        out.append((slot * 4 * M + off, phys, size, draw(st.sampled_from([0, IOMMU_READ, IOMMU_WRITE, RW]))))
    return out


def check_round_trip(f: PageTable, maps: Sequence[Mapping], want: list[Any], arena: int = 0x4000_0000, *,
                     with_prot: bool = True, legacy: bool = False) -> Walker:
    """Builder.map of `maps` then the walk gives back `want` (iova, phys, size[, prot]) in IOVA
    order, and the last byte of every mapping translates (with `legacy`, iova_to_phys agrees)."""
    b = Builder(f, Arena(PhysMem(), arena))
    for iova, phys, size, prot in maps:
        b.map(iova, phys, size, prot)
    w = Walker(f, b.mem, b.roots)
    got: list[tuple[int, ...]] = [(i, p, s, pr) if with_prot else (i, p, s)
                                  for i, p, s, _, pr, _ in w.iter_leaves(0, U32_SPACE)]
    assert got == sorted(want)
    for iova, phys, size, _ in maps:
        t = w.translate(iova + size - 1)
        assert t.phys == phys + size - 1
        if legacy:
            assert f.legacy_iova_to_phys(iova, t) == t.phys
    return w


# -- the bundled example domain ---------------------------------------------------------------------

def check_example_domain_unmaps_to_empty(name: str, end: int = U32_SPACE) -> None:
    """example:<name> builds, translates its mappings, and a private copy unmaps leaf by leaf (as
    unmap-sim's callers do) down to an empty domain, the image untouched."""
    from iommuctl.domain import load_domain

    dom = load_domain(f"example:{name}")
    assert dom.fmt.name == name and dom.description
    leaves = [(int(b.iova[i]), int(b.size[i])) for b in dom.leaves(0, end) for i in range(len(b))]
    assert leaves and sum(s for _, s in leaves) == sum(m.size for m in dom.mappings)
    for m in dom.mappings:
        pages = getattr(m, "pages", None)  # scattered: one physical page per IOVA page
        last = m.phys + m.size - 1 if pages is None else int(pages[-1]) + m.page - 1
        assert dom.iova_to_phys_length(m.iova + m.size - 1)[0] == last
    work = dom.copy()
    for iova, size in leaves:
        assert work.walker.unmap_leaf(iova, size) == size
    assert list(work.walker.iter_leaves(0, end)) == []
    assert sum(int(b.size.sum()) for b in dom.leaves(0, end)) == sum(s for _, s in leaves)


# -- vectorised hooks -------------------------------------------------------------------------------

def check_vec_hooks_agree(f: PageTable) -> None:
    """The numpy hooks the walker and check use give what the per-entry hooks give, on random
    32-bit descriptors and on every low-bit pattern; encode_leaf_vec on random 4K pages."""
    rng = np.random.default_rng(7)
    raws = np.concatenate([rng.integers(0, 1 << 32, 3000, dtype=np.uint64),
                           np.arange(4096, dtype=np.uint64)]).astype("<u4")
    for lvl in f.levels:
        kinds = f.classify_vec(raws, lvl)
        assert kinds.tolist() == [f.classify(int(r), lvl) for r in raws]
        assert f.reserved_bits_vec(raws, lvl, kinds).tolist() == [  # type: ignore[attr-defined]
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
