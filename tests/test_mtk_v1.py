"""mtk-v1 (drivers/iommu/mtk_iommu_v1.c): flat 4 MiB table, worked by hand from the driver."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats.base import INVALID, LEAF, ConfigError, Translation
from formats.batch import translate_many
from formats.builder import Arena, Builder
from formats.mtk_v1 import MtkV1
from formats.walker import Walker
from iommuctl.domain import load_domain_text
from iommuctl.memory import PhysMem
from tests import format_harness as h


def fmt() -> MtkV1:
    return MtkV1(dict(MtkV1.config_defaults))


def test_geometry() -> None:
    f = fmt()
    # M2701_IOMMU_PGT_SIZE = SZ_4M of u32: 1M entries, index iova >> MT2701_IOMMU_PAGE_SHIFT
    assert f.levels[0].entries == 1 << 20 and f.windows == [(0, 1 << 32)]
    assert f.root_alloc() == [(4 << 20, 4 << 20)]
    assert f.root_from_register(0xA040_0000) == [0xA040_0000]  # REG_MMU_PT_BASE_ADDR = pgt_pa
    with pytest.raises(ConfigError):
        MtkV1({"pa_bits": 33})


def test_descriptor_by_hand() -> None:
    f = fmt()
    lvl = f.levels[0]
    # mtk_iommu_v1_map: (u32)paddr | F_DESC_VALID (0x2) | F_DESC_NONSEC (BIT(3)); prot ignored
    raw = f.encode_leaf(0x9234_5000, 4096, lvl, 0)
    assert raw == 0x9234_500A
    assert f.classify(raw, lvl) == LEAF
    assert f.classify(0x9234_5008, lvl) == INVALID  # F_DESC_VALID clear
    assert f.leaf_phys(raw, lvl) == 0x9234_5000
    assert f.fields(raw, lvl, LEAF) == {"pa": 0x92345, "nonsec": True, "valid": True}
    assert f.reserved_bits(raw | 0x101, lvl, LEAF) == 0x101


def test_legacy_drops_the_offset_and_ignores_valid() -> None:
    f = fmt()
    mem = PhysMem()
    mem.add_bytes(0x1000_0000, bytes(4 << 20))
    mem.write_uint(0x1000_0000 + 5 * 4, 4, 0x7777_7008)  # address but F_DESC_VALID clear
    mem.write_uint(0x1000_0000 + 6 * 4, 4, 0x8888_800A)
    w = Walker(f, mem, [0x1000_0000])
    t = w.translate(0x5123)
    assert not t.mapped
    assert f.legacy_iova_to_phys(0x5123, t) == 0x7777_7000  # entry & ~0xfff, no valid test
    t = w.translate(0x6123)
    assert t.phys == 0x8888_8123
    assert f.legacy_iova_to_phys(0x6123, t) == 0x8888_8000
    assert f.legacy_iova_to_phys(0x7000, w.translate(0x7000)) == 0
    assert f.legacy_iova_to_phys(0x7000, Translation(0x7000)) == 0
    # the batch form reads the same entries again
    res = translate_many(w, np.array([0x5123, 0x6123, 0x7000], dtype=np.uint64))
    vec = f.legacy_iova_to_phys_vec(res.iova, res.phys, res.size, res.level, res.raw)
    assert vec.tolist() == [0x7777_7000, 0x8888_8000, 0]


def test_legacy_vec_reads_0_where_the_entry_is_outside_memory() -> None:
    f = fmt()
    mem = PhysMem()
    mem.add_bytes(0x1000_0000, bytes(4096))  # the first 1024 entries only
    mem.write_uint(0x1000_0000 + 5 * 4, 4, 0x7777_7008)
    Walker(f, mem, [0x1000_0000])
    iova = np.array([0x5123, 0x40_0000, 0xFFFF_F000], dtype=np.uint64)  # entries 5, 1024, 0xfffff
    zeros = np.zeros(3, dtype=np.uint64)
    vec = f.legacy_iova_to_phys_vec(iova, zeros, zeros, zeros.astype(np.int64), zeros)
    assert vec.tolist() == [0x7777_7000, 0, 0]
    assert [f.legacy_iova_to_phys(int(v), Translation(int(v))) for v in iova] == [0x7777_7000, 0, 0]


@pytest.mark.parametrize("name", ["mtk-v1-mt2701-1", "mtk-v1-mt2701-3"])
def test_conformance_case(name: str) -> None:
    case = h.read_case(name)
    win = case["image_window"]
    lo, hi = win["table_phys"], win["table_phys"] + win["table_size"]
    img_lo, img_hi = case["image_base"], case["image_base"] + case["image_size"]
    zeros = "".join(f"  - zero: {{base: {b:#x}, length: {e - b:#x}}}\n"
                    for b, e in ((lo, min(hi, img_lo)), (max(lo, img_hi), hi)) if e > b)
    dom = load_domain_text(
        f"format: mtk-v1\nttbr: {case['roots']['pt_base_addr']:#x}\n"
        f"memory:\n  - file: image.bin\n    base: {img_lo:#x}\n{zeros}", h.CONF / name)
    h.check_domain_probes(dom, case)
    leaves = {(i, p) for i, p, *_ in dom.walker.iter_leaves(0, 1 << 32)}
    want = {(c["iova"] + k * 4096, c["phys"] + k * 4096) for m in case["mappings"] if not m["unmapped"]
            for c in m["chunks"] for k in range(c["count"])}
    assert leaves == want


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(0, (1 << 20) - 16), st.integers(1, 0xFFFF0), st.integers(1, 16)), max_size=5))
def test_round_trip(items: list[tuple[int, int, int]]) -> None:
    f = fmt()
    mem = PhysMem()
    b = Builder(f, Arena(mem, 0x4000_0000))
    used: set[int] = set()
    maps = []
    for slot, ppn, n in items:
        pages = set(range(slot, slot + n))
        if pages & used:
            continue
        used |= pages
        maps.append((slot * 4096, ppn * 4096, n * 4096))
        b.map(slot * 4096, ppn * 4096, n * 4096, 3)
    w = Walker(f, mem, b.roots)
    want = {(i + k, p + k, 4096) for i, p, s in maps for k in range(0, s, 4096)}
    assert {(i, p, s) for i, p, s, *_ in w.iter_leaves(0, 1 << 32)} == want
    for i, _, _ in maps:
        assert w.unmap_leaf(i, 4096) == 4096
        assert not w.translate(i).mapped
