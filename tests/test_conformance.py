"""Every kernel conformance case in fixtures/conformance, through the Python API.

The images and answers were produced by the kernel's own code (see fixtures/conformance/
README-vectors.md): translation, leaf size and the driver's legacy iova_to_phys per probe, the
exact leaf set of the whole space, and the bytes left mapped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from formats import FORMATS, get_format
from iommuctl.domain import Domain, load_domain_text
from iommuctl.walk import summarise

HERE = Path(__file__).resolve().parent
CASES = sorted(p for p in (HERE.parent / "fixtures" / "conformance").iterdir() if (p / "case.json").exists())
PHYS_ADDR_MAX = (1 << 64) - 1

KERNEL_FORMATS = {
    "ARM_64_LPAE_S1": "arm-lpae-s1", "ARM_64_LPAE_S2": "arm-lpae-s2", "ARM_32_LPAE_S1": "arm-lpae-32-s1",
    "ARM_32_LPAE_S2": "arm-lpae-32-s2", "ARM_MALI_LPAE": "arm-mali-lpae", "ARM_V7S": "arm-v7s",
    "APPLE_DART": "apple-dart", "APPLE_DART2": "apple-dart2", "generic_pt-amdv1": "amdv1",
    "generic_pt-vtdss": "vtdss", "generic_pt-x86_64": "x86-64", "generic_pt-riscv64": "riscv64",
}
GENERIC_PT = ("amdv1", "vtdss", "x86-64", "riscv64")
DRIVER_ROOT = {"exynos": "pt_base", "rockchip": "dte_addr", "omap": "mmu_ttb", "sun50i": "ttb",
               "tegra-smmu": "ptb_data", "sprd": "first_ppn", "mtk-v1": "pt_base_addr", "s390": "iota"}


def flag(name: str) -> str:
    for prefix in ("IO_PGTABLE_QUIRK_", "PT_FEAT_"):
        name = name.removeprefix(prefix)
    return name.lower().replace("_", "-")


def fmt_of(case: dict) -> str:
    return KERNEL_FORMATS.get(case["format"], case["format"])


def raw_root(case: dict) -> int | None:
    fmt = fmt_of(case)
    if fmt in GENERIC_PT or fmt.startswith("apple-dart"):
        return None
    if fmt in DRIVER_ROOT:
        return case["roots"][DRIVER_ROOT[fmt]]
    for key in ("ttbr", "vttbr", "transtab"):
        if isinstance(case["roots"].get(key), int):
            return case["roots"][key]
    return None


def domain_for(case: dict, image: Path, style: str) -> Domain:
    """The domain file ../shared/conformance/run writes for a case, loaded through the API."""
    cfg, roots, fmt = case["config"], case["roots"], fmt_of(case)
    if fmt in DRIVER_ROOT:
        config = dict(cfg["user"])
    elif fmt in GENERIC_PT:
        config = {"levels": roots["top_level"] + 1, "vasz": cfg["max_vasz_lg2"], "oasz": cfg["max_oasz_lg2"],
                  "features": [flag(f) for f in cfg.get("features_list", [])]}
    else:
        config = {"ias": cfg["ias"], "oas": cfg["oas"]}
        if not fmt.startswith("arm-v7s"):
            config["granule"] = cfg["granule"]
        config["quirks"] = [flag(q) for q in cfg.get("quirks_list", [])]
    lines = [f"format: {fmt}", "config:"] + [f"  {k}: {json.dumps(v)}" for k, v in config.items()]
    if fmt.startswith("apple-dart"):
        lines.append("roots: [" + ", ".join(hex(r) for r in roots["ttbr"]) + "]")
    elif style == "ttbr":
        lines.append(f"ttbr: {hex(raw_root(case))}")  # type: ignore[arg-type]
    elif fmt in GENERIC_PT:
        lines.append(f"root: {hex(roots['top_table_phys'])}")
    elif fmt in DRIVER_ROOT:
        lines.append(f"root: {hex(roots['root_table_phys'])}")
    else:
        lines.append(f"root: {hex(roots['root_tables'][0]['phys'])}")
    lines += ["memory:", f"  - file: {json.dumps(str(image))}", f"    base: {hex(case['image_base'])}"]
    window = case.get("image_window")
    if window and window.get("zero_outside_image"):
        lo, hi = window["table_phys"], window["table_phys"] + window["table_size"]
        img_lo, img_hi = case["image_base"], case["image_base"] + case["image_size"]
        for base, end in ((lo, min(hi, img_lo)), (max(lo, img_hi), hi)):
            if end > base:
                lines.append(f"  - zero: {{base: {hex(base)}, length: {hex(end - base)}}}")
    return load_domain_text("\n".join(lines) + "\n", image.parent, case["name"])


def available(case: dict) -> bool:
    try:
        get_format(fmt_of(case))
    except (ImportError, AttributeError, KeyError):
        return False
    return True


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case_dir(request: pytest.FixtureRequest) -> Path:
    return request.param  # type: ignore[no-any-return]


def load_case(case_dir: Path) -> dict:
    case = json.loads((case_dir / "case.json").read_text())
    assert fmt_of(case) in FORMATS
    if not available(case):
        pytest.skip(f"format {fmt_of(case)} not built yet")
    return case


def test_translate_matches_kernel(case_dir: Path) -> None:
    case = load_case(case_dir)
    styles = ["root"] + (["ttbr"] if raw_root(case) is not None else [])
    for style in styles:
        dom = domain_for(case, case_dir / "image.bin", style)
        for p in case["probes"]:
            iova = p["iova"]
            want = p.get("expected_phys", p["kernel_iova_to_phys"] or None)
            t = dom.translate(iova)
            if want is None:
                assert (t.mapped, t.phys, t.size) == (False, PHYS_ADDR_MAX, 0), (style, p)
            else:
                assert (t.mapped, t.phys, t.size) == (True, want, p["expected_pgsize"]), (style, p)
            if p["kernel_iova_to_phys"] is not None:  # None: the kernel's own walk faulted (s390 5-level)
                assert dom.fmt.legacy_iova_to_phys(iova, t) == p["kernel_iova_to_phys"], (style, p)


def test_walk_gives_exactly_the_kernel_leaves(case_dir: Path) -> None:
    case = load_case(case_dir)
    dom = domain_for(case, case_dir / "image.bin", "root")
    want = set()
    for m in case["mappings"]:
        if m["unmapped"]:
            continue
        for c in m["chunks"]:
            leaf = c.get("leaf_pgsize", c["pgsize"])
            for i in range(c["count"] * c["pgsize"] // leaf):
                want.add((c["iova"] + i * leaf, c["phys"] + i * leaf, leaf))
    lo = min(s for s, _ in dom.windows)
    hi = max(e for _, e in dom.windows)
    got = {(iova, phys, size) for iova, phys, size, *_ in dom.walker.iter_leaves(lo, hi)}
    assert got == want
    assert summarise(dom, lo, hi).mapped == sum(s for _, _, s in want)
