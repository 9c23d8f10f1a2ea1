"""Registry: format id -> the class that describes it; driver id -> (format, config defaults).

Modules are imported only when a format is used, so a command pays for the formats it touches.
Each format module defines its PageTable subclasses and a `DRIVERS` dict:
    {driver_id: {"format": format_id, "config": {...}, "description": "..."}}
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import PageTable

# format id -> "module:Class"
FORMATS: dict[str, str] = {
    "arm-lpae-s1": "formats.arm_lpae:ArmLpaeS1",
    "arm-lpae-s2": "formats.arm_lpae:ArmLpaeS2",
    "arm-lpae-32-s1": "formats.arm_lpae:ArmLpae32S1",
    "arm-lpae-32-s2": "formats.arm_lpae:ArmLpae32S2",
    "arm-mali-lpae": "formats.arm_lpae:ArmMaliLpae",
    "arm-v7s": "formats.arm_v7s:ArmV7s",
    "apple-dart": "formats.apple_dart:AppleDart",
    "apple-dart2": "formats.apple_dart:AppleDart2",
    "amdv1": "formats.generic_pt.amdv1:AmdV1",
    "amdv1-mock": "formats.generic_pt.amdv1:AmdV1Mock",
    "vtdss": "formats.generic_pt.vtdss:VtdSs",
    "x86-64": "formats.generic_pt.x86_64:X86_64",
    "riscv64": "formats.generic_pt.riscv64:RiscV64",
    "exynos": "formats.exynos:Exynos",
    "rockchip": "formats.rockchip:Rockchip",
    "omap": "formats.omap:Omap",
    "sun50i": "formats.sun50i:Sun50i",
    "tegra-smmu": "formats.tegra_smmu:TegraSmmu",
    "sprd": "formats.sprd:Sprd",
    "mtk-v1": "formats.mtk_v1:MtkV1",
    "s390": "formats.s390:S390",
    "fsl-pamu": "formats.fsl_pamu:FslPamu",
    "virtio": "formats.virtio:Virtio",
}


# driver id -> the module whose DRIVERS defines it, so `driver:` imports one module
# (tests/test_registry.py holds this index equal to the modules' own DRIVERS tables)
DRIVER_MODULES: dict[str, str] = {
    "amd-v1": "formats.generic_pt.amdv1",
    "amd-v2": "formats.generic_pt.x86_64",
    "apple-dart": "formats.apple_dart",
    "apple-dart-t6000": "formats.apple_dart",
    "apple-dart-t8020": "formats.apple_dart",
    "apple-dart-t8110": "formats.apple_dart",
    "arm-smmu": "formats.arm_lpae",
    "arm-smmu-v3": "formats.arm_lpae",
    "arm-smmu-v7s": "formats.arm_v7s",
    "exynos": "formats.exynos",
    "fsl-pamu": "formats.fsl_pamu",
    "intel-fs": "formats.generic_pt.x86_64",
    "intel-ss": "formats.generic_pt.vtdss",
    "iommufd-mock": "formats.generic_pt.amdv1",
    "iommufd-mock-huge": "formats.generic_pt.amdv1",
    "ipmmu-vmsa": "formats.arm_lpae",
    "msm": "formats.arm_v7s",
    "msm-iommu": "formats.arm_v7s",
    "mtk-iommu": "formats.arm_v7s",
    "mtk-v1": "formats.mtk_v1",
    "omap": "formats.omap",
    "panfrost": "formats.arm_lpae",
    "panthor": "formats.arm_lpae",
    "qcom-iommu": "formats.arm_lpae",
    "riscv": "formats.generic_pt.riscv64",
    "rockchip": "formats.rockchip",
    "s390": "formats.s390",
    "sprd": "formats.sprd",
    "sun50i": "formats.sun50i",
    "tegra-smmu": "formats.tegra_smmu",
    "virtio": "formats.virtio",
}


class UnknownFormat(KeyError):
    pass


def _modules() -> list[str]:
    return sorted({v.split(":")[0] for v in FORMATS.values()})


def available() -> list[str]:
    """Format ids whose module is present in this build."""
    out = []
    for fid in FORMATS:
        try:
            get_format(fid)
        except (ImportError, AttributeError):
            continue
        out.append(fid)
    return out


def get_format(fid: str) -> type[PageTable]:
    target = FORMATS.get(fid)
    if target is None:
        raise UnknownFormat(fid)
    mod, cls = target.split(":")
    return getattr(importlib.import_module(mod), cls)  # type: ignore[no-any-return]


def norm_driver(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def driver(name: str) -> dict[str, Any] | None:
    """One driver's entry, importing only its module."""
    mod = DRIVER_MODULES.get(norm_driver(name))
    if mod is None:
        return None
    for did, d in getattr(importlib.import_module(mod), "DRIVERS", {}).items():
        if norm_driver(did) == norm_driver(name):
            return d  # type: ignore[no-any-return]
    return None


def drivers() -> dict[str, dict[str, Any]]:
    """Every driver id of every available format module."""
    out: dict[str, dict[str, Any]] = {}
    for mod in _modules():
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        for did, d in getattr(m, "DRIVERS", {}).items():
            out[norm_driver(did)] = d
    return dict(sorted(out.items()))
