"""The run-based counts agree with the call-by-call replay, field by field, on random domains
and ranges (hypothesis); the replay's own checks hold where the kernel's teardown is clean."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iommuctl.domain import load_domain_text
from iommuctl.errors import UserError
from iommuctl.sim import simulate
from iommuctl.sim.core import leaf_list

K, M = 1 << 10, 1 << 20
BASE = 1 << 30  # a 1G-aligned window: 2M blocks and a 1G boundary inside reach


@st.composite
def domains(draw: Any, gpu: bool = False,
            formats: tuple[str, ...] = ("arm-lpae-s1",)) -> tuple[str, list[tuple[int, int]]]:
    """Mapping lists: contiguous runs (4K pages or 2M blocks, sometimes physically continuing
    the previous mapping), scattered pages, gaps between them."""
    items = []
    iova = BASE + draw(st.integers(0, 3)) * 2 * M
    phys_next = None
    for _ in range(draw(st.integers(1, 4))):
        iova += draw(st.sampled_from([0, 0, 4 * K, 64 * K, 2 * M]))
        kind = draw(st.sampled_from(["blocks", "pages", "scatter"]))
        if kind == "blocks":
            iova = -(-iova // (2 * M)) * 2 * M
            size = draw(st.integers(1, 2)) * 2 * M
            if phys_next is not None and phys_next % (2 * M) == 0 and draw(st.booleans()):
                phys = phys_next
            else:
                phys = 0x8000_0000 + draw(st.integers(0, 255)) * 2 * M
        elif kind == "pages":
            size = draw(st.integers(1, 48)) * 4 * K
            if phys_next is not None and draw(st.booleans()):
                phys = phys_next
            else:
                phys = 0x1_0000_0000 + draw(st.integers(0, 1 << 16)) * 4 * K
        else:
            size = draw(st.integers(1, 32)) * 4 * K
            seed = draw(st.integers(0, 99))
            items.append(f"  - {{iova: {iova:#x}, size: {size:#x}, phys: {{scatter: 4K, seed: {seed}, "
                         f"base: {0x2_0000_0000 + seed * (1 << 24):#x}}}}}")
            spans = (iova, iova + size)
            iova += size
            phys_next = None
            del spans
            continue
        items.append(f"  - {{iova: {iova:#x}, phys: {phys:#x}, size: {size:#x}}}")
        iova += size
        phys_next = phys + size
    head = "driver: panfrost" if gpu else f"format: {draw(st.sampled_from(formats))}"
    return head + "\nmappings:\n" + "\n".join(items) + "\n", []


def pick_range(data: Any, dom: Any) -> tuple[int, int]:
    leaves = leaf_list(dom, 0, 1 << 48)
    bounds = sorted({v for v, _, _ in leaves} | {v + s for v, _, s in leaves})
    lo = data.draw(st.sampled_from(bounds[:-1]))
    hi = data.draw(st.sampled_from([b for b in bounds if b > lo]))
    # sometimes stretch to a page boundary inside a hole or a leaf (may not be run-countable)
    if data.draw(st.booleans()):
        lo = max(BASE, lo - data.draw(st.integers(0, 8)) * 4 * K)
        hi = hi + data.draw(st.integers(0, 8)) * 4 * K
    return lo, hi


def compare(dom: Any, caller: str, lo: int, hi: int, areas: list[tuple[int, int]] | None = None) -> None:
    rep = simulate(dom, caller, lo, hi, areas, mode="replay")
    try:
        runs = simulate(dom, caller, lo, hi, areas, mode="runs")
    except UserError as e:
        assert "does not cover" in str(e)
        return
    assert runs.legacy.counts.as_dict() == rep.legacy.counts.as_dict(), (caller, hex(lo), hex(hi))
    assert runs.length_aware.counts.as_dict() == rep.length_aware.counts.as_dict(), (caller, hex(lo), hex(hi))
    assert runs.floor == rep.floor
    # same verdict, same first IOVA (a range cutting a block leaves it mapped, as the kernel does)
    assert (runs.ok, runs.mismatch) == (rep.ok, rep.mismatch), (caller, hex(lo), hex(hi))
    if caller == "vfio":
        assert runs.legacy.holes == rep.legacy.holes


SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(domains(), st.data())
def test_vfio_iommufd_runs_equal_replay(spec: tuple[str, Any], data: Any) -> None:
    dom = load_domain_text(spec[0])
    lo, hi = pick_range(data, dom)
    compare(dom, "vfio", lo, hi)
    compare(dom, "iommufd", lo, hi)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(domains(), st.data())
def test_vfio_areas_runs_equal_replay(spec: tuple[str, Any], data: Any) -> None:
    dom = load_domain_text(spec[0])
    lo, hi = pick_range(data, dom)
    cut = data.draw(st.integers(lo // (4 * K), hi // (4 * K))) * 4 * K
    areas = [(a, b) for a, b in ((lo, cut), (cut, hi)) if a < b]
    compare(dom, "vfio", lo, hi, areas)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(domains(formats=("x86-64", "amdv1", "riscv64", "arm-v7s", "apple-dart")), st.data())
def test_other_formats_runs_equal_replay(spec: tuple[str, Any], data: Any) -> None:
    """generic_pt (iommupt: one unmap_range per iommu_unmap, amdv1's replicated sizes, riscv
    NAPOT), v7s (unmap_pages loops pgcount itself) and DART."""
    try:
        dom = load_domain_text(spec[0])
    except UserError:
        return  # a mapping this format cannot take (v7s/DART address widths)
    lo, hi = pick_range(data, dom)
    compare(dom, "vfio", lo, hi)
    compare(dom, "iommufd", lo, hi)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(domains(gpu=True), st.data())
def test_gpu_and_selftest_runs_equal_replay(spec: tuple[str, Any], data: Any) -> None:
    dom = load_domain_text(spec[0])
    lo, hi = pick_range(data, dom)
    for caller in ("panfrost", "panthor", "iommufd-selftest"):
        compare(dom, caller, lo, hi)


CUT_DOMAIN = """format: arm-lpae-s1
mappings:
  - {iova: 0x40000000, size: 2400K, phys: {scatter: 4K, seed: 4, base: 0x300000000}}
  - {iova: 0x40400000, phys: 0x80000000, size: 4M}
  - {iova: 0x40800000, phys: 0x90000000, size: 2M}
