"""ARM LPAE family (formats/arm_lpae.py) against values derived from the kernel source:
drivers/iommu/io-pgtable-arm.c and io-pgtable-arm.h (v7.1 merge window, blob 0208e589).

Descriptor values are worked out here by hand from the kernel's ARM_LPAE_PTE_* macros (restated
below with their names; the test does not import the format's own constants), then checked
encoded (Builder / encode_leaf) and decoded (Walker / hooks / construct schema). The kernel
conformance cases in fixtures/conformance (arm64-*, arm32-*, mali-*) check geometry, register
values, every probe, the kernel's own pgtable_walk() descriptors and the leaf set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formats import drivers, get_format
from formats.arm_lpae import DRIVERS, ArmLpae
from formats.base import (
    INVALID,
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
    LEAF,
    PHYS_ADDR_MAX,
    TABLE,
    ConfigError,
    Step,
    WalkError,
)
from formats.builder import Arena, Builder, iommu_pgsize
from formats.walker import Walker
from iommuctl.domain import load_domain_text
from iommuctl.memory import PhysMem

from .mapping_strategy import draw_layout

# --- the kernel's macros (io-pgtable-arm.c), restated ----------------------------------------
ARM_LPAE_PTE_TYPE_BLOCK = 1
ARM_LPAE_PTE_TYPE_TABLE = 3
ARM_LPAE_PTE_TYPE_PAGE = 3
ARM_LPAE_PTE_NSTABLE = 1 << 63
ARM_LPAE_PTE_XN = 3 << 53
ARM_LPAE_PTE_DBM = 1 << 51
ARM_LPAE_PTE_AF = 1 << 10
ARM_LPAE_PTE_SH_OS = 2 << 8
ARM_LPAE_PTE_SH_IS = 3 << 8
ARM_LPAE_PTE_NS = 1 << 5
ARM_LPAE_PTE_SW_SYNC = 1 << 55
ARM_LPAE_PTE_AP_UNPRIV = 1 << 6
ARM_LPAE_PTE_AP_RDONLY = 1 << 7
ARM_LPAE_PTE_ATTRINDX_SHIFT = 2
ARM_LPAE_PTE_nG = 1 << 11
ARM_LPAE_PTE_HAP_READ = 1 << 6
ARM_LPAE_PTE_HAP_WRITE = 2 << 6
ARM_LPAE_PTE_MEMATTR_FWB_WB = 0x6 << 2
ARM_LPAE_PTE_MEMATTR_OIWB = 0xF << 2
ARM_LPAE_PTE_MEMATTR_NC = 0x5 << 2
ARM_LPAE_PTE_MEMATTR_DEV = 0x1 << 2
ARM_LPAE_MAIR_ATTR_IDX_CACHE = 1
ARM_LPAE_MAIR_ATTR_IDX_DEV = 2
RW = IOMMU_READ | IOMMU_WRITE

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "conformance"
KERNEL_FORMATS = {"ARM_64_LPAE_S1": "arm-lpae-s1", "ARM_64_LPAE_S2": "arm-lpae-s2",
                  "ARM_32_LPAE_S1": "arm-lpae-32-s1", "ARM_32_LPAE_S2": "arm-lpae-32-s2",
                  "ARM_MALI_LPAE": "arm-mali-lpae"}
CASES = sorted(p for p in FIXTURES.iterdir()
               if (p / "case.json").exists() and p.name.startswith(("arm64-", "arm32-", "mali-")))


def fmt(fid: str, **cfg: Any) -> ArmLpae:
    cls = get_format(fid)
    full = dict(cls.config_defaults)
    full.update(cfg)
    f = cls(full)
    assert isinstance(f, ArmLpae)
    return f


def builder(f: ArmLpae, base: int = 0x8000_0000) -> Builder:
    return Builder(f, Arena(PhysMem(), base))


def lvl(f: ArmLpae, num: int) -> Any:
    return f._level(num)


def one_leaf(f: ArmLpae, iova: int, phys: int, size: int, prot: int) -> tuple[int, Step]:
    """Map one page with the Builder; return (raw leaf as the walker reads it, its explain step)."""
    b = builder(f)
    b.map(iova, phys, size, prot)
    steps: list[Step] = []
    t = b.walker.translate(iova + size - 1, steps)
    assert t.mapped and t.size == size and t.phys == phys + size - 1
    assert t.raw is not None
    return t.raw, steps[-1]


# --- hand-worked descriptors, every granule, stage and variant ----------------------------------

def test_4k_s1_page_rw_cache() -> None:
    # arm_lpae_prot_to_pte(S1, READ|WRITE|CACHE): nG; not RDONLY; AP_UNPRIV (no PRIV);
    # ATTRINDX = IDX_CACHE; SH_IS (CACHE); AF. __arm_lpae_init_pte: TYPE_PAGE at level 3.
    phys = 0x8_1234_5000
    want = (phys | ARM_LPAE_PTE_nG | ARM_LPAE_PTE_AP_UNPRIV
            | ARM_LPAE_MAIR_ATTR_IDX_CACHE << ARM_LPAE_PTE_ATTRINDX_SHIFT
            | ARM_LPAE_PTE_SH_IS | ARM_LPAE_PTE_AF | ARM_LPAE_PTE_TYPE_PAGE)
    assert want == 0x0000_0008_1234_5F47
    f = fmt("arm-lpae-s1")
    raw, step = one_leaf(f, 0x7f_0000_3000, phys, 4096, RW | IOMMU_CACHE)
    assert raw == want
    assert step.level == 3 and step.kind == "page"
    assert step.fields == {"xn": 0, "contiguous": False, "dbm": False, "pa_47_12": phys >> 12, "ng": True,
                           "af": True, "sh": 3, "ap_rdonly": False, "ap_unpriv": True, "ns": False,
                           "attrindx": 1, "type": 3}
    assert f.leaf_prot(want, lvl(f, 3)) == RW | IOMMU_CACHE
    assert f.reserved_bits(want, lvl(f, 3), LEAF) == 0


def test_4k_s1_2m_block_readonly_noexec() -> None:
    # READ|NOEXEC: AP_RDONLY (read without write), AP_UNPRIV, SH_OS (no CACHE), XN, TYPE_BLOCK.
    phys = 0x4020_0000
    want = (phys | ARM_LPAE_PTE_nG | ARM_LPAE_PTE_AP_RDONLY | ARM_LPAE_PTE_AP_UNPRIV | ARM_LPAE_PTE_SH_OS
            | ARM_LPAE_PTE_AF | ARM_LPAE_PTE_XN | ARM_LPAE_PTE_TYPE_BLOCK)
    assert want == 0x0060_0000_4020_0EC1
    f = fmt("arm-lpae-s1")
    raw, step = one_leaf(f, 0x1_0020_0000, phys, 2 << 20, IOMMU_READ | IOMMU_NOEXEC)
    assert raw == want and step.level == 2 and step.kind == "block"
    assert f.leaf_prot(raw, lvl(f, 2)) == IOMMU_READ | IOMMU_NOEXEC
    assert step.fields["pa_47_21"] == phys >> 21


def test_4k_s1_1g_block_mmio_priv() -> None:
    # READ|WRITE|MMIO|PRIV: no AP bits at all, ATTRINDX = IDX_DEV, SH_OS, at level 1.
    phys = 0x80_4000_0000
    want = (phys | ARM_LPAE_PTE_nG | ARM_LPAE_MAIR_ATTR_IDX_DEV << ARM_LPAE_PTE_ATTRINDX_SHIFT
            | ARM_LPAE_PTE_SH_OS | ARM_LPAE_PTE_AF | ARM_LPAE_PTE_TYPE_BLOCK)
    assert want == 0x0000_0080_4000_0E09
    f = fmt("arm-lpae-s1")
    raw, step = one_leaf(f, 0x40_0000_0000, phys, 1 << 30, RW | IOMMU_MMIO | IOMMU_PRIV)
    assert raw == want and step.level == 1
    assert f.leaf_prot(raw, lvl(f, 1)) == RW | IOMMU_MMIO | IOMMU_PRIV


def test_16k_s1_page_and_32m_block() -> None:
    f = fmt("arm-lpae-s1", granule=16384, ias=36, oas=40)
    assert [(lv.num, lv.shift, lv.bits) for lv in f.levels] == [(2, 25, 11), (3, 14, 11)]
    phys = 0xAB_CDEF_C000  # 16K aligned
    want = (phys | ARM_LPAE_PTE_nG | ARM_LPAE_PTE_AP_UNPRIV | ARM_LPAE_PTE_SH_OS | ARM_LPAE_PTE_AF
            | ARM_LPAE_PTE_TYPE_PAGE)
    assert want == 0x0000_00AB_CDEF_CE43
    raw, step = one_leaf(f, 0x4000, phys, 16384, RW)
    assert raw == want and step.level == 3 and step.fields["pa_47_14"] == phys >> 14
    blk = 0x12_3600_0000
    want_blk = (blk | ARM_LPAE_PTE_nG | ARM_LPAE_PTE_AP_UNPRIV | ARM_LPAE_PTE_SH_IS | ARM_LPAE_PTE_AF
                | ARM_LPAE_MAIR_ATTR_IDX_CACHE << ARM_LPAE_PTE_ATTRINDX_SHIFT | ARM_LPAE_PTE_TYPE_BLOCK)
    assert want_blk == 0x0000_0012_3600_0F45
    raw, step = one_leaf(f, 0x6000000, blk, 32 << 20, RW | IOMMU_CACHE)
    assert raw == want_blk and step.level == 2 and step.kind == "block"


def test_64k_s1_52bit_page_and_table() -> None:
    # paddr_to_iopte: PA[51:48] folded into bits 15:12; iopte_to_paddr rotates them back.
    f = fmt("arm-lpae-s1", granule=65536, ias=48, oas=52)
    phys = 0xF_8765_4321_0000
    want = (0x8765_4321_0000 | 0xF << 12 | ARM_LPAE_PTE_nG | ARM_LPAE_PTE_AP_UNPRIV | ARM_LPAE_PTE_SH_OS
            | ARM_LPAE_PTE_AF | ARM_LPAE_PTE_TYPE_PAGE)
    assert want == 0x0000_8765_4321_FE43
    assert f.encode_leaf(phys, 65536, lvl(f, 3), RW) == want
    assert f.leaf_phys(want, lvl(f, 3)) == phys
    assert f.schema(lvl(f, 3), LEAF).decode(want)["pa_51_48"] == 0xF  # type: ignore[union-attr]
    table = 0xA_0000_1234_0000
    want_tbl = 0x0000_0000_1234_0000 | 0xA << 12 | ARM_LPAE_PTE_TYPE_TABLE
    assert f.encode_table(table, lvl(f, 2)) == want_tbl == 0x1234_A003
    assert f.next_table(want_tbl, lvl(f, 2)) == table
    # A whole walk with tables above 2^48 and a 52-bit leaf.
    b = builder(f, base=0xC_0000_0000_0000)
    b.map(0x1234_0000, phys, 65536, RW)
    t = b.walker.translate(0x1234_0042)
    assert (t.phys, t.size, t.raw) == (phys + 0x42, 65536, want)


def test_64k_4t_block_only_when_oas_above_48() -> None:
    # arm_lpae_restrict_pgsizes: 4T (1 << 42) only if cfg->oas > 48.
    assert fmt("arm-lpae-s1", granule=65536, ias=48, oas=48).page_sizes == [1 << 16, 1 << 29]
    f = fmt("arm-lpae-s1", granule=65536, ias=48, oas=52)
    assert f.page_sizes == [1 << 16, 1 << 29, 1 << 42]
    phys = 0x3_4000_0000_0000  # 4T aligned, above 48 bits: PA[51:48] = 3
    raw, step = one_leaf(f, 1 << 42, phys, 1 << 42, RW)
    want = (phys & ((1 << 48) - 1) | 3 << 12 | ARM_LPAE_PTE_nG | ARM_LPAE_PTE_AP_UNPRIV | ARM_LPAE_PTE_SH_OS
            | ARM_LPAE_PTE_AF | ARM_LPAE_PTE_TYPE_BLOCK)
    assert raw == want and step.level == 1 and step.kind == "block"
    assert f.reserved_bits(raw, lvl(f, 1), LEAF) == 0
    # With oas 48 the same entry is a block the architecture has not: check flags its type bits.
    f48 = fmt("arm-lpae-s1", granule=65536, ias=48, oas=48)
    assert f48.reserved_bits(0x4000_0000_0000 | 0x441, lvl(f48, 1), LEAF) & 3 == 1


def test_s2_page_cache_nc_mmio_and_s2fwb() -> None:
    f = fmt("arm-lpae-s2", ias=40, oas=40)
    l3 = lvl(f, 3)
    # READ|WRITE|CACHE: HAP_READ|HAP_WRITE, MEMATTR_OIWB, SH_IS, AF; no nG, no AP.
    want = (0x12_3456_7000 | ARM_LPAE_PTE_HAP_READ | ARM_LPAE_PTE_HAP_WRITE | ARM_LPAE_PTE_MEMATTR_OIWB
            | ARM_LPAE_PTE_SH_IS | ARM_LPAE_PTE_AF | ARM_LPAE_PTE_TYPE_PAGE)
    assert want == 0x0000_0012_3456_77FF
    raw, step = one_leaf(f, 0x5000, 0x12_3456_7000, 4096, RW | IOMMU_CACHE)
    assert raw == want
    assert step.fields == {"xn": 0, "contiguous": False, "dbm": False, "pa_47_12": 0x12_3456_7, "af": True,
                           "sh": 3, "hap_write": True, "hap_read": True, "memattr": 0xF, "type": 3}
    # READ only, no CACHE: HAP_READ, MEMATTR_NC, SH_OS.
    nc = 0x1000 | ARM_LPAE_PTE_HAP_READ | ARM_LPAE_PTE_MEMATTR_NC | ARM_LPAE_PTE_SH_OS | ARM_LPAE_PTE_AF | 3
    assert nc == 0x1657 and f.encode_leaf(0x1000, 4096, l3, IOMMU_READ) == nc
    assert f.leaf_prot(nc, l3) == IOMMU_READ
    # MMIO (wins over CACHE for MemAttr; CACHE still gives SH_IS).
    dev = (0x2000 | ARM_LPAE_PTE_HAP_WRITE | ARM_LPAE_PTE_MEMATTR_DEV | ARM_LPAE_PTE_SH_IS | ARM_LPAE_PTE_AF | 3
           | ARM_LPAE_PTE_XN)
    assert f.encode_leaf(0x2000, 4096, l3, IOMMU_WRITE | IOMMU_MMIO | IOMMU_CACHE | IOMMU_NOEXEC) == dev
    assert f.leaf_prot(dev, l3) == IOMMU_WRITE | IOMMU_MMIO | IOMMU_CACHE | IOMMU_NOEXEC
    # IO_PGTABLE_QUIRK_ARM_S2FWB: CACHE -> MEMATTR_FWB_WB (0b0110) instead of 0b1111.
    fwb = fmt("arm-lpae-s2", ias=40, oas=40, quirks=["arm-s2fwb"])
    want_fwb = (0x3000 | ARM_LPAE_PTE_HAP_READ | ARM_LPAE_PTE_HAP_WRITE | ARM_LPAE_PTE_MEMATTR_FWB_WB
                | ARM_LPAE_PTE_SH_IS | ARM_LPAE_PTE_AF | 3)
    assert want_fwb == 0x37DB and fwb.encode_leaf(0x3000, 4096, l3, RW | IOMMU_CACHE) == want_fwb
    assert fwb.leaf_prot(want_fwb, l3) == RW | IOMMU_CACHE


def test_s2_16k_and_64k_blocks() -> None:
    f16 = fmt("arm-lpae-s2", granule=16384, ias=40, oas=40)
    blk = (0x40_0200_0000 | ARM_LPAE_PTE_HAP_READ | ARM_LPAE_PTE_HAP_WRITE | ARM_LPAE_PTE_MEMATTR_NC
           | ARM_LPAE_PTE_SH_OS | ARM_LPAE_PTE_AF | ARM_LPAE_PTE_TYPE_BLOCK)
    raw, step = one_leaf(f16, 0xff_fe00_0000, 0x40_0200_0000, 32 << 20, RW)
    assert raw == blk == 0x40_0200_06D5 and step.level == 2
    f64 = fmt("arm-lpae-s2", granule=65536, ias=48, oas=48)
    blk = (0x1_2000_0000 | ARM_LPAE_PTE_HAP_READ | ARM_LPAE_PTE_MEMATTR_OIWB | ARM_LPAE_PTE_SH_IS
           | ARM_LPAE_PTE_AF | ARM_LPAE_PTE_XN | ARM_LPAE_PTE_TYPE_BLOCK)
    raw, step = one_leaf(f64, 0x2000_0000, 0x1_2000_0000, 512 << 20, IOMMU_READ | IOMMU_CACHE | IOMMU_NOEXEC)
    assert raw == blk == 0x0060_0001_2000_077D and step.level == 2


def test_mali_page_is_type_block_without_af() -> None:
    # Mali: stage-2-like permissions (HAP bits), stage-1-like ATTRINDX, SH always OS, no AF,
    # and TYPE_BLOCK (0b01) even at level 3 (__arm_lpae_init_pte).
    f = fmt("arm-mali-lpae", ias=48, oas=40)
    want = (0x80_0123_4000 | ARM_LPAE_PTE_HAP_READ | ARM_LPAE_PTE_HAP_WRITE
            | ARM_LPAE_MAIR_ATTR_IDX_CACHE << ARM_LPAE_PTE_ATTRINDX_SHIFT | ARM_LPAE_PTE_SH_OS
            | ARM_LPAE_PTE_TYPE_BLOCK)
    assert want == 0x80_0123_42C5
    raw, step = one_leaf(f, 0x10_0000, 0x80_0123_4000, 4096, RW | IOMMU_CACHE)
    assert raw == want and step.level == 3 and step.kind == "page"
    assert step.fields == {"xn": 0, "pa_47_12": 0x80_0123_4, "sh": 2, "write": True, "read": True, "attrindx": 1,
                           "type": 1}
    l3 = lvl(f, 3)
    assert f.classify(want, l3) == LEAF
    assert f.classify(want | 3, l3) == INVALID  # 0b11 is no Mali page
    assert fmt("arm-lpae-s1").classify(want, l3) == INVALID  # and 0b01 no LPAE page
    blk = 0x80_0040_0000 | ARM_LPAE_PTE_HAP_READ | ARM_LPAE_PTE_SH_OS | ARM_LPAE_PTE_XN | 1
    assert f.encode_leaf(0x80_0040_0000, 2 << 20, lvl(f, 2), IOMMU_READ | IOMMU_NOEXEC) == blk
    assert f.leaf_prot(blk, lvl(f, 2)) == IOMMU_READ | IOMMU_NOEXEC


def test_mali_forced_four_levels_and_transtab() -> None:
    # arm_mali_lpae_alloc_pgtable: start_level > 0 is forced to 0 with pgd_bits 0.
    f = fmt("arm-mali-lpae", ias=33, oas=40)
    assert [(lv.num, lv.bits) for lv in f.levels] == [(0, 0), (1, 9), (2, 9), (3, 9)]
    b = builder(f)
    b.map(0x1_2345_6000, 0x42_0000_1000, 4096, IOMMU_READ)
    steps: list[Step] = []
    t = b.walker.translate(0x1_2345_6abc, steps)
    assert t.phys == 0x42_0000_1abc and [s.level for s in steps] == [0, 1, 2, 3] and steps[0].index == 0
    # transtab = PA | READ_INNER | ADRMODE_TABLE (| SHARE_OUTER when coherent); 0x17 or 0x7.
    assert f.register_value(0x8000_0000) == 0x8000_0017
    assert fmt("arm-mali-lpae", coherent_walk=False).register_value(0x8000_0000) == 0x8000_0007
    assert f.root_from_register(0x8000_0017) == [0x8000_0000]
    with pytest.raises(ValueError, match="ADRMODE"):
        f.root_from_register(0x8000_0002)  # identity mode walks nothing
    assert fmt("arm-mali-lpae", ias=40).levels[0].bits == 1  # ias 40 starts at level 0 anyway
    assert f.memattr == 0x88_8D88


def test_32bit_variants_ipmmu_and_s2() -> None:
    f = fmt("arm-lpae-32-s1", quirks=["arm-ns"])  # ipmmu-vmsa
    assert (f.ias, f.oas, f.start_level, f.pgd_bits) == (32, 40, 1, 2)
    want = (0xFF_FFFF_F000 | ARM_LPAE_PTE_nG | ARM_LPAE_PTE_AP_UNPRIV | ARM_LPAE_PTE_SH_OS | ARM_LPAE_PTE_AF
            | ARM_LPAE_PTE_NS | ARM_LPAE_PTE_TYPE_PAGE)
    raw, step = one_leaf(f, 0xFFFF_F000, 0xFF_FFFF_F000, 4096, RW)
    assert raw == want == 0xFF_FFFF_FE63 and step.fields["ns"] is True
    s2 = fmt("arm-lpae-32-s2")
    assert (s2.start_level, s2.pgd_bits, s2.concatenated) == (1, 10, True)  # 4K, oas 40: 2 tables
    raw, step = one_leaf(s2, 0xFF_C000_0000, 0x80_0000_0000, 1 << 30, IOMMU_WRITE)
    assert raw == (0x80_0000_0000 | ARM_LPAE_PTE_HAP_WRITE | ARM_LPAE_PTE_MEMATTR_NC | ARM_LPAE_PTE_SH_OS
                   | ARM_LPAE_PTE_AF | ARM_LPAE_PTE_TYPE_BLOCK)
    assert step.level == 1 and step.index == 1023


def test_quirk_ns_table_and_leaf() -> None:
    f = fmt("arm-lpae-s1", quirks=["arm-ns"])
    assert f.encode_table(0x8000_1000, lvl(f, 0)) == 0x8000_1000 | ARM_LPAE_PTE_NSTABLE | ARM_LPAE_PTE_TYPE_TABLE
    assert f.encode_leaf(0x1000, 4096, lvl(f, 3), IOMMU_READ) & ARM_LPAE_PTE_NS
    assert f.reserved_bits(0x8000_1000 | ARM_LPAE_PTE_NSTABLE | 3, lvl(f, 0), TABLE) == 0
    plain = fmt("arm-lpae-s1")
    assert plain.reserved_bits(0x8000_1000 | ARM_LPAE_PTE_NSTABLE | 3, lvl(plain, 0), TABLE) == ARM_LPAE_PTE_NSTABLE


def test_quirk_hd_sets_dbm_on_writable_leaves() -> None:
    # arm_lpae_prot_to_pte: "else if (quirks & ARM_HD) pte |= DBM" -- writable (not RDONLY) only.
    f = fmt("arm-lpae-s1", quirks=["arm-hd"])
    l3 = lvl(f, 3)
    assert f.encode_leaf(0x1000, 4096, l3, RW) & (ARM_LPAE_PTE_DBM | ARM_LPAE_PTE_AP_RDONLY) == ARM_LPAE_PTE_DBM
    assert f.encode_leaf(0x1000, 4096, l3, IOMMU_READ) & ARM_LPAE_PTE_DBM == 0
    assert f.encode_leaf(0x1000, 4096, l3, IOMMU_WRITE) & ARM_LPAE_PTE_DBM  # write-only: not RDONLY
    assert fmt("arm-lpae-s1").encode_leaf(0x1000, 4096, l3, RW) & ARM_LPAE_PTE_DBM == 0


def test_non_coherent_walk_sets_sw_sync_on_tables_and_tcr() -> None:
    f = fmt("arm-lpae-s1", coherent_walk=False)
    b = builder(f)
    b.map(0x1000, 0x2000, 4096, RW)
    steps: list[Step] = []
    b.walker.translate(0x1000, steps)
    assert [s.raw & ARM_LPAE_PTE_SW_SYNC != 0 for s in steps] == [True, True, True, False]
    assert steps[0].raw == b.roots[0] + 0x1000 | ARM_LPAE_PTE_SW_SYNC | 3
    assert f.reserved_bits(steps[0].raw, lvl(f, 0), TABLE) == 0
    coherent = fmt("arm-lpae-s1")
    assert coherent.reserved_bits(steps[0].raw, lvl(coherent, 0), TABLE) == ARM_LPAE_PTE_SW_SYNC
    # TCR: IS/WBWA/WBWA when coherent, OS/NC/NC otherwise, OS/NC/WBWA with arm-outer-wbwa.
    assert (coherent.tcr["sh"], coherent.tcr["irgn"], coherent.tcr["orgn"]) == (3, 1, 1)
    assert (f.tcr["sh"], f.tcr["irgn"], f.tcr["orgn"]) == (2, 0, 0)
    owb = fmt("arm-lpae-s1", coherent_walk=False, quirks=["arm-outer-wbwa"])
    assert (owb.tcr["sh"], owb.tcr["irgn"], owb.tcr["orgn"]) == (2, 0, 1)
    s2 = fmt("arm-lpae-s2", coherent_walk=False)
    assert (s2.vtcr["sh"], s2.vtcr["irgn"], s2.vtcr["orgn"]) == (2, 0, 0)


def test_ttbr1_upper_half() -> None:
    f = fmt("arm-lpae-s1", quirks=["arm-ttbr1"])
    assert f.windows == [((1 << 64) - (1 << 48), 1 << 64)]
    assert f.tcr["tg"] == 2  # ARM_LPAE_TCR_TG1_4K
    b = builder(f)
    top = (1 << 64) - (2 << 20)
    b.map(top, 0x9_0000_0000, 2 << 20, RW)
    b.map(0xFFFF_0000_0000_1000, 0x1000, 4096, IOMMU_READ)
    with pytest.raises(ValueError, match="outside"):
        b.map(0x1000, 0x1000, 4096, RW)  # the lower half is not this table's (iaext)
    t = b.walker.translate((1 << 64) - 1)  # the kernel's ~0UL quirk: must not crash here
    assert (t.phys, t.size) == (0x9_001F_FFFF, 2 << 20)
    assert f.legacy_iova_to_phys((1 << 64) - 1, t) == 0x9_001F_FFFF
    assert [lf[:3] for lf in b.walker.iter_leaves(*f.windows[0])] == [
        (0xFFFF_0000_0000_1000, 0x1000, 4096), (top, 0x9_0000_0000, 2 << 20)]
    # The table contents are identical to TTBR0's: the index masks off the upper bits.
    assert f.index(0xFFFF_0000_0000_1000, lvl(f, 0)) == 0 and f.index(top, lvl(f, 0)) == 511


def test_legacy_iova_to_phys_ors_res0_bits_in() -> None:
    # arm_lpae_iova_to_phys: iopte_to_paddr(pte) | (iova & (BLOCK_SIZE - 1)): address bits
    # below the block size leak into the legacy result; the hardware (and our answer) ignore them.
    f = fmt("arm-lpae-s1")
    mem = PhysMem()
    mem.add_bytes(0x1000, bytes(4096 * 3))
    mem.write_uint(0x1000, 8, 0x2000 | 3)  # L0[0] -> L1 at 0x2000
    mem.write_uint(0x2000, 8, 0x4000_0000 | 0x1234_5000 | 0x401)  # L1[0]: 1G block, junk bits 29:12
    w = Walker(f, mem, [0x1000])
    t = w.translate(0x42)
    assert (t.phys, t.size) == (0x4000_0042, 1 << 30)
    assert f.legacy_iova_to_phys(0x42, t) == 0x5234_5042
    assert f.reserved_bits(t.raw or 0, lvl(f, 1), LEAF) == 0x1234_5000
    assert f.legacy_iova_to_phys(1 << 40, w.translate(1 << 40)) == 0  # a miss is 0


def test_phys_zero_is_mapped_but_legacy_says_zero() -> None:
    """Why the series moved misses to PHYS_ADDR_MAX: a page at PA 0 and a hole look alike to the
    legacy op (0 for both), while iova_to_phys_length tells them apart."""
    dom = load_domain_text("format: arm-lpae-s1\nmappings:\n  - {iova: 0x10000, phys: 0x0, size: 4K, prot: rw}\n")
    assert dom.iova_to_phys_length(0x10000) == (0, 4096)
    assert dom.iova_to_phys_length(0x20000) == (PHYS_ADDR_MAX, 0)
    assert dom.iova_to_phys(0x10000) == 0 == dom.iova_to_phys(0x20000)


def test_unmap_leaf_and_partial_large_refused() -> None:
    f = fmt("arm-lpae-s1")
    b = builder(f)
    b.map(0x4000_0000, 0x4000_0000, 1 << 30, RW)
    b.map(0x1000, 0x5000, 8192, RW)
    assert b.walker.unmap_leaf(0x4000_1000, 4096) == 0  # "Unmap of a partial large IOPTE is not allowed"
    assert b.walker.unmap_leaf(0x2000, 4096) == 4096
    leaves = [lf[:3] for lf in b.walker.iter_leaves(0, 1 << 48)]
    assert leaves == [(0x1000, 0x5000, 4096), (0x4000_0000, 0x4000_0000, 1 << 30)]
    assert b.walker.unmap_leaf(0x4000_0000, 1 << 30) == 1 << 30
    assert b.walker.unmap_leaf(0x4000_0000, 1 << 30) == 0  # already empty


def test_map_refusals() -> None:
    f = fmt("arm-lpae-s1", ias=40, oas=40)
    b = builder(f)
    with pytest.raises(ValueError, match="EINVAL"):
        b.map(0, 0, 4096, IOMMU_CACHE)  # neither READ nor WRITE
    with pytest.raises(ValueError, match="ERANGE"):
        b.map(0x10_0000, 1 << 40, 4096, RW)  # paddr >> oas
    # The kernel checks paddr once per map_pages call: a call's later pages may pass 2^oas (the
    # PTE then holds PA bit 40), but a call that starts a new leaf table is checked again.
    b.map(0x8000_0000, (1 << 40) - 4096, 8192, RW)
    assert b.walker.translate(0x8000_1000).phys == 1 << 40
    with pytest.raises(ValueError, match="ERANGE"):
        b.map(0x1F_F000, (1 << 40) - 4096, 8192, RW)
    with pytest.raises(ValueError, match="outside"):
        b.map(1 << 40, 0, 4096, RW)  # iaext
    b.map(0, 0x20_0000, 2 << 20, RW)
    with pytest.raises(ValueError, match="EEXIST"):
        b.map(0x1000, 0x1000, 4096, RW)  # a leaf where a table is needed


def test_reserved_bits_and_notes() -> None:
    f = fmt("arm-lpae-s1", ias=40, oas=40)
    l1, l2, l3 = lvl(f, 1), lvl(f, 2), lvl(f, 3)
    page = f.encode_leaf(0x1000, 4096, l3, RW)
    assert f.reserved_bits(page, l3, LEAF) == 0
    assert f.reserved_bits(page | 1 << 40, l3, LEAF) == 1 << 40  # output address beyond oas 40
    assert f.reserved_bits(page | 1 << 58 | 1 << 52, l3, LEAF) == 1 << 58 | 1 << 52  # software, contiguous
    assert f.reserved_bits(page | ARM_LPAE_PTE_DBM | ARM_LPAE_PTE_NS, l3, LEAF) == ARM_LPAE_PTE_DBM | ARM_LPAE_PTE_NS
    block = f.encode_leaf(0x20_0000, 2 << 20, l2, RW)
    assert f.reserved_bits(block | 0x1000, l2, LEAF) == 0x1000  # OA below the 2M block is RES0
    table = f.encode_table(0x3000, l1)
    assert f.reserved_bits(table | 3 << 61 | 1 << 60, l1, TABLE) == 3 << 61 | 1 << 60  # APTable, XNTable
    assert f.reserved_bits(0x42, l3, INVALID) == 0x42  # the kernel leaves invalid entries zero
    f16 = fmt("arm-lpae-s1", granule=16384, ias=47)
    assert f16.reserved_bits(0x8000_1000 | 3, lvl(f16, 1), TABLE) == 0x1000  # 16K table misaligned
    s2 = fmt("arm-lpae-s2")
    assert s2.reserved_bits(s2.encode_leaf(0, 4096, l3, IOMMU_READ) | ARM_LPAE_PTE_nG, l3, LEAF) == ARM_LPAE_PTE_nG
    mali = fmt("arm-mali-lpae")
    assert mali.reserved_bits(mali.encode_leaf(0, 4096, l3, RW) | ARM_LPAE_PTE_AF, l3, LEAF) == ARM_LPAE_PTE_AF
    # what explain says
    assert f.note(page, l3, LEAF) == "4K page at 0x1000, rw; AttrIndx 0"
    assert f.note(table | ARM_LPAE_PTE_SW_SYNC, l1, TABLE).startswith("next-level table at 0x3000, SW_SYNC")
    assert "not a page" in f.note(0x1001, l3, INVALID)
    assert s2.note(s2.encode_leaf(0, 4096, l3, IOMMU_MMIO | IOMMU_READ), l3, LEAF).endswith("MemAttr 0x1 Device-nGnRE")
    assert f.kind_name(block, l2, LEAF) == "block" and f.kind_name(0, l2, INVALID) == "invalid"
    # the construct schema also encodes: fields back to the same descriptor
    schema = f.schema(l3, LEAF)
    assert schema is not None and schema.encode(**schema.decode(page)) == page


# --- geometry --------------------------------------------------------------------------------------

# (granule, ias) -> (levels, start level, pgd entries): io-pgtable.md 2.2, from arm_lpae_alloc_pgtable
GEOMETRY = [(4096, 32, 3, 1, 4), (4096, 36, 3, 1, 64), (4096, 39, 3, 1, 512), (4096, 40, 4, 0, 2),
            (4096, 42, 4, 0, 8), (4096, 44, 4, 0, 32), (4096, 48, 4, 0, 512), (16384, 32, 2, 2, 128),
            (16384, 36, 2, 2, 2048), (16384, 40, 3, 1, 16), (16384, 42, 3, 1, 64), (16384, 44, 3, 1, 256),
            (16384, 48, 4, 0, 2), (65536, 32, 2, 2, 8), (65536, 40, 2, 2, 2048), (65536, 42, 2, 2, 8192),
            (65536, 44, 3, 1, 4), (65536, 48, 3, 1, 64), (65536, 52, 3, 1, 1024)]


@pytest.mark.parametrize(("granule", "ias", "levels", "start", "entries"), GEOMETRY)
def test_s1_geometry(granule: int, ias: int, levels: int, start: int, entries: int) -> None:
    f = fmt("arm-lpae-s1", granule=granule, ias=ias, oas=52 if granule == 65536 else 48)
    assert (len(f.levels), f.start_level, f.levels[0].entries) == (levels, start, entries)
    bpl = granule.bit_length() - 4
    assert all(lv.bits == bpl for lv in f.levels[1:])
    assert [lv.shift for lv in f.levels] == [(granule.bit_length() - 1) + (3 - n) * bpl for n in range(start, 4)]


# arm_lpae_concat_mandatory (current rule): (granule, ias, oas) -> (start, pgd entries, concatenated)
S2_CONCAT = [(4096, 40, 40, 1, 1024, True), (4096, 42, 42, 1, 4096, True), (4096, 40, 44, 0, 2, False),
             (4096, 42, 48, 0, 8, False), (4096, 48, 48, 0, 512, False), (4096, 32, 32, 1, 4, False),
             (16384, 48, 48, 1, 4096, True), (16384, 40, 40, 2, 32768, True), (16384, 40, 48, 1, 16, False),
             (16384, 48, 40, 1, 4096, True), (16384, 36, 40, 2, 2048, False),
             (65536, 48, 48, 1, 64, False), (65536, 52, 52, 1, 1024, False), (65536, 40, 40, 2, 2048, False)]


@pytest.mark.parametrize(("granule", "ias", "oas", "start", "entries", "concat"), S2_CONCAT)
def test_s2_concatenation(granule: int, ias: int, oas: int, start: int, entries: int, concat: bool) -> None:
    f = fmt("arm-lpae-s2", granule=granule, ias=ias, oas=oas)
    assert (f.start_level, f.levels[0].entries, f.concatenated) == (start, entries, concat)
    size, align = f.root_alloc()[0]
    assert size == max(entries * 8, 64) and align == max(size, 4096)


def test_s2_too_many_concatenated_tables_refused() -> None:
    # 4K, ias 44, oas 40: concatenation is mandatory but would need 32 > 16 tables (WARN, NULL).
    with pytest.raises(ConfigError, match="ARM_LPAE_S2_MAX_CONCAT_PAGES"):
        fmt("arm-lpae-s2", ias=44, oas=40)


def test_vtcr_sl0() -> None:
    # vtcr.sl = ~sl & 3 with sl = start_level (+1 for 4K).
    assert fmt("arm-lpae-s2", ias=48, oas=48).vtcr["sl"] == 2
    assert fmt("arm-lpae-s2", ias=40, oas=40).vtcr["sl"] == 1
    assert fmt("arm-lpae-s2", ias=32, oas=32).vtcr["sl"] == 1
    assert fmt("arm-lpae-s2", granule=16384, ias=40, oas=40).vtcr["sl"] == 1
    assert fmt("arm-lpae-s2", granule=65536, ias=48, oas=48).vtcr["sl"] == 2


# --- config validation: the kernel's refusals --------------------------------------------------------

@pytest.mark.parametrize(("fid", "cfg", "key", "match"), [
    ("arm-lpae-s1", {"granule": 8192}, "granule", "not a granule"),
    ("arm-lpae-32-s1", {"granule": 16384}, "granule", r"\(4K\)"),
    ("arm-mali-lpae", {"granule": 65536}, "granule", "not a granule"),
    ("arm-lpae-s1", {"quirks": ["arm-s2fwb"]}, "quirks", "arm_64_lpae_alloc_pgtable_s1"),
    ("arm-lpae-s1", {"quirks": ["no-perms"]}, "quirks", "refuses"),
    ("arm-lpae-s2", {"quirks": ["arm-ns"]}, "quirks", "arm_64_lpae_alloc_pgtable_s2"),
    ("arm-lpae-s2", {"quirks": ["arm-ttbr1"]}, "quirks", "refuses"),
    ("arm-mali-lpae", {"quirks": ["no-warn"]}, "quirks", "accepted: none"),
    ("arm-lpae-s1", {"quirks": ["arm-bogus"]}, "quirks", "unknown quirk"),
    ("arm-lpae-s1", {"quirks": ["arm-outer-wbwa"]}, "quirks", "coherent_walk"),
    ("arm-lpae-s1", {"oas": 35}, "oas", "IPS"),
    ("arm-lpae-s2", {"oas": 46}, "oas", "VTCR.PS"),
    ("arm-lpae-32-s1", {"ias": 33}, "ias", "ias <= 32"),
    ("arm-lpae-32-s1", {"oas": 42}, "oas", "oas <= 40"),
    ("arm-lpae-32-s2", {"ias": 42}, "ias", "ias <= 40"),
    ("arm-mali-lpae", {"oas": 44}, "oas", "oas <= 40"),
    ("arm-lpae-s1", {"ias": 12}, "ias", "no index bits"),
    ("arm-lpae-s1", {"pgsize_bitmap": 1 << 21}, "pgsize_bitmap", "granule"),
    ("arm-lpae-s1", {"page_size": 12288}, "page_size", "PAGE_SIZE"),
    ("arm-lpae-s1", {"coherent_walk": "yes"}, "coherent_walk", "true/false"),
])
def test_config_refusals(fid: str, cfg: dict[str, Any], key: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        fmt(fid, **cfg)
    assert e.value.key == key


def test_config_accepts_kernel_names_and_clamps() -> None:
    f = fmt("arm-lpae-s1", quirks=["IO_PGTABLE_QUIRK_ARM_NS", "arm_hd", "no-warn"])
    assert f.quirks == {"arm-ns", "arm-hd", "no-warn"}
    # arm_lpae_restrict_pgsizes clamps ias/oas to 48 (52 for 64K), it does not refuse them.
    f = fmt("arm-lpae-s1", ias=52, oas=52)
    assert (f.ias, f.oas, f.windows) == (48, 48, [(0, 1 << 48)])
    # Mali's oas has no IPS table: any value up to 40.
    assert fmt("arm-mali-lpae", ias=33, oas=33).oas == 33


def test_host_page_size_picks_the_granule() -> None:
    # An SMMUv3 offering all three granules: the host PAGE_SIZE wins, else the largest smaller.
    smmu = (1 << 12) | (1 << 21) | (1 << 30) | (1 << 14) | (1 << 25) | (1 << 16) | (1 << 29)
    f = fmt("arm-lpae-s1", pgsize_bitmap=smmu, page_size=16384, granule=16384)
    assert f.page_sizes == [1 << 14, 1 << 25]
    with pytest.raises(ConfigError, match="selects the 64K granule") as e:
        fmt("arm-lpae-s1", pgsize_bitmap=smmu, page_size=65536)
    assert e.value.key == "granule"
    # No 16K offered on a 16K host: the largest smaller size (4K).
    f = fmt("arm-lpae-s1", pgsize_bitmap=(1 << 12) | (1 << 21) | (1 << 16), page_size=16384)
    assert f.page_sizes == [1 << 12, 1 << 21]
    # qcom_iommu asks 4K only: no blocks at all.
    assert fmt("arm-lpae-32-s1", pgsize_bitmap=4096).page_sizes == [4096]


# --- roots ---------------------------------------------------------------------------------------------

def test_ttbr_and_vttbr_decoding() -> None:
    f = fmt("arm-lpae-s1")
    # ARM_SMMU_TTBRn_ASID is GENMASK(63,48); bit 0 is CnP.
    assert f.root_from_register(0x00A5_0000_8000_1000 | 1) == [0x8000_1000]
    s2 = fmt("arm-lpae-s2", ias=40, oas=40)  # 8K concatenated pgd: bits below 8K ignored
    assert s2.root_from_register(0x0007_0000_8000_2000 | 1) == [0x8000_2000]
    # 52-bit: io-pgtable / SMMUv3 CD.TTB0 (GENMASK(51,4)) form, address in place...
    f52 = fmt("arm-lpae-s1", granule=65536, ias=52, oas=52)
    assert f52.root_from_register(0xF_8000_0000_0000) == [0xF_8000_0000_0000]
    # ...and the Arm ARM TTBR form with PA[51:48] in bits 5:2 and an ASID on top.
    assert f52.root_from_register(0x0042_8000_0000_0000 | 0xF << 2 | 1) == [0xF_8000_0000_0000]


# --- drivers ------------------------------------------------------------------------------------------

def test_drivers_table() -> None:
    table = drivers()
    assert {k for k in DRIVERS} == {"arm-smmu-v3", "arm-smmu", "qcom-iommu", "ipmmu-vmsa", "panfrost", "panthor"}
    expect = {"arm-smmu-v3": ("arm-lpae-s1", 48, 48, set(), [4096, 2 << 20, 1 << 30]),
              "arm-smmu": ("arm-lpae-s1", 48, 48, set(), [4096, 2 << 20, 1 << 30]),
              "qcom-iommu": ("arm-lpae-32-s1", 32, 40, set(), [4096]),
              "ipmmu-vmsa": ("arm-lpae-32-s1", 32, 40, {"arm-ns"}, [4096, 2 << 20, 1 << 30]),
              "panfrost": ("arm-mali-lpae", 48, 40, set(), [4096, 2 << 20]),
              "panthor": ("arm-lpae-s1", 48, 40, set(), [4096, 2 << 20])}
    for did, (fid, ias, oas, quirks, sizes) in expect.items():
        d = table[did]
        f = fmt(d["format"], **d["config"])
        assert (d["format"], f.ias, f.oas, f.quirks, f.page_sizes) == (fid, ias, oas, quirks, sizes)
        assert d["description"]


def test_bundled_examples_load() -> None:
    from iommuctl.domain import load_domain

    for name, fid, sizes in (("smmuv3-4k", "arm-lpae-s1", {4096, 2 << 20, 1 << 30}),
                             ("mali-gpu", "arm-mali-lpae", {4096, 2 << 20}),
                             ("smmu-s2-16k", "arm-lpae-s2", {16384, 32 << 20})):
        dom = load_domain(f"example:{name}")
        assert dom.fmt.name == fid
        got = {int(s) for b in dom.leaves(*dom.windows[0]) for s in b.size}
        assert got == sizes
        for m in dom.mappings[:2]:  # the plain (not scattered) ones
            assert dom.iova_to_phys_length(m.iova + m.size - 1) == (m.phys + m.size - 1, dom.translate(m.iova).size)


# --- the kernel's conformance cases --------------------------------------------------------------

def load_case(case_dir: Path) -> tuple[dict[str, Any], ArmLpae, PhysMem]:
    case = json.loads((case_dir / "case.json").read_text())
    cfg = case["config"]
    quirks = [q.removeprefix("IO_PGTABLE_QUIRK_").lower().replace("_", "-") for q in cfg["quirks_list"]]
    f = fmt(KERNEL_FORMATS[case["format"]], granule=cfg["granule"], ias=cfg["ias"], oas=cfg["oas"], quirks=quirks)
    mem = PhysMem()
    mem.add_file(case_dir / "image.bin", case["image_base"])
    return case, f, mem


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_conformance_case(case_dir: Path) -> None:
    case, f, mem = load_case(case_dir)
    roots, cfg, ki = case["roots"], case["config"], case["kernel_internal"]
    # geometry and registers as the kernel's allocator left them
    assert f.page_sizes == cfg["page_sizes"]
    assert (f.start_level, f.pgd_bits, f.bits_per_level, f.concatenated) == (
        ki["start_level"], ki["pgd_bits"], ki["bits_per_level"], ki["pgd_concatenated"])
    assert f.root_alloc()[0][0] <= roots["root_tables"][0]["alloc_size"]
    if "tcr" in roots:
        assert f.tcr == roots["tcr"] and f.mair == roots["mair"]
    if "vtcr" in roots:
        assert f.vtcr == roots["vtcr"]
    if "transtab" in roots:
        assert f.memattr == roots["memattr"]
        assert f.register_value(roots["root_tables"][0]["phys"]) == roots["transtab"]
    raw_root = next(roots[k] for k in ("ttbr", "vttbr", "transtab") if k in roots)
    assert f.root_from_register(raw_root) == [roots["root_tables"][0]["phys"]]
    w = Walker(f, mem, f.root_from_register(raw_root))
    assert f.windows == [(cfg["iova_space_base"], cfg["iova_space_base"] + cfg["iova_space_size"])]

    for p in case["probes"]:
        steps: list[Step] = []
        t = w.translate(p["iova"], steps)
        if p["kernel_iova_to_phys"]:
            assert (t.phys, t.size) == (p["kernel_iova_to_phys"], p["expected_pgsize"]), p
        else:
            assert (t.mapped, t.phys) == (False, PHYS_ADDR_MAX), p
        assert f.legacy_iova_to_phys(p["iova"], t) == p["kernel_iova_to_phys"]
        # the kernel's own pgtable_walk(): the descriptor it read at each architectural level
        kw = p["kernel_walk"]
        assert [s.raw for s in steps] == kw["ptes"][f.start_level:f.start_level + len(steps)]
        assert (kw["rc"] == 0) == t.mapped
        if t.mapped:
            m = case["mappings"][p["mapping"]]
            assert t.prot == expected_prot(f, m["prot"])

    want = {(c["iova"] + i * c["pgsize"], c["phys"] + i * c["pgsize"], c["pgsize"])
            for m in case["mappings"] if not m["unmapped"] for c in m["chunks"] for i in range(c["count"])}
    leaves = list(w.iter_leaves(*f.windows[0]))
    assert {lf[:3] for lf in leaves} == want and len(leaves) == len(want)
    # the kernel never writes a bit check would call reserved
    for lf in leaves:
        assert f.reserved_bits(lf[5], f._level(lf[3]), LEAF) == 0
    for table, level in tables_of(f, mem, w):
        ents = mem.array(table, level.entries, f.dtype)
        for raw in ents[np.flatnonzero(ents)]:
            r = int(raw)
            assert f.reserved_bits(r, level, f.classify(r, level)) == 0


def tables_of(f: ArmLpae, mem: PhysMem, w: Walker) -> list[tuple[int, Any]]:
    out, todo = [], [(w.tops[0].table, 0)]
    while todo:
        table, li = todo.pop()
        level = f.levels[li]
        out.append((table, level))
        ents = mem.array(table, level.entries, f.dtype)
        kinds = f.classify_vec(ents, level)
        todo += [(f.next_table(int(ents[i]), level), li + 1) for i in np.flatnonzero(kinds == TABLE)]
    return out


def expected_prot(f: ArmLpae, prot: int) -> int:
    """What a leaf written for `prot` grants, per stage (the inverse of arm_lpae_prot_to_pte)."""
    keep = prot & (IOMMU_CACHE | IOMMU_MMIO | IOMMU_NOEXEC)
    if f.mali:
        if prot & IOMMU_MMIO:
            keep &= ~IOMMU_CACHE  # ATTRINDX holds DEV; SH is OS for Mali regardless
        return prot & RW | keep
    if f.stage == 2:
        return prot & RW | keep
    rw = IOMMU_READ if prot & RW == IOMMU_READ else RW  # no write-only AP encoding
    return rw | keep | prot & IOMMU_PRIV


# --- hypothesis: random mappings round-trip ------------------------------------------------------

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("arm-lpae-s1", {}), ("arm-lpae-s1", {"granule": 16384, "ias": 36, "oas": 40}),
    ("arm-lpae-s1", {"granule": 65536, "ias": 48, "oas": 52}), ("arm-lpae-s1", {"ias": 39, "quirks": ["arm-ttbr1"]}),
    ("arm-lpae-s1", {"quirks": ["arm-hd", "arm-ns"], "coherent_walk": False}),
    ("arm-lpae-s2", {"ias": 40, "oas": 40}), ("arm-lpae-s2", {"granule": 16384, "ias": 40, "oas": 40}),
    ("arm-lpae-s2", {"granule": 65536, "ias": 42, "oas": 44, "quirks": ["arm-s2fwb"]}),
    ("arm-lpae-32-s1", {"quirks": ["arm-ns"]}), ("arm-lpae-32-s2", {}),
    ("arm-mali-lpae", {"ias": 33}), ("arm-mali-lpae", {"pgsize_bitmap": (1 << 12) | (1 << 21)}),
]
PROTS = st.sampled_from([IOMMU_READ, IOMMU_WRITE, RW]).flatmap(
    lambda rw: st.sets(st.sampled_from([IOMMU_CACHE, IOMMU_NOEXEC, IOMMU_MMIO, IOMMU_PRIV])).map(
        lambda extra: rw | sum(extra)))


@st.composite
def domains(draw: st.DrawFn) -> tuple[ArmLpae, list[tuple[int, int, int, int]]]:
    fid, cfg = draw(st.sampled_from(CONFIGS))
    f = fmt(fid, **cfg)
    start, end = f.windows[0]
    region = min((end - start) // 8, 4 * f.page_sizes[-1])
    return f, draw_layout(draw, f, start, region, PROTS, 5, 40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(domains(), st.randoms(use_true_random=False))
def test_random_mappings_round_trip(dom: tuple[ArmLpae, list[tuple[int, int, int, int]]], rnd: Any) -> None:
    f, maps = dom
    b = builder(f, base=0x1000_0000)
    want = set()
    for iova, phys, size, prot in maps:
        b.map(iova, phys, size, prot)
        i, p, n = iova, phys, size
        while n:  # the leaves iommu_pgsize() splits the mapping into
            pgsize, count = iommu_pgsize(f.pgsize_bitmap, i, p, n)
            for _ in range(count):
                want.add((i, p, pgsize, expected_prot(f, prot)))
                i, p, n = i + pgsize, p + pgsize, n - pgsize
    got = {(lf[0], lf[1], lf[2], lf[4]) for lf in b.walker.iter_leaves(*f.windows[0])}
    assert got == want
    for iova, phys, size, _ in maps:
        for off in (0, size - 1, rnd.randrange(size)):
            t = b.walker.translate(iova + off)
            assert t.phys == phys + off
            assert f.legacy_iova_to_phys(iova + off, t) == phys + off
            # the size is that of the leaf iommu_pgsize() chose for this IOVA
            leaf = [w for w in want if w[0] <= iova + off < w[0] + w[2]]
            assert len(leaf) == 1 and t.size == leaf[0][2] and t.prot == leaf[0][3]


# --- junk never raises anything but WalkError / ValueError ---------------------------------------

JUNK_FORMATS = [fmt("arm-lpae-s1", granule=65536, ias=52, oas=52), fmt("arm-lpae-s2", granule=16384, ias=40, oas=40),
                fmt("arm-mali-lpae", ias=36), fmt("arm-lpae-32-s1", quirks=["arm-ns"]),
                fmt("arm-lpae-s1", quirks=["arm-ttbr1", "arm-hd"])]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(JUNK_FORMATS), st.lists(st.integers(0, (1 << 64) - 1), min_size=1, max_size=16))
def test_junk_entries(f: ArmLpae, raws: list[int]) -> None:
    arr = np.array(raws, dtype=np.uint64)
    for level in f.levels:
        kinds = f.classify_vec(arr, level)
        for raw, kind in zip(raws, kinds):
            assert f.classify(raw, level) == kind
            f.fields(raw, level, kind)
            f.note(raw, level, kind)
            f.reserved_bits(raw, level, kind)
            if kind == TABLE:
                assert f.next_table(raw, level) < 1 << 52
        leaves = arr[kinds == LEAF]
        if len(leaves):
            assert list(f.leaf_phys_vec(leaves, level)) == [f.leaf_phys(int(r), level) for r in leaves]
            assert list(f.leaf_prot_vec(leaves, level)) == [f.leaf_prot(int(r), level) for r in leaves]
    # a root table full of junk: walks end in WalkError or finish
    mem = PhysMem()
    size = f.levels[0].entries * 8
    data = (raws * (size // 8 // len(raws) + 1))[: size // 8]
    mem.add_bytes(0x10_0000, np.array(data, dtype=np.uint64).tobytes() + bytes(max(0, 64 - size)))
    w = Walker(f, mem, [0x10_0000])
    try:
        for _ in w.leaves(*f.windows[0]):
            pass
    except WalkError:
        pass
    for v in raws[:4]:
        try:
            f.root_from_register(v)
        except ValueError:
            pass
        iova = f.windows[0][0] + v % (f.windows[0][1] - f.windows[0][0])
        try:
            w.translate(iova, [])
        except WalkError:
            pass
