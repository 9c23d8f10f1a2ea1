"""virtio-iommu (drivers/iommu/virtio-iommu.c): the guest's interval tree of MAP requests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats.base import IOMMU_MMIO, IOMMU_READ, IOMMU_WRITE, ConfigError, Step
from formats.builder import iommu_pgsize
from formats.virtio import MAP_FLAGS, Virtio, flags_to_prot, prot_to_flags
from iommuctl.domain import load_domain_text

U64 = (1 << 64) - 1


def fmt(**cfg: object) -> Virtio:
    return Virtio({**Virtio.config_defaults, **cfg})


def test_flags_by_hand() -> None:
    # viommu_map_pages: VIRTIO_IOMMU_MAP_F_READ BIT(0), _WRITE BIT(1), _MMIO BIT(2); CACHE etc dropped
    assert prot_to_flags(IOMMU_READ | IOMMU_WRITE | 4) == 0x3
    assert prot_to_flags(IOMMU_WRITE | IOMMU_MMIO) == 0x6
    assert flags_to_prot(0x5) == IOMMU_READ | IOMMU_MMIO
    assert MAP_FLAGS.decode(0x6) == {"mmio": True, "write": True, "read": False}
    assert MAP_FLAGS.encode(read=1, write=1) == 0x3


def test_config() -> None:
    f = fmt()
    assert f.windows == [(0, 1 << 64)] and f.page_sizes[0] == 4096 and len(f.page_sizes) == 52
    assert fmt(page_size_mask=0x40201000).page_sizes == [0x1000, 0x200000, 0x40000000]
    assert fmt(input_start=0x1000, input_end=0xFFFF_FFFF).windows == [(0x1000, 1 << 32)]
    with pytest.raises(ConfigError):
        fmt(page_size_mask=0)
    with pytest.raises(ConfigError):
        fmt(page_size_mask=1 << 21)  # granule above PAGE_SIZE: viommu_domain_alloc_paging refuses
    with pytest.raises(ConfigError):
        fmt(input_start=10, input_end=5)


def test_one_node_per_map_pages_call() -> None:
    f = fmt()
    # iommu_pgsize with every size >= 4K: 0x1000+0x3000 at 0x1000 -> 0x1000 then 0x2000
    assert f.nodes_for(0x1000, 0x81000, 0x3000, IOMMU_READ | IOMMU_WRITE) == [
        (0x1000, 0x1FFF, 0x81000, 3), (0x2000, 0x3FFF, 0x82000, 3)]
    # 5M at 4M-aligned addresses: a 4M node and a 1M node
    assert f.nodes_for(0x40_0000, 0x80_0000, 5 << 20, IOMMU_READ) == [
        (0x40_0000, 0x7F_FFFF, 0x80_0000, 1), (0x80_0000, 0x8F_FFFF, 0xC0_0000, 1)]
    # a 2M|4K device: 2M+4K at 2M-aligned addresses
    g = fmt(page_size_mask=0x201000)
    assert g.nodes_for(0x20_0000, 0x40_0000, 0x20_1000, IOMMU_READ) == [
        (0x20_0000, 0x3F_FFFF, 0x40_0000, 1), (0x40_0000, 0x40_0FFF, 0x60_0000, 1)]
    with pytest.raises(ValueError):
        f.nodes_for(0x1000, 0x1000, 0x1000, IOMMU_MMIO | IOMMU_READ)  # no VIRTIO_IOMMU_F_MMIO
    assert fmt(mmio=True).nodes_for(0x1000, 0x1000, 0x1000, IOMMU_MMIO)[0][3] == 0x4
    with pytest.raises(ValueError):
        f.nodes_for(0x1800, 0x1000, 0x1000, IOMMU_READ)  # unaligned
    with pytest.raises(ValueError):
        fmt(input_end=0xFFFF).nodes_for(0xF000, 0, 0x2000, IOMMU_READ)  # outside input_range
    with pytest.raises(ValueError):
        f.tableless_walker([(0x1000, 0, 0x2000, 1), (0x2000, 0, 0x1000, 1)])  # overlap


def test_translate_is_the_whole_node() -> None:
    dom = load_domain_text("format: virtio\nmappings:\n"
                           "  - {iova: 0x100000000, phys: 0x40000000, size: 5M, prot: rw}\n"
                           "  - {iova: 0x200000000, phys: 0x80000000, size: 4K, prot: r}\n")
    assert dom.iova_to_phys_length(0x100123456) == (0x40123456, 4 << 20)
    assert dom.iova_to_phys_length(0x100412345) == (0x40412345, 1 << 20)
    assert dom.iova_to_phys_length(0x100500000) == (U64, 0)
    assert dom.iova_to_phys(0x100500000) == 0  # viommu_iova_to_phys: 0 with no node
    t = dom.translate(0x200000010)
    assert (t.phys, t.size, t.prot, t.raw) == (0x80000010, 4096, IOMMU_READ, 1)
    steps: list[Step] = []
    dom.walker.translate(0x100412345, steps)
    assert steps[0].kind == "mapping" and steps[0].fields["virt_start"] == 0x100400000
    assert steps[0].fields["virt_end"] == 0x1004FFFFF and steps[0].fields["read"] is True
    leaves = list(dom.walker.iter_leaves(0, 1 << 64))
    assert [(i, p, s) for i, p, s, *_ in leaves] == [
        (0x100000000, 0x40000000, 4 << 20), (0x100400000, 0x40400000, 1 << 20), (0x200000000, 0x80000000, 4096)]
    assert [(i, s) for i, _, s, *_ in dom.walker.iter_leaves(0x100500000, 0x200000001)] == [(0x200000000, 4096)]
    assert [(i, s) for i, _, s, *_ in dom.walker.iter_leaves(0x100400100, 0x100400200)] == [(0x100400000, 1 << 20)]


def test_unmap_removes_whole_nodes() -> None:
    f = fmt()
    w = f.tableless_walker([(0x0, 0x10_0000, 0x3000, 3)])  # nodes 0x0-0x1fff (8K), 0x2000-0x2fff
    # viommu_del_mappings: a node starting before iova stops the loop; unmap_pages then returns 0
    assert w.unmap_leaf(0x1000, 0x1000) == 0
    assert w.translate(0x1000).mapped
    # unmapping 4K at 0 removes the whole 8K node: more than asked
    assert w.unmap_leaf(0x0, 0x1000) == 0x2000
    assert not w.translate(0x1000).mapped and w.translate(0x2000).mapped
    assert w.unmap_leaf(0x2000, 0x1000) == 0x1000
    assert not list(w.iter_leaves(0, 1 << 64)) and len(w) == 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 1 << 20), st.integers(1, 1 << 12)),
                max_size=6),
       st.sampled_from([0xFFFF_FFFF_FFFF_F000, 0x4020_1000, 0x1000]))
def test_round_trip(items: list[tuple[int, int, int]], mask: int) -> None:
    f = fmt(page_size_mask=mask)
    maps, end = [], 0
    for gap, ppn, n in items:
        iova = end + gap * 4096
        maps.append((iova, ppn * 4096, n * 4096, IOMMU_READ))
        end = iova + n * 4096
    w = f.tableless_walker(maps)
    want = []
    for iova, phys, size, _ in maps:  # the nodes are the core's map_pages calls
        while size:
            pg, cnt = iommu_pgsize(mask, iova, phys, size)
            want.append((iova, phys, pg * cnt))
            iova, phys, size = iova + pg * cnt, phys + pg * cnt, size - pg * cnt
    assert [(i, p, s) for i, p, s, *_ in w.iter_leaves(0, 1 << 64)] == want
    for i, p, s in want:
        assert w.translate(i + s - 1).phys == p + s - 1
        assert w.translate(i).size == s


def test_batch_by_hand() -> None:
    # nodes [0x1000, 0x3000) rw (one map_pages call of two 4K pages) and [0x5000, 0x6000) r
    from formats.batch import translate_many

    f = fmt(page_size_mask=0x1000)
    rw = IOMMU_READ | IOMMU_WRITE
    w = f.tableless_walker([(0x1000, 0x9_0000, 0x2000, rw), (0x5000, 0x7_0000, 0x1000, IOMMU_READ)])
    iova = np.array([0x0, 0x1000, 0x2fff, 0x3000, 0x5123, 0xFFFF_FFFF_FFFF_FFFF], dtype=np.uint64)
    res = translate_many(w, iova)  # type: ignore[arg-type]
    assert res.phys.tolist() == [U64, 0x9_0000, 0x9_0000 + 0x1fff, U64, 0x7_0123, U64]
    assert res.size.tolist() == [0, 0x2000, 0x2000, 0, 0x1000, 0]  # the whole node
    assert res.prot.tolist() == [0, 3, 3, 0, IOMMU_READ, 0]
    assert res.raw.tolist() == [0, 3, 3, 0, 1, 0]  # VIRTIO_IOMMU_MAP_F_READ | _WRITE, READ
    legacy = f.legacy_iova_to_phys_vec(res.iova, res.phys, res.size, res.level, res.raw)
    assert legacy.tolist() == [0, 0x9_0000, 0x9_0000 + 0x1fff, 0, 0x7_0123, 0]  # 0 on a miss


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1 << 8), st.integers(0, 1 << 20), st.integers(1, 1 << 6)), max_size=8),
       st.sampled_from([0xFFFF_FFFF_FFFF_F000, 0x4020_1000, 0x1000]),
       st.lists(st.integers(0, 1 << 22), max_size=60), st.integers(0, 1 << 16))
def test_batch_equals_one_by_one(items: list[tuple[int, int, int]], mask: int, probes: list[int],
                                 unmap_at: int) -> None:
    # the batch path (one searchsorted) against translate, with some nodes unmapped (dead)
    from formats.base import Translation
    from formats.batch import translate_many

    f = fmt(page_size_mask=mask)
    maps, end = [], 0
    for gap, ppn, n in items:
        iova = end + gap * 4096
        maps.append((iova, ppn * 4096, n * 4096, IOMMU_READ | (IOMMU_WRITE if gap & 1 else 0)))
        end = iova + n * 4096
    w = f.tableless_walker(maps)
    w.unmap_leaf(unmap_at * 4096, 4096)
    iovas = probes + [i for i, *_ in maps] + [i + s - 1 for i, _, s, _ in maps]
    res = translate_many(w, np.array(iovas, dtype=np.uint64))  # type: ignore[arg-type]
    legacy = f.legacy_iova_to_phys_vec(res.iova, res.phys, res.size, res.level, res.raw)
    for k, v in enumerate(iovas):
        t: Translation = w.translate(v)
        got = (int(res.phys[k]), int(res.size[k]), int(res.prot[k]))
        assert got == (t.phys, t.size, t.prot), hex(v)
        if t.mapped:
            assert (int(res.level[k]), int(res.raw[k]), int(res.entry[k])) == (t.level, t.raw, t.entry)
        assert int(legacy[k]) == f.legacy_iova_to_phys(v, t)
