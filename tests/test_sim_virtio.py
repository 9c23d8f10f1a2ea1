"""unmap-sim on virtio-iommu domains (issue 6): no page table, an interval tree of MAP requests.

The teardown runs __iommu_unmap's loop (drivers/iommu/iommu.c __iommu_unmap_domain_pgtbl: one
iommu_pgsize() piece per ops->unmap_pages call) into viommu_unmap_pages
(drivers/iommu/virtio-iommu.c), whose viommu_del_mappings removes whole nodes (more than asked,
or 0 rather than split). A lookup is interval_tree_iter_first: 1 entry read. Counts below are
worked by hand from the caller loops of callers.md (vfio_unmap_unpin, iopt_area_unfill_domain).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import iommuctl
from iommuctl.cli import cli
from iommuctl.domain import load_domain_text
from iommuctl.errors import UserError
from iommuctl.sim import simulate
from iommuctl.sim.core import SimDomain

K, M, G = 1 << 10, 1 << 20, 1 << 30
V = 0x4000_0000  # IOVA of the 2M node; the 4K node follows it at V + 2M, physically elsewhere

TWO = f"""
description: "two virtio nodes: 2M and 4K, IOVA-adjacent, not physically contiguous"
driver: virtio
mappings:
  - {{iova: {V:#x}, phys: 0x80000000, size: 2M, prot: rw}}
  - {{iova: {V + 2 * M:#x}, phys: 0x90000000, size: 4K, prot: rw}}
"""


def two() -> iommuctl.domain.Domain:
    return load_domain_text(TWO, Path("."))


def counts(c: object) -> dict[str, int]:
    d = c.as_dict()  # type: ignore[attr-defined]
    return {k: d[k] for k in ("translations", "entries_read", "unmaps", "syncs", "unpin_calls",
                              "unpinned_pages", "driver_unmaps", "driver_syncs", "warns", "hole_pages")}


def test_two_nodes_are_two_mappings() -> None:
    d = two()
    # nodes_for: iommu_pgsize over the full page_size_mask picks 2M once, then 4K once
    assert list(d.walker.iter_leaves(0, 1 << 64)) == [(V, 0x8000_0000, 2 * M, 1, 3, 3),
                                                      (V + 2 * M, 0x9000_0000, 4 * K, 1, 3, 3)]


def test_vfio_two_nodes_hand_counts() -> None:
    r = simulate(two(), "vfio", V, V + 2 * M + 4 * K)
    assert r.ok and r.mode == "replay" and r.floor == 2  # a range walk visits 2 nodes
    # legacy: translate V, probe V+4K .. V+2M-4K (511, contiguous), probe V+2M (differs): 513;
    # iommu_unmap_fast(V, 2M): iommu_pgsize -> (2M, 1), one viommu_unmap_pages removes the node;
    # then translate V+2M (1) and iommu_unmap_fast(V+2M, 4K): one more. Final vfio_sync_unpin:
    # 1 iommu_iotlb_sync (the core filled the gather: reaches viommu_iotlb_sync), 2 unpins.
    assert counts(r.legacy.counts) == dict(translations=514, entries_read=514, unmaps=2, syncs=1, unpin_calls=2,
                                           unpinned_pages=513, driver_unmaps=2, driver_syncs=1, warns=0,
                                           hole_pages=0)
    # length-aware: translate V -> (phys, 2M): chunk is the whole node; probe V+2M (differs);
    # translate V+2M -> 4K node reaches the end: 3 lookups
    assert counts(r.length_aware.counts) == dict(translations=3, entries_read=3, unmaps=2, syncs=1, unpin_calls=2,
                                                 unpinned_pages=513, driver_unmaps=2, driver_syncs=1, warns=0,
                                                 hole_pages=0)
    assert r.legacy.unpins == [(V, 0x80000, 512), (V + 2 * M, 0x90000, 1)]
    assert r.length_aware.unpins == r.legacy.unpins
    for res in (r.legacy, r.length_aware):
        assert res.sim is not None and res.sim.leaves(0, 1 << 64) == []


def test_iommufd_two_nodes_hand_counts() -> None:
    r = simulate(two(), "iommufd", V, V + 2 * M + 4 * K)
    assert r.ok and r.units == [(V, V + 2 * M + 4 * K)]  # one IOVA-contiguous stretch: one area
    # batch: 513 pages * 12 bytes >= 256: 513 entries, room for all. Legacy batch_from_domain:
    # 513 lookups, 2 batch entries (pfn 0x80000 x512, 0x90000 x1); one iommu_unmap(V, 0x201000):
    # iommu_pgsize -> (2M, 1) then (4K, 1): 2 viommu_unmap_pages; batch_unpin: 2 calls
    assert counts(r.legacy.counts) == dict(translations=513, entries_read=513, unmaps=1, syncs=1, unpin_calls=2,
                                           unpinned_pages=513, driver_unmaps=2, driver_syncs=1, warns=0,
                                           hole_pages=0)
    # length-aware: one lookup per node, the rest of the node added as one batch_add_pfn_num
    assert counts(r.length_aware.counts) == dict(translations=2, entries_read=2, unmaps=1, syncs=1, unpin_calls=2,
                                                 unpinned_pages=513, driver_unmaps=2, driver_syncs=1, warns=0,
                                                 hole_pages=0)
    for res in (r.legacy, r.length_aware):
        assert res.sim is not None and res.sim.leaves(0, 1 << 64) == []


def test_unmap_removes_whole_node_more_than_asked() -> None:
    sim = SimDomain(two(), 4096)
    # iommu_pgsize(V, 1M) -> (1M, 1); viommu_del_mappings removes the 2M node whole and returns
    # 2M >= 1M, so __iommu_unmap returns 2M after one driver call
    assert sim.iommu_unmap(V, M) == 2 * M
    assert (sim.c.unmaps, sim.c.driver_unmaps, sim.c.syncs, sim.c.driver_syncs) == (1, 1, 1, 1)
    assert sim.leaves(0, 1 << 64) == [(V + 2 * M, 0x9000_0000, 4 * K)]


def test_unmap_refuses_to_split_a_node() -> None:
    sim = SimDomain(two(), 4096)
    # iommu_pgsize(V+4K, 2M-4K) -> (4K, 1): the 2M node starts before V+4K: "Trying to split a
    # mapping?" -> 0, and __iommu_unmap stops after that one call
    assert sim.iommu_unmap(V + 4 * K, 2 * M - 4 * K) == 0
    assert (sim.c.driver_unmaps, sim.c.driver_syncs) == (1, 0)  # gather empty: no viommu_iotlb_sync
    assert len(sim.leaves(0, 1 << 64)) == 2


def test_vfio_inside_a_node_fails_the_check() -> None:
    r = simulate(two(), "vfio", V + 4 * K, V + 2 * M + 4 * K)
    # legacy: translate V+4K, probes V+8K .. V+2M-4K (510) and V+2M (differs): 512 lookups;
    # iommu_unmap_fast -> 0: vfio_sync_unpin (1 sync, gather empty), unmap_unpin_slow:
    # iommu_unmap -> 0 (unmap + sync) -> WARN and stop
    c = r.legacy.counts
    assert (c.translations, c.unmaps, c.syncs, c.driver_unmaps, c.driver_syncs, c.unpin_calls) == (512, 2, 2, 2, 0, 0)
    assert r.legacy.stop == V + 4 * K
    assert not r.ok and r.mismatch is not None and r.mismatch[0] == V + 4 * K


@pytest.mark.parametrize("caller", ["vfio", "iommufd"])
def test_bundled_example_torn_down(caller: str) -> None:
    d = iommuctl.load_domain("example:virtio")
    maps = [(v, v + s) for v, _, s, _, _, _ in d.walker.iter_leaves(0, 1 << 64)]
    lo, hi = maps[0][0], maps[-1][1]
    # each mapping item a unit of its own (a vfio_dma, an iopt_area): 5M, 1G, 28K, 256K
    areas = [(0x1_0000_0000, 0x1_0050_0000), (0x2_0000_0000, 0x2_4000_0000), (0x3_0000_1000, 0x3_0000_8000),
             (0x4_0000_0000, 0x4_0004_0000)]
    r = simulate(d, caller, lo, hi, areas, mode="replay")
    assert r.ok, r.mismatch
    assert r.mode == "replay"
    for res in (r.legacy, r.length_aware):
        assert res.sim is not None and res.sim.leaves(0, 1 << 64) == []  # the domain is empty afterwards
        assert res.counts.unpinned_pages == sum(b - a for a, b in areas) // 4096
    assert r.length_aware.counts.translations < r.legacy.counts.translations
    pages = sum(b - a for a, b in areas) // 4096
    if caller == "iommufd":
        assert r.legacy.counts.translations == pages  # batch_from_domain: one lookup per page
    else:
        assert r.legacy.counts.translations > pages  # plus each chunk's failing contiguity probe
    assert r.floor == len(maps)
    assert len(d.walker) == len(maps)  # type: ignore[arg-type]  # virtio's mapping list is Sized; the untouched domain


def test_cli_example_range_and_whole_space() -> None:
    res = CliRunner().invoke(cli, ["unmap-sim", "example:virtio", "--range", "0x100000000+5M", "--json"])
    assert res.exit_code == 0, res.output
    assert res.output.count('"ok": true') == 2  # vfio and iommufd
    # the default range is all of the 64-bit input space: too many pages to replay
    res = CliRunner().invoke(cli, ["unmap-sim", "example:virtio", "--caller", "vfio"])
    assert isinstance(res.exception, UserError) and "--range" in str(res.exception)


def test_runs_mode_refused() -> None:
    with pytest.raises(UserError, match="no page table|none"):
        simulate(two(), "vfio", V, V + 2 * M, mode="runs")


def test_fsl_pamu_refused() -> None:
    d = iommuctl.load_domain("example:fsl-pamu")
    with pytest.raises(UserError, match="fsl-pamu has no map or unmap ops"):
        simulate(d, "vfio", 0, 1 << 30)
