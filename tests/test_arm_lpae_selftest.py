"""The kernel's LPAE selftest, ported: io-pgtable-arm-selftests.c, arm_lpae_do_selftests /
arm_lpae_run_tests (KUnit suite "io-pgtable-arm-test", v7.1 merge window).

The kernel tries every pgsize set {4K|2M|1G, 16K|32M, 64K|512M} with oas in {32, 36, 40, 42,
44, 48} and every ias <= oas (63 configurations), each as ARM_64_LPAE_S1 and ARM_64_LPAE_S2 with
quirks = IO_PGTABLE_QUIRK_NO_WARN and coherent_walk. Here map_pages is the Builder (the kernel's
map path), iova_to_phys is the format's legacy op over the shared Walker's translation, and
unmap_pages is Walker.unmap_leaf. Every step the kernel treats as a failure is asserted.
"""

from __future__ import annotations

import itertools

import pytest

from formats import get_format
from formats.base import IOMMU_CACHE, IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE, PageTable
from formats.builder import Arena, Builder
from iommuctl.memory import PhysMem

SZ_1G, SZ_2G = 1 << 30, 1 << 31
PGSIZES = {4096: (1 << 12) | (1 << 21) | (1 << 30), 16384: (1 << 14) | (1 << 25), 65536: (1 << 16) | (1 << 29)}
ADDRESS_SIZE = (32, 36, 40, 42, 44, 48)
# for each pgsize set, for each oas, for each ias <= oas: "Don't use ias > oas as it is not valid
# for stage-2."
CONFIGS = [(granule, ADDRESS_SIZE[k], ADDRESS_SIZE[j])
           for granule in PGSIZES for j in range(len(ADDRESS_SIZE)) for k in range(j + 1)]


def test_the_selftest_tries_63_configurations() -> None:
    assert len(CONFIGS) == 63


class Ops:
    """alloc_io_pgtable_ops() for the selftest's cfg, with the three ops it calls."""

    def __init__(self, fid: str, granule: int, ias: int, oas: int) -> None:
        cfg = {"granule": granule, "ias": ias, "oas": oas, "quirks": ["no-warn"], "page_size": 4096,
               "coherent_walk": True, "pgsize_bitmap": PGSIZES[granule]}
        self.fmt: PageTable = get_format(fid)(cfg)  # allocation failure would raise ConfigError
        self.builder = Builder(self.fmt, Arena(PhysMem(), 0x8000_0000))
        self.walker = self.builder.walker

    def map_pages(self, iova: int, paddr: int, size: int, prot: int) -> int:
        """One map_pages(pgsize=size, pgcount=1); returns bytes mapped, raises on refusal."""
        chunks = self.builder.map(iova, paddr, size, prot)
        assert chunks == [(iova, paddr, size, 1)]  # one page of exactly that size
        return size

    def unmap_pages(self, iova: int, size: int) -> int:
        return self.walker.unmap_leaf(iova, size)

    def iova_to_phys(self, iova: int) -> int:
        return self.fmt.legacy_iova_to_phys(iova, self.walker.translate(iova))


@pytest.mark.parametrize("fid", ["arm-lpae-s1", "arm-lpae-s2"])
@pytest.mark.parametrize(("granule", "ias", "oas"), CONFIGS,
                         ids=[f"{g // 1024}K-ias{i}-oas{o}" for g, i, o in CONFIGS])
def test_arm_lpae_run_tests(fid: str, granule: int, ias: int, oas: int) -> None:
    ops = Ops(fid, granule, ias, oas)
    sizes = sorted(ops.fmt.page_sizes)
    assert sum(sizes) == PGSIZES[granule]  # no 4T block: oas never exceeds 48 here

    # Initial sanity checks: empty page tables provide no translations.
    for iova in (42, SZ_1G + 42, SZ_2G + 42):
        assert ops.iova_to_phys(iova) == 0
        assert not ops.walker.translate(iova).mapped

    # Distinct mappings of different granule sizes, 1G apart.
    for iova, size in zip(itertools.count(0, SZ_1G), sizes):
        ops.map_pages(iova, iova, size, IOMMU_READ | IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_CACHE)
        with pytest.raises(ValueError, match="EEXIST"):  # overlapping mapping
            ops.map_pages(iova, iova + size, size, IOMMU_READ | IOMMU_NOEXEC)
        assert ops.iova_to_phys(iova + 42) == iova + 42
        t = ops.walker.translate(iova + 42)
        assert (t.phys, t.size) == (iova + 42, size)

    # Full unmap, then remap each block write-only.
    for iova, size in zip(itertools.count(0, SZ_1G), sizes):
        assert ops.unmap_pages(iova, size) == size
        assert ops.iova_to_phys(iova + 42) == 0
        ops.map_pages(iova, iova, size, IOMMU_WRITE)
        assert ops.iova_to_phys(iova + 42) == iova + 42

    # The last largest page of the IAS: the corner of a concatenated pgd.
    size = sizes[-1]
    iova = (1 << ias) - size
    assert ops.map_pages(iova, iova, size, IOMMU_READ | IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_CACHE) == size
    assert ops.iova_to_phys(iova + size - 1) == iova + size - 1
    assert ops.unmap_pages(iova, size) == size
    assert ops.iova_to_phys(iova) == 0

    # What the kernel leaves behind: exactly the write-only remaps, found by one range walk. A
    # stage-1 AP field has no write-only encoding (arm_lpae_prot_to_pte sets AP_RDONLY only for
    # read-without-write), so the hardware grants rw; stage 2 has HAP_WRITE alone.
    granted = IOMMU_READ | IOMMU_WRITE if fid == "arm-lpae-s1" else IOMMU_WRITE
    leaves = [(lf[0], lf[1], lf[2], lf[4]) for lf in ops.walker.iter_leaves(0, 1 << ias)]
    assert leaves == [(i, i, s, granted) for i, s in zip(itertools.count(0, SZ_1G), sizes)]