"""


def test_ranges_cutting_blocks_runs_equal_replay() -> None:
    """Edges inside 2M blocks: a start inside one (the first fast and slow unmaps are refused),
    an end inside one after more than 512 extents, with and without the cut block starting its
    own extent."""
    dom = load_domain_text(CUT_DOMAIN)
    for lo, hi in ((0x40401000, 0x40a00000), (0x40000000, 0x40601000), (0x40000000, 0x40801000),
                   (0x40400000, 0x40801000), (0x40401000, 0x40402000), (0x40000000, 0x40401000)):
        compare(dom, "vfio", lo, hi)
        compare(dom, "iommufd", lo, hi)
        compare(dom, "iommufd", lo, hi, [(lo, hi)] if lo == 0x40400000 else None)
        rep = simulate(dom, "vfio", lo, hi, mode="replay")
        assert not rep.ok


ALIASED = ("mappings:\n  - {iova: 0x40000000, phys: 0x80000000, size: 0x200000}\n"
           "  - {iova: 0x40200000, phys: 0x80000000, size: 0x200000}\n")


def test_aliased_pfns_blame_the_iova_left_behind() -> None:
    # Two IOVAs map the same PFNs; the range cuts the second mapping's 1M section, so VFIO stops
    # there. The PFN check must name 0x40200000 (still mapped), not the first IOVA of the PFN.
    dom = load_domain_text("format: arm-v7s\n" + ALIASED)
    compare(dom, "vfio", 0x40000000, 0x40201000)
    mismatch = simulate(dom, "vfio", 0x40000000, 0x40201000, mode="replay").mismatch
    assert mismatch is not None and mismatch[0] == 0x40200000


def test_range_unaligned_to_the_iommu_page_is_replayed() -> None:
    # DART 16K pages, PAGE_SIZE 4K: __iommu_unmap refuses the whole unaligned call, which only the
    # replay models; the run-based count says it does not cover the range.
    dom = load_domain_text("format: apple-dart\n" + ALIASED)
    compare(dom, "vfio", 0x40000000, 0x40005000)
    r = simulate(dom, "vfio", 0x40000000, 0x40005000)
    assert r.legacy.counts.unmaps == 2 and r.legacy.counts.unpinned_pages == 0 and not r.ok
