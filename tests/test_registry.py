"""The registry's static indexes agree with what the format modules define."""

from __future__ import annotations

import importlib

import formats


def test_driver_index_matches_the_modules() -> None:
    found = {}
    for mod in sorted({v.split(":")[0] for v in formats.FORMATS.values()}):
        for did in getattr(importlib.import_module(mod), "DRIVERS", {}):
            found[formats.norm_driver(did)] = mod
    assert found == formats.DRIVER_MODULES
    for did in found:
        assert formats.driver(did) == formats.drivers()[did]


def test_every_format_id_resolves_to_its_class() -> None:
    for fid in formats.FORMATS:
        assert formats.get_format(fid).name == fid


def test_kernel_driver_names_resolve() -> None:
    # issue 6: every driver of the series, spelled as the kernel spells it
    for name in ["arm-smmu-v3", "arm-smmu", "qcom_iommu", "apple-dart", "ipmmu-vmsa", "mtk_iommu", "exynos",
                 "fsl_pamu", "msm", "mtk_v1", "omap", "rockchip", "s390", "sprd", "sun50i", "tegra-smmu",
                 "virtio", "amd-v1", "amd-v2", "intel-ss", "intel-fs", "riscv", "panfrost", "panthor",
                 "iommufd-mock"]:
        assert formats.driver(name) is not None, name
