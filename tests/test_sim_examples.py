"""unmap-sim against the worked examples of callers.md section 8, count by count (P = 4 KiB;
VFIO: one domain, fast path OK; IOMMUFD: one domain, no accesses, each area at index 0 of its
own iopt_pages, kmalloc succeeds), plus SPEC section 6's JSON example.

Domains are arm-lpae-s1 4K, 48-bit (4 levels from level 0): a walk to a 2M block reads 3
entries (L0, L1, L2), to a 4K page 4 entries.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from iommuctl.domain import load_domain_text
from iommuctl.sim import simulate

G, M, K = 1 << 30, 1 << 20, 1 << 10


def domain(mappings: str, fmt: str = "format: arm-lpae-s1") -> object:
    return load_domain_text(f"{fmt}\nmappings:\n{mappings}")


def row(r: object, which: str) -> tuple[int, int, int, int, int]:
    c = getattr(r, which).counts
    return (c.translations, c.unmaps, c.syncs, c.unpin_calls, c.unpinned_pages)


# -- Example 1a: 1 GiB of 2 MiB PTEs, physically contiguous as a whole -------------------------


@pytest.fixture(scope="module")
def ex1a() -> object:
    # iova 1G-aligned, phys only 2M-aligned: iommu_pgsize can only pick 2M: 512 2M blocks
    return domain("  - {iova: 0x40000000, phys: 0x80200000, size: 1G}")


def test_example_1a(ex1a: object) -> None:
    mode = "runs"  # the 262144-page replay is checked at 64 MiB scale below
    v = simulate(ex1a, "vfio", 0x40000000, 0x80000000, mode=mode)
    assert row(v, "legacy") == (262144, 1, 1, 1, 262144)
    assert row(v, "length_aware") == (512, 1, 1, 1, 262144)
    # SPEC section 6 JSON example: 3 entries per walk, floor = L0 + L1 + 512 L2 entries
    assert v.legacy.counts.entries_read == 786432
    assert v.length_aware.counts.entries_read == 1536
    assert v.floor == 514
    f = simulate(ex1a, "iommufd", 0x40000000, 0x80000000, mode=mode)
    assert row(f, "legacy") == (262144, 1, 1, 1, 262144)
    assert row(f, "length_aware") == (512, 1, 1, 1, 262144)
    assert v.ok and f.ok


def test_example_1a_scaled_replay_matches_runs() -> None:
    # the same shape at 64 MiB (32 2M blocks), replayed call by call
    d = domain("  - {iova: 0x40000000, phys: 0x80200000, size: 64M}")
    for caller in ("vfio", "iommufd"):
        a = simulate(d, caller, 0x40000000, 0x44000000, mode="replay")
        b = simulate(d, caller, 0x40000000, 0x44000000, mode="runs")
        assert a.ok
        assert a.legacy.counts.as_dict() == b.legacy.counts.as_dict()
        assert a.length_aware.counts.as_dict() == b.length_aware.counts.as_dict()
        assert row(a, "legacy") == (16384, 1, 1, 1, 16384)
        assert row(a, "length_aware") == (32, 1, 1, 1, 16384)


# -- Example 1b: 1 GiB of 2 MiB hugepages, each physically separate ------------------------------


def test_example_1b() -> None:
    maps = "\n".join(f"  - {{iova: {i * 2 * M:#x}, phys: {0x100000000 + i * 4 * M:#x}, size: 2M}}" for i in range(512))
    d = domain(maps)
    v = simulate(d, "vfio", 0, G, mode="runs")
    assert row(v, "legacy") == (262144 + 511, 512, 1, 512, 262144)
    assert row(v, "length_aware") == (512 + 511, 512, 1, 512, 262144)
    f = simulate(d, "iommufd", 0, G, mode="runs")
    assert row(f, "legacy") == (262144, 1, 1, 512, 262144)
    assert row(f, "length_aware") == (512, 1, 1, 512, 262144)


# -- Example 2: 1 GiB of physically scattered 4 KiB pages ---------------------------------------


def test_example_2() -> None:
    d = domain("  - {iova: 0x0, size: 1G, phys: {scatter: 4K, seed: 3, base: 0x1000000000}}")
    v = simulate(d, "vfio", 0, G, mode="runs")
    assert row(v, "legacy") == (524287, 262144, 512, 262144, 262144)
    assert row(v, "length_aware") == (524287, 262144, 512, 262144, 262144)
    f = simulate(d, "iommufd", 0, G, mode="runs")
    # A = min(262144, 5461) = 5461, B = ceil(262144 / 5461) = 49
    assert row(f, "legacy") == (262144 + 48, 49, 49, 262144, 262144)
    assert row(f, "length_aware") == (262144 + 48, 49, 49, 262144, 262144)


# -- Example 3: 8 MiB mix with a hole ----------------------------------------------------------

EX3 = """\
  - {iova: 0x000000, phys: 0x40000000, size: 4M}
  - {iova: 0x400000, phys: 0x40400000, size: 1M}
  - {iova: 0x600000, phys: 0x90000000, size: 512K}
  - {iova: 0x680000, size: 512K, phys: {scatter: 4K, seed: 9, base: 0xc0000000}}
  - {iova: 0x700000, phys: 0xa0000000, size: 1M}
