"""Allwinner sun50i IOMMU (drivers/iommu/sun50i-iommu.c): descriptors worked by hand from
sun50i_mk_dte/sun50i_mk_pte and the ACI enum, the kernel's images
(fixtures/conformance/sun50i-h6-*) and builder round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from formats.base import INVALID, IOMMU_READ, IOMMU_WRITE, LEAF, TABLE, ConfigError
from formats.sun50i import Sun50i
from formats.walker import Walker
from tests import format_harness as h
from tests.format_harness import RW, K


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
    return h.load_case(name, Sun50i, "ttb")


@pytest.mark.parametrize("name", ["sun50i-h6-1", "sun50i-h6-3"])
def test_kernel_image(name: str) -> None:
    h.check_kernel_image(*load_case(name))


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
    h.check_builder_matches_kernel(case, Sun50i(dict(case["config"]["user"])), w)


def test_junk_entries_never_crash() -> None:
    h.check_junk_never_crashes(sun(), np.random.default_rng(4), 4096)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(maps=h.slot_mappings_4k(32))
def test_round_trip(maps: list[tuple[int, int, int, int]]) -> None:
    h.check_round_trip(sun(), maps, h.pages_4k(maps))


def test_example_domain_unmaps_to_empty() -> None:
    h.check_example_domain_unmaps_to_empty("sun50i")


@pytest.mark.parametrize("config", [{"pa_bits": 32}])
def test_vectorised_hooks_agree_with_scalar(config: dict) -> None:
    h.check_vec_hooks_agree(Sun50i(config))
