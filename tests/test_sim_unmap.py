"""The kernel semantics under the callers: io-pgtable unmap_pages (drivers/iommu/io-pgtable-arm.c
__arm_lpae_unmap), the iommupt unmap_range (generic_pt/iommu_pt.h __unmap_range), the core's
split (drivers/iommu/iommu.c __iommu_unmap_domain_pgtbl + iommu_pgsize), and what the callers do
when they meet a partial block, a hole or physical address 0. Values worked by hand in each test.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from iommuctl.domain import load_domain_text
from iommuctl.sim import simulate
from iommuctl.sim.core import SimDomain

K, M = 1 << 10, 1 << 20
V = 0x4000_0000


def domain(mappings: str, head: str = "format: arm-lpae-s1") -> object:
    return load_domain_text(f"{head}\nmappings:\n{mappings}")


def test_2m_request_over_a_table_of_pages_clears_the_table_pointer() -> None:
    # phys 4K-offset: iommu_map lays 2M out as 512 4K pages; unmap passes paddr = iova, so
    # iommu_pgsize picks 2M, and __arm_lpae_unmap at level 2 finds a table entry: it clears
    # it (and frees the table), returning 2M in one unmap_pages call.
    d = domain(f"  - {{iova: {V:#x}, phys: 0x80001000, size: 2M}}")
    r = simulate(d, "vfio", V, V + 2 * M, mode="replay")
    assert r.ok
    for algo in (r.legacy, r.length_aware):
        c = algo.counts
        assert (c.unmaps, c.driver_unmaps, c.syncs, c.driver_syncs, c.unpin_calls, c.unpinned_pages) == \
            (1, 1, 1, 1, 1, 512)
        assert algo.unpins == [(V, 0x80001, 512)]
        sim = algo.sim
        assert sim is not None
        t = sim.walker.translate(V)
        assert not t.mapped and t.entries_read == 3  # L0, L1 table entries, then the cleared L2 entry
    assert r.legacy.counts.translations == 512 and r.length_aware.counts.translations == 512


def test_partial_block_unmap_is_refused_and_vfio_stops() -> None:
    # [V+4K, V+2M) over one 2M block: unmap_pages(4K, 511) meets the level-2 block ("Unmap of a
    # partial large IOPTE is not allowed"): 0. The fast path fails, vfio_sync_unpin syncs an
    # empty gather, the slow iommu_unmap fails too (unmap + sync), WARN, break.
    d = domain(f"  - {{iova: {V:#x}, phys: 0x80000000, size: 2M}}")
    r = simulate(d, "vfio", V + 4 * K, V + 2 * M, mode="replay")
    leg, la = r.legacy.counts, r.length_aware.counts
    assert leg.translations == 511  # A + 510 probes, the scan ends at the dma's end
    assert la.translations == 1  # the PTE reaches the end
    for c in (leg, la):
        assert (c.unmaps, c.syncs, c.driver_syncs, c.unpin_calls, c.driver_unmaps) == (2, 2, 0, 0, 2)
    assert r.legacy.stop == V + 4 * K
    assert not r.ok and r.mismatch is not None
    assert r.mismatch[0] == V + 4 * K and "leaves 0x200000 mapped" in r.mismatch[1]


def test_cli_exit_1_names_the_first_iova(tmp_path: object) -> None:
    from iommuctl.cli import cli

    p = tmp_path / "d.yaml"  # type: ignore[operator]
    p.write_text(f"format: arm-lpae-s1\nmappings:\n  - {{iova: {V:#x}, phys: 0x80000000, size: 2M}}\n")
    res = CliRunner().invoke(cli, ["unmap-sim", str(p), "--range", f"{V + 4 * K:#x}:{V + 2 * M:#x}",
                                   "--caller", "vfio", "--json"])
    assert res.exit_code == 1
    out = json.loads(res.output.splitlines()[0])
    assert out["ok"] is False and out["mismatch"]["iova"] == f"{V + 4 * K:#x}"


def test_unmap_pages_stops_at_the_end_of_a_table() -> None:
    # 16K of 4K pages across the 2M boundary at V+2M: one iommu_unmap_fast(V+2M-8K, 16K);
    # iommu_pgsize gives 4K x 4 (the 2M boundary is not reachable with a whole 2M page), and
    # arm_lpae_max_entries cuts the first call at the table's end: 2 calls of 2 pages.
    d = domain(f"  - {{iova: {V + 2 * M - 8 * K:#x}, phys: 0x90000000, size: 16K}}")
    r = simulate(d, "vfio", V + 2 * M - 8 * K, V + 2 * M + 8 * K, mode="replay")
    assert r.ok
    assert (r.legacy.counts.unmaps, r.legacy.counts.driver_unmaps) == (1, 2)
    assert r.legacy.unpins == [(V + 2 * M - 8 * K, 0x90000, 4)]


def test_iommupt_unmap_range_semantics() -> None:
    d = domain(f"  - {{iova: {V:#x}, phys: 0x80000000, size: 2M}}\n"
               f"  - {{iova: {V + 2 * M:#x}, phys: 0x90000000, size: 16K}}")
    sim = SimDomain(d, 4096)
    sim.iommupt = True
    # a start inside a large IOPTE: -EINVAL, nothing unmapped
    assert sim.unmap_range(V + 4 * K, 4 * K) == 0
    # an end inside it: the whole IOPTE goes and is counted whole
    assert sim.unmap_range(V, 4 * K) == 2 * M
    assert not sim.walker.translate(V + M).mapped
    # stops at the first empty entry
    assert sim.unmap_range(V + 2 * M, 32 * K) == 16 * K
    assert not sim.walker.translate(V + 2 * M + 12 * K).mapped


def test_iommupt_fully_covered_table_is_cleared() -> None:
    d = domain(f"  - {{iova: {V:#x}, phys: 0x80001000, size: 2M}}")
    sim = SimDomain(d, 4096)
    sim.iommupt = True
    assert sim.unmap_range(V, 2 * M) == 2 * M
    assert sim.walker.translate(V).entries_read == 3  # the level-2 table pointer is gone too


def test_iommufd_area_with_a_hole_pushes_pfn_0() -> None:
    # batch_from_domain takes a 0 translation as pfn 0 (one batch entry per hole page, as
    # 0 != 0 + 1); iommu_unmap over the batch stops at the hole (WARN in iommu_unmap_nofail),
    # leaving the rest mapped although it is unpinned.
    d = domain(f"  - {{iova: {V:#x}, phys: 0x80000000, size: 16K}}\n"
               f"  - {{iova: {V + 32 * K:#x}, phys: 0x90000000, size: 16K}}")
    r = simulate(d, "iommufd", V, V + 48 * K, [(V, V + 48 * K)], mode="replay")
    leg = r.legacy
    assert leg.counts.translations == 12 and leg.counts.unmaps == 1
    assert [pfn for _, pfn, _ in leg.unpins] == [0x80000, 0, 0, 0, 0, 0x90000]
    assert leg.counts.hole_pages == 4
    assert not r.ok and r.mismatch is not None and r.mismatch[0] == V + 16 * K


def test_physical_address_0_looks_like_a_hole_to_the_legacy_loop() -> None:
    # iova_to_phys returns 0 for a page mapped at physical 0: legacy VFIO WARNs and skips it,
    # so it stays mapped and pinned; the length-aware loop (PHYS_ADDR_MAX on a miss) does not.
    d = domain(f"  - {{iova: {V:#x}, phys: 0x0, size: 16K}}")
    r = simulate(d, "vfio", V, V + 16 * K, mode="replay")
    assert r.legacy.unpins == [(V + 4 * K, 1, 3)]
    assert r.length_aware.unpins == [(V, 0, 4)]
    assert not r.ok and r.mismatch is not None and r.mismatch[0] == V


def test_panthor_short_unmap_probes_from_the_op_start() -> None:
    # one VMA (--area) [B-8K, B+16K), B 2M-aligned, hole at B+8K. Step 2 unmap_pages(B, 4K, 4) clears B and
    # B+4K and returns 8K; the kernel then probes iova + unmapped_sz with iova the op's start
    # (B-8K): B (just cleared), B+4K (cleared) -> 16K = the whole step: B+12K stays mapped.
    b = 0x1000_0000
    d = domain(f"  - {{iova: {b - 8 * K:#x}, phys: 0x80000000, size: 16K}}\n"
               f"  - {{iova: {b + 12 * K:#x}, phys: 0x90000000, size: 4K}}", "driver: panfrost")
    r = simulate(d, "panthor", b - 8 * K, b + 16 * K, [(b - 8 * K, b + 16 * K)], mode="replay")
    for algo in (r.legacy, r.length_aware):
        c = algo.counts
        assert (c.translations, c.unmaps, c.syncs) == (3, 2, 1)
    assert not r.ok and r.mismatch is not None and r.mismatch[0] == b + 12 * K


def test_panthor_hole_in_the_first_step() -> None:
    b = 0x1000_0000
    d = domain(f"  - {{iova: {b:#x}, phys: 0x80000000, size: 8K}}\n"
               f"  - {{iova: {b + 12 * K:#x}, phys: 0x90000000, size: 4K}}", "driver: panfrost")
    r = simulate(d, "panthor", b, b + 16 * K, [(b, b + 16 * K)], mode="replay")
    c = r.legacy.counts
    assert (c.translations, c.unmaps) == (2, 2)  # B+8K missed, B+12K found; then unmap 4K x 1
    assert r.ok


def test_selftest_stops_at_the_first_hole() -> None:
    d = domain(f"  - {{iova: {V:#x}, phys: 0x80000000, size: 2M}}")
    for mode in ("replay", "runs"):
        r = simulate(d, "iommufd-selftest", V, V + 2 * M + 4 * K, mode=mode)
        assert r.legacy.counts.translations == 513
        assert r.length_aware.counts.translations == 2
        assert r.legacy.stop == V + 2 * M
        assert r.ok


def test_write_after_image_loads_back(tmp_path: object) -> None:
    """--write-after: the table segments as the teardown leaves them, and a domain YAML for them."""
    from iommuctl.cli import cli

    d = tmp_path / "d.yaml"  # type: ignore[operator]
    d.write_text(f"format: arm-lpae-s1\nmappings:\n  - {{iova: {V:#x}, phys: 0x80000000, size: 4M}}\n"
                 f"  - {{iova: {V + 4 * M:#x}, phys: 0x90001000, size: 2M}}\n"
                 f"  - {{iova: 0x50000000, phys: 0xa0000000, size: 64K}}\n")
    out = tmp_path / "after.bin"  # type: ignore[operator]
    res = CliRunner().invoke(cli, ["unmap-sim", str(d), "--range", f"{V:#x}+6M", "--caller", "vfio",
                                   "--write-after", str(out), "--json"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    info = json.loads(lines[-1])
    (tmp_path / "after.yaml").write_text(info["yaml"])  # type: ignore[operator]
    after = load_domain_text(info["yaml"], str(tmp_path))
    assert not after.translate(V).mapped and not after.translate(V + 5 * M).mapped
    # the 2M of 4K pages went by one 2M request: its level-2 table pointer is cleared
    assert after.translate(V + 4 * M).entries_read == 3
    t = after.translate(0x50000000)
    assert t.mapped and t.phys == 0xa0000000  # outside the range: untouched


def test_page_size_16k_steps_and_counts() -> None:
    # a 16K-PAGE_SIZE kernel on 4K IOMMU pages: the legacy loop steps 16K (callers.md: P)
    d = domain(f"  - {{iova: {V:#x}, phys: 0x80000000, size: 1M}}")
    r = simulate(d, "vfio", V, V + M, page=16 * K)
    assert r.ok
    assert r.legacy.counts.translations == 64  # 1M / 16K, one extent, no failing probe
    assert r.length_aware.counts.translations == 256  # one per 4K PTE
    assert r.legacy.unpins == [(V, 0x80000000 >> 14, 64)]  # pfns in 16K units


def test_shared_table_is_an_error_not_a_hang() -> None:
    """Every L0 entry pointing at the one L1 table (a fuzzed image): the run count's table walk
    refuses a table reached twice, as the shared walker does, instead of walking 512 copies."""
    import pytest

    from iommuctl.errors import UserError

    d = domain(f"  - {{iova: {V:#x}, phys: 0x80000000, size: 2M}}")
    root = d.roots[0]  # type: ignore[attr-defined]
    raw = d.mem.read_uint(root, 8)  # type: ignore[attr-defined]
    for i in range(1, 512):
        d.mem.write_uint(root + 8 * i, 8, raw)  # type: ignore[attr-defined]
    for caller in ("vfio", "iommufd"):
        with pytest.raises(UserError, match="reached twice"):
            simulate(d, caller, 0, 1 << 48, mode="runs")


@pytest.mark.parametrize("size", ["3000", "6K", "512"])
def test_page_size_must_be_a_kernel_page_size(size: str) -> None:
    from iommuctl.cli import main

    with pytest.raises(SystemExit) as e:
        main(["unmap-sim", "example:smmuv3-4k", "--page-size", size])
    assert e.value.code == 2