"""


@pytest.mark.parametrize("mode", ["replay", "runs"])
def test_example_3_vfio(mode: str) -> None:
    d = domain(EX3)
    v = simulate(d, "vfio", 0, 8 * M, mode=mode)
    assert row(v, "legacy") == (2178, 131, 1, 131, 1792)
    assert row(v, "length_aware") == (1156, 131, 1, 131, 1792)
    assert v.legacy.counts.warns == v.length_aware.counts.warns == 256
    assert v.hole_pages == 256
    assert v.legacy.holes == [(5 * M, 6 * M)]
    assert v.ok


@pytest.mark.parametrize("mode", ["replay", "runs"])
def test_example_3_iommufd(mode: str) -> None:
    d = domain(EX3)
    f = simulate(d, "iommufd", 0, 8 * M, mode=mode)
    assert f.units == [(0, 5 * M), (6 * M, 8 * M)]  # the IOVA gap between areas is never visited
    assert row(f, "legacy") == (1792, 2, 2, 131, 1792)
    assert row(f, "length_aware") == (770, 2, 2, 131, 1792)
    assert f.ok


# -- Example 4: panfrost -----------------------------------------------------------------------


def test_example_4_panfrost_heap() -> None:
    v = 0x10000000
    d = domain(f"  - {{iova: {v:#x}, phys: 0x80000000, size: 2M}}\n"
               f"  - {{iova: {v + 2 * M:#x}, phys: 0x80600000, size: 2M}}\n"
               f"  - {{iova: {v + 10 * M:#x}, phys: 0x81000000, size: 2M}}", "driver: panfrost")
    r = simulate(d, "panfrost", v, v + 16 * M, heap=True)
    for which in ("legacy", "length_aware"):
        c = getattr(r, which).counts
        assert (c.translations, c.unmaps, c.syncs) == (8, 3, 1)
    assert r.ok


@pytest.mark.parametrize("mode", ["replay", "runs"])
def test_example_4_panfrost_bo(mode: str) -> None:
    v = 0x10000000
    d = domain(f"  - {{iova: {v:#x}, phys: 0x80000000, size: 16M}}", "driver: panfrost")
    r = simulate(d, "panfrost", v, v + 16 * M, mode=mode)
    for which in ("legacy", "length_aware"):
        c = getattr(r, which).counts
        assert (c.translations, c.unmaps, c.syncs, c.driver_unmaps) == (0, 1, 1, 1)  # 2M x 8
    assert r.ok


# -- the command ---------------------------------------------------------------------------------


def test_cli_vm_guest_all_ratio_512() -> None:
    """The bundled VM domain: side-by-side tables for every caller; on 1 GiB of physically
    contiguous 2M blocks the VFIO translation ratio is 512."""
    from iommuctl.cli import cli

    res = CliRunner().invoke(cli, ["unmap-sim", "example:vm-guest", "--caller", "all", "--range", "0+1G"])
    assert res.exit_code == 0, res.output
    assert "vfio: [0x0, 0x40000000)" in res.output and "iommufd: [0x0, 0x40000000)" in res.output
    line = next(x for x in res.output.splitlines() if "translations" in x)
    assert "262144" in line and "512" in line and "512x" in line
    assert "UNCONFIRMED" in res.output


def write_domain(tmp_path: object, text: str) -> str:
    p = tmp_path / "d.yaml"  # type: ignore[operator]
    p.write_text(text)
    return str(p)


def test_cli_json_and_hole_report(tmp_path: object) -> None:
    from iommuctl.cli import cli

    path = write_domain(tmp_path, "format: arm-lpae-s1\nmappings:\n" + EX3)
    res = CliRunner().invoke(cli, ["unmap-sim", path, "--range", "0+8M", "--caller", "vfio", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.splitlines()[0])
    assert set(out) >= {"caller", "range", "ok", "legacy", "length_aware", "floor"}
    assert out["range"] == {"iova": "0x0", "end": "0x800000"}
    assert out["legacy"]["translations"] == 2178 and out["length_aware"]["translations"] == 1156
    assert out["hole_pages"] == 256 and out["holes"] == [{"iova": "0x500000", "end": "0x600000"}]
    res = CliRunner().invoke(cli, ["unmap-sim", path, "--range", "0+8M", "--caller", "vfio"])
    assert "256 pages the legacy loop WARNs" in res.output


def test_cli_help_marks_unconfirmed() -> None:
    from iommuctl.cli import cli

    res = CliRunner().invoke(cli, ["unmap-sim", "--help"])
    assert res.exit_code == 0
    assert res.output.count("UNCONFIRMED") == 3


def test_cli_trace_small_range(tmp_path: object) -> None:
    from iommuctl.cli import cli

    path = write_domain(tmp_path, "format: arm-lpae-s1\nmappings:\n" + EX3)
    res = CliRunner().invoke(cli, ["unmap-sim", path, "--range", "0x600000+16K", "--caller", "vfio", "--trace"])
    assert res.exit_code == 0, res.output
    assert "iova_to_phys(0x600000) = 0x90000000  [4 entries]" in res.output
    assert "iova_to_phys_length(0x600000) = 0x90000000, 0x1000  [4 entries]" in res.output
    assert "iommu_unmap_fast(0x600000, 0x4000) = 0x4000" in res.output
