"""diff, reverse, walk --phys-range and walk --aliases on hand-built domains (issue 9).

Expected answers are worked by hand from the mappings: iommu_pgsize() picks 4K pages for a
mapping whose iova/phys are only 4K-aligned or whose length is under 2M, a 2M block for a
2M-aligned 2M mapping (arm-lpae 4K granule: ARM_LPAE_BLOCK_SIZE(2) = 2M, level 3 pages). The
property tests check every answer against a per-page oracle built from translate() and the
plain leaf list.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iommuctl.diff as diff_mod
from formats import FORMATS
from iommuctl.analysis import PhysAlias, find_aliases, phys_summary
from iommuctl.cli import main
from iommuctl.diff import Change, DiffStats, Side, diff_domains
from iommuctl.domain import Domain, load_domain_text
from iommuctl.errors import UserError
from iommuctl.reverse import ReverseRange, reverse_pas

K4, M1, M2 = 0x1000, 0x100000, 0x200000
R, RW = 1, 3  # IOMMU_READ, IOMMU_READ | IOMMU_WRITE
TOP = 1 << 64


def yaml_text(fmt: str, maps: list[tuple[int, int, int, str]], config: str = "") -> str:
    lines = [f"format: {fmt}"]
    if config:
        lines.append(f"config: {config}")
    lines.append("mappings:")
    lines += [f"  - {{iova: {v:#x}, phys: {p:#x}, size: {s:#x}, prot: {pr}}}" for v, p, s, pr in maps]
    return "\n".join(lines) + "\n"


def build(fmt: str, maps: list[tuple[int, int, int, str]], config: str = "") -> Domain:
    return load_domain_text(yaml_text(fmt, maps, config), ".", fmt)


def write(tmp: Path, name: str, fmt: str, maps: list[tuple[int, int, int, str]], config: str = "") -> str:
    p = tmp / f"{name}.yaml"
    p.write_text(yaml_text(fmt, maps, config))
    return str(p)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out, err = capsys.readouterr()
    rows = [json.loads(x) for x in out.splitlines() if x.startswith("{")] if "--json" in argv else []
    return int(e.value.code or 0), rows, out + err


def available(fmt: str) -> bool:
    try:
        build(fmt, [(M1, 0x8000_0000, K4, "rw")])
    except UserError:
        return False
    return True


# Mappings every 4K-capable format builds with 4K leaves only (lengths under 64K where a format
# has 64K pages, or not 64K-aligned), with read-only and read-write prot.
SMALL = [(0x10_0000, 0x8000_0000, 0xF000, "r"), (0x10_F000, 0x8123_4000, 0x3000, "rw"),
         (0x40_0000, 0x9000_1000, 0x8000, "rw")]


# -- diff ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("other", ["arm-lpae-s2", "arm-lpae-32-s1", "arm-mali-lpae", "arm-v7s", "sun50i",
                                   "tegra-smmu", "rockchip", "vtdss", "x86-64", "riscv64", "s390"])
def test_diff_same_mappings_in_two_formats_is_empty(other: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    if other not in FORMATS or not available(other):
        pytest.skip(f"{other} not built yet")
    a, b = build("arm-lpae-s1", SMALL), build(other, SMALL)
    st_ = DiffStats()
    changes = list(diff_domains(a, b, 0, 1 << 32, stats=st_))
    assert changes == []
    assert (st_.same, st_.added, st_.removed, st_.changed) == (0xF000 + 0x3000 + 0x8000, 0, 0, 0)
    code, rows, _ = run(capsys, "diff", write(tmp_path, "a", "arm-lpae-s1", SMALL),
                        write(tmp_path, "b", other, SMALL), "--range", "0:0x1_0000_0000", "--json")
    assert code == 0
    assert rows == [{"summary": {"differ": False, "added": 0, "removed": 0, "changed": 0, "same": 0x1A000,
                                 "runs": {"added": 0, "removed": 0, "changed": 0},
                                 "range": {"iova": "0x0", "end": "0x100000000"}}}]


def test_diff_across_formats_shows_page_size_and_prot_the_format_imposes() -> None:
    # exynos maps the 64K-aligned 1M..1M+64K piece of a 256K mapping with one 64K large page
    # (SPAGE 4K, LPAGE 64K, SECTION 1M); arm-lpae-s1 has no 64K page: 16 x 4K.
    if not available("exynos"):
        pytest.skip("exynos not built yet")
    maps = [(M1, 0x8000_0000, 0x4_0000, "rw")]
    a, b = build("arm-lpae-s1", maps), build("exynos", maps)
    changes = list(diff_domains(a, b, 0, 1 << 32))
    assert changes == [Change("changed", M1, M1 + 0x4_0000, Side(0x8000_0000, K4, RW), Side(0x8000_0000, 0x1_0000, RW))]
    assert changes[0].what == ["pgsize"]
    assert list(diff_domains(a, b, 0, 1 << 32, ignore=("pgsize",))) == []


@pytest.mark.parametrize("other,what", [("omap", "prot"), ("sprd", "prot"), ("mtk-v1", "prot"), ("amdv1", "pgsize")])
def test_diff_across_formats_what_the_format_cannot_express(other: str, what: str) -> None:
    # omap, sprd and mtk_v1 PTEs carry no permission bits: a read-only mapping reads back rw.
    # amdv1 maps any power-of-two run as one contiguous PTE (its pgsize_bitmap has every size
    # from 4K): iommu_pgsize splits the 60K mapping at 1M into 32K + 16K + 8K + 4K leaves.
    if other not in FORMATS or not available(other):
        pytest.skip(f"{other} not built yet")
    a, b = build("arm-lpae-s1", SMALL), build(other, SMALL)
    changes = list(diff_domains(a, b, 0, 1 << 32))
    assert changes and all(c.kind == "changed" and c.what == [what] for c in changes)
    if what == "prot":
        assert changes == [Change("changed", 0x10_0000, 0x10_F000, Side(0x8000_0000, K4, R),
                                  Side(0x8000_0000, K4, RW))]
    assert list(diff_domains(a, b, 0, 1 << 32, ignore=(what,))) == []


def test_diff_hand_built_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_maps = [(M1, 0x8000_0000, 0x4_0000, "rw"), (2 * M1, 0x9000_0000, 0x4000, "r"),
              (0x4000_0000, 0x8000_0000, M2, "rw"), (0x5000_0000, 0x4000_0000, K4, "rw")]
    b_maps = [(M1, 0x8000_0000, 0x2_0000, "rw"), (M1 + 0x2_0000, 0x8002_1000, 0x2_0000, "rw"),  # phys moved
              (2 * M1, 0x9000_0000, 0x4000, "rw"),  # prot
              (0x4000_0000, 0x8000_0000, M1, "rw"), (0x4010_0000, 0x8010_0000, M1, "rw"),  # 512 x 4K
              (0x6000_0000, 0x8000_0000, K4, "rw")]  # added; 0x5000_0000 removed
    a, b = build("arm-lpae-s1", a_maps), build("arm-lpae-s2", b_maps)
    st_ = DiffStats()
    got = list(diff_domains(a, b, 0, 1 << 48, stats=st_))
    assert got == [
        Change("changed", 0x12_0000, 0x14_0000, Side(0x8002_0000, K4, RW), Side(0x8002_1000, K4, RW)),
        Change("changed", 0x20_0000, 0x20_4000, Side(0x9000_0000, K4, R), Side(0x9000_0000, K4, RW)),
        Change("changed", 0x4000_0000, 0x4020_0000, Side(0x8000_0000, M2, RW), Side(0x8000_0000, K4, RW)),
        Change("removed", 0x5000_0000, 0x5000_1000, Side(0x4000_0000, K4, RW), None),
        Change("added", 0x6000_0000, 0x6000_1000, None, Side(0x8000_0000, K4, RW)),
    ]
    assert [c.what for c in got[:3]] == [["phys"], ["prot"], ["pgsize"]]
    assert (st_.same, st_.added, st_.removed, st_.changed) == (0x2_0000, K4, K4, 0x2_0000 + 0x4000 + M2)
    assert st_.runs == {"added": 1, "removed": 1, "changed": 3}
    # ignoring prot and page size leaves the moved phys and the added/removed pages
    assert [c.kind for c in diff_domains(a, b, 0, 1 << 48, ignore=("pgsize", "prot"))] == \
        ["changed", "removed", "added"]
    # the CLI: exit 1, one JSON object per run, then the summary
    pa, pb = write(tmp_path, "a", "arm-lpae-s1", a_maps), write(tmp_path, "b", "arm-lpae-s2", b_maps)
    code, rows, _ = run(capsys, "diff", pa, pb, "--json")
    assert code == 1
    assert rows[0] == {"change": "changed", "iova": "0x120000", "end": "0x140000", "size": 0x2_0000,
                       "a": {"phys": "0x80020000", "pgsize": 4096, "prot": "rw"},
                       "b": {"phys": "0x80021000", "pgsize": 4096, "prot": "rw"}, "what": ["phys"]}
    assert rows[3] == {"change": "removed", "iova": "0x50000000", "end": "0x50001000", "size": 4096,
                       "a": {"phys": "0x40000000", "pgsize": 4096, "prot": "rw"}}
    assert rows[-1]["summary"]["differ"] is True and rows[-1]["summary"]["runs"]["changed"] == 3
    code, rows, _ = run(capsys, "diff", pa, pb, "--range", "0x4000_0000:0x5000_0000", "--json")
    assert code == 1 and [r.get("change") for r in rows] == ["changed", None]
    code, _, text = run(capsys, "diff", pa, pb, "--range", "0x1000_0000+1M")
    assert code == 0 and "translate the same" in text
    code, _, text = run(capsys, "diff", pa, pb)
    assert code == 1 and "removed" in text and "0x50000000" in text


def test_diff_domain_and_its_unmapped_copy() -> None:
    a = build("arm-lpae-s1", [(M1, 0x8000_0000, 0x10_0000, "rw"), (0x4000_0000, 0x8000_0000, 2 * M2, "rw")])
    b = a.copy()
    # unmap as the kernel does (one leaf at a time, never splitting a block)
    assert b.walker.unmap_leaf(0x4020_0000, M2) == M2
    assert b.walker.unmap_leaf(M1 + 0x5000, K4) == K4 and b.walker.unmap_leaf(M1 + 0x6000, K4) == K4
    assert b.walker.unmap_leaf(M1 + 0x9000, M2) == 0  # a 4K leaf is not a 2M one: nothing unmapped
    assert a.translate(0x4020_0000).mapped  # the original is untouched
    got = list(diff_domains(a, b, 0, 1 << 48))
    assert got == [Change("removed", M1 + 0x5000, M1 + 0x7000, Side(0x8000_5000, K4, RW), None),
                   Change("removed", 0x4020_0000, 0x4040_0000, Side(0x8020_0000, M2, RW), None)]
    assert [(c.kind, c.iova) for c in diff_domains(b, a, 0, 1 << 48)] == [("added", M1 + 0x5000),
                                                                          ("added", 0x4020_0000)]
    # tear everything down: the diff is every mapped byte, removed
    for v, _p, size, *_ in list(b.walker.iter_leaves(0, 1 << 48)):
        assert b.walker.unmap_leaf(v, size) == size
    st_ = DiffStats()
    got = list(diff_domains(a, b, 0, 1 << 48, stats=st_))
    assert st_.removed == 0x10_0000 + 2 * M2 and st_.same == 0 and {c.kind for c in got} == {"removed"}
    assert [(c.iova, c.end) for c in got] == [(M1, 2 * M1), (0x4000_0000, 0x4040_0000)]


def test_diff_against_unmap_sim_write_after(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # unmap-sim --write-after writes the tables as the teardown leaves them: diff shows exactly the
    # mapped bytes of the torn-down range as removed, and nothing else moved
    maps = [(M1, 0x8000_0000, 0x4_0000, "rw"), (0x4000_0000, 0x8000_0000, 2 * M2, "rw"),
            (0x5000_0000, 0x9000_0000, 0x3000, "r")]
    before = write(tmp_path, "before", "arm-lpae-s1", maps)
    code, rows, text = run(capsys, "unmap-sim", before, "--range", "0x4000_0000:0x5000_1000", "--caller", "vfio",
                           "--write-after", str(tmp_path / "after.bin"), "--json")
    if code == 2 and "no such option" in text:
        pytest.skip("unmap-sim --write-after not there yet")
    assert code == 0, text
    after = tmp_path / "after.yaml"
    after.write_text(next(r["yaml"] for r in rows if "write_after" in r))
    code, rows, _ = run(capsys, "diff", before, str(after), "--json")
    assert code == 1
    assert rows == [
        {"change": "removed", "iova": "0x40000000", "end": "0x40400000", "size": 2 * M2,
         "a": {"phys": "0x80000000", "pgsize": M2, "prot": "rw"}},
        {"change": "removed", "iova": "0x50000000", "end": "0x50001000", "size": K4,
         "a": {"phys": "0x90000000", "pgsize": K4, "prot": "r"}},
        {"summary": {"differ": True, "added": 0, "removed": 2 * M2 + K4, "changed": 0, "same": 0x4_0000 + 0x2000,
                     "runs": {"added": 0, "removed": 2, "changed": 0},
                     "range": {"iova": "0x0", "end": "0x1000000000000"}}}]


def test_diff_at_the_top_of_the_address_space() -> None:
    # arm-ttbr1: the input space is the upper half, ending at 2^64 (an end no uint64 holds)
    cfg = "{quirks: [arm-ttbr1]}"
    a = build("arm-lpae-s1", [(TOP - M2, 0x8000_0000, M2, "rw"), (0xFFFF_0000_0000_0000, 0x8000_0000, K4, "r")], cfg)
    b = build("arm-lpae-s1", [(TOP - M2, 0x8000_0000, M1, "rw"), (TOP - M1, 0x8010_0000, M1, "rw")], cfg)
    assert list(diff_domains(a, b, TOP - (1 << 48), TOP)) == [
        Change("removed", 0xFFFF_0000_0000_0000, 0xFFFF_0000_0000_1000, Side(0x8000_0000, K4, R), None),
        Change("changed", TOP - M2, TOP, Side(0x8000_0000, M2, RW), Side(0x8000_0000, K4, RW))]


def test_reverse_and_aliases_at_the_top_of_the_address_space() -> None:
    d = build("arm-lpae-s1", [(TOP - M2, 0x8000_0000, M2, "rw"), (0xFFFF_0000_0000_0000, 0x8000_0000, K4, "r")],
              "{quirks: [arm-ttbr1]}")
    assert [(h.iova, h.leaf_end) for h in reverse_pas(d, [0x801F_F000])[0x801F_F000]] == [(TOP - K4, TOP)]
    phys, _ = find_aliases(d)
    assert phys == [PhysAlias(0x8000_0000, 0x8000_1000, 2, [(0xFFFF_0000_0000_0000, 0xFFFF_0000_0000_1000,
                                                             0x8000_0000, K4, R),
                                                            (TOP - M2, TOP - M2 + K4, 0x8000_0000, M2, RW)])]
    s = phys_summary(d, TOP - (1 << 48), TOP, 0x801F_F000, 0x8020_0000)
    assert (s.mapped, s.runs) == (K4, 1)


def _pages(d: Domain, lo: int, hi: int) -> dict[int, tuple[int, int, int]]:
    """Per 4K IOVA page: (phys, page size, prot), from the plain leaf list."""
    out = {}
    for v, p, size, _lvl, prot, _raw in d.walker.iter_leaves(lo, hi):
        for off in range(0, size, K4):
            if lo <= v + off < hi:
                out[v + off] = (p + off, size, prot)
    return out


def _oracle(a: Domain, b: Domain, lo: int, hi: int, ignore: tuple[str, ...]) -> dict[int, str]:
    pa, pb = _pages(a, lo, hi), _pages(b, lo, hi)
    out = {}
    for v in sorted(set(pa) | set(pb)):
        ta, tb = pa.get(v), pb.get(v)
        if tb is None:
            out[v] = "removed"
        elif ta is None:
            out[v] = "added"
        elif ta[0] != tb[0] or ("pgsize" not in ignore and ta[1] != tb[1]) or ("prot" not in ignore
                                                                            and ta[2] != tb[2]):
            out[v] = "changed"
    return out


_map = st.tuples(st.integers(0, 63), st.integers(0, 4095), st.sampled_from([1, 2, 3, 16, 512, 600]),
                 st.sampled_from(["r", "rw"]))


def _maps(items: list[tuple[int, int, int, str]]) -> list[tuple[int, int, int, str]]:
    """Non-overlapping mappings in an 8 MiB IOVA window, 4K or 2M aligned."""
    out: list[tuple[int, int, int, str]] = []
    used: set[int] = set()
    for slot, page, n, prot in items:
        iova = slot * 0x2_0000 if n < 512 else (slot % 4) * M2
        pages = {iova // K4 + i for i in range(n)}
        if max(pages) >= 2048 or pages & used:
            continue
        used |= pages
        phys = 0x8000_0000 + (page * K4 if n < 512 else (page % 8) * M2)
        out.append((iova, phys, n * K4, prot))
    return out + [(0x4000_0000, 0x7000_0000, K4, "rw")]  # outside the window: a domain needs a mapping


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_map, max_size=8), st.lists(_map, max_size=8), st.integers(1, 40),
       st.sampled_from([(), ("pgsize",), ("prot",)]))
def test_diff_matches_per_page_oracle(ma: list[Any], mb: list[Any], chunk: int, ignore: tuple[str, ...]) -> None:
    a, b = build("arm-lpae-s1", _maps(ma)), build("arm-lpae-s2", _maps(mb))
    old = diff_mod.CHUNK
    diff_mod.CHUNK = chunk  # small chunks: cuts through runs and through 2M blocks
    try:
        changes = list(diff_domains(a, b, 0, 8 * M1, ignore))
    finally:
        diff_mod.CHUNK = old
    got: dict[int, str] = {}
    for i, c in enumerate(changes):
        if i:
            assert not c.follows(changes[i - 1]), "runs are maximal"
        for v in range(c.iova, c.end, K4):
            assert v not in got
            got[v] = c.kind
            # each side of a run is one linear translation
            if c.a and v == c.end - K4:
                assert a.translate(v).phys == c.a.phys + (v - c.iova)
            if c.b and v == c.end - K4:
                assert b.translate(v).phys == c.b.phys + (v - c.iova)
    assert got == _oracle(a, b, 0, 8 * M1, ignore)


# -- reverse ------------------------------------------------------------------------------------

REV = [(M1, 0x8000_0000, 0x4_0000, "rw"), (0x4000_0000, 0x8000_0000, M2, "r"), (0x5000_0000, 0x8003_F000, K4, "rw")]


def test_reverse_pas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = build("arm-lpae-s1", REV)
    hits = reverse_pas(d, [0x8000_0123, 0x8010_0000, 0x8003_F008, 0x1234_5000])
    assert [(h.iova, h.leaf_iova, h.phys, h.pgsize, h.prot, h.level) for h in hits[0x8000_0123]] == [
        (M1 + 0x123, M1, 0x8000_0000, K4, RW, 3), (0x4000_0123, 0x4000_0000, 0x8000_0000, M2, R, 2)]
    assert [(h.iova, h.pgsize) for h in hits[0x8010_0000]] == [(0x4010_0000, M2)]
    assert sorted((h.iova, h.pgsize) for h in hits[0x8003_F008]) == [
        (M1 + 0x3_F008, K4), (0x4003_F008, M2), (0x5000_0008, K4)]
    assert hits[0x1234_5000] == []
    # an IOVA window narrows the answer
    assert [h.iova for h in reverse_pas(d, [0x8003_F008], 0x4000_0000, 0x4100_0000)[0x8003_F008]] == [0x4003_F008]
    path = write(tmp_path, "d", "arm-lpae-s1", REV)
    code, rows, _ = run(capsys, "reverse", path, "0x80000123", "0x12345000", "--json")
    assert code == 1
    assert rows == [
        {"pa": "0x80000123", "mapped": True, "iova": "0x100123", "leaf_iova": "0x100000", "leaf_end": "0x101000",
         "phys": "0x80000000", "pgsize": 4096, "prot": "rw", "level": 3},
        {"pa": "0x80000123", "mapped": True, "iova": "0x40000123", "leaf_iova": "0x40000000",
         "leaf_end": "0x40200000", "phys": "0x80000000", "pgsize": 2097152, "prot": "r", "level": 2},
        {"pa": "0x12345000", "mapped": False}]
    code, rows, _ = run(capsys, "reverse", path, "0x80000123", "--json")
    assert code == 0 and len(rows) == 2
    code, _, text = run(capsys, "reverse", path, "0x80000123", "junk")
    assert code == 2 and "iommuctl: error: PA 'junk'" in text
    code, _, text = run(capsys, "reverse", path)
    assert code == 2 and "needs physical addresses or --range" in text
    code, _, text = run(capsys, "reverse", path, "0x8010_0000")
    assert code == 0 and "0x40100000" in text


def test_reverse_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "d", "arm-lpae-s1", REV)
    # [0x8003_E000, 0x8004_2000): 0x8003_E000 and 0x8003_F000 through the 4K run at 1M, all of it
    # through the 2M block, 0x8003_F000 again through 0x5000_0000.
    code, rows, _ = run(capsys, "reverse", path, "--range", "0x8003_E000:0x8004_2000", "--json")
    rng = {"phys": "0x8003e000", "end": "0x80042000"}
    assert code == 0
    assert rows == [
        {"range": rng, "iova": "0x13e000", "end": "0x140000", "phys": "0x8003e000", "pgsize": 4096, "count": 2,
         "prot": "rw", "level": 3},
        {"range": rng, "iova": "0x4003e000", "end": "0x40042000", "phys": "0x8003e000", "pgsize": 2097152,
         "count": 1, "prot": "r", "level": 2},
        {"range": rng, "iova": "0x50000000", "end": "0x50001000", "phys": "0x8003f000", "pgsize": 4096,
         "count": 1, "prot": "rw", "level": 3},
        {"summary": {"range": rng, "mapped": 0x4000, "unmapped": 0, "aliased": 0x2000, "runs": 3, "holes": 0}}]
    # a window reaching past the block: a hole, exit 1
    code, rows, _ = run(capsys, "reverse", path, "--range", "0x801F_F000+0x3000", "--holes", "--json")
    rng = {"phys": "0x801ff000", "end": "0x80202000"}
    assert code == 1
    assert rows[-2:] == [{"range": rng, "phys": "0x80200000", "end": "0x80202000", "hole": True},
                         {"summary": {"range": rng, "mapped": 0x1000, "unmapped": 0x2000, "aliased": 0, "runs": 1,
                                      "holes": 1}}]
    code, _, text = run(capsys, "reverse", path, "--range", "0x8003_E000:0x8004_2000", "--holes")
    assert code == 0 and "16K mapped in 3 IOVA runs" in text
    code, _, text = run(capsys, "reverse", path, "--range", "0x9000:0x8000")
    assert code == 2 and "empty range" in text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_map, max_size=8), st.lists(st.integers(0, 9000), min_size=1, max_size=6))
def test_reverse_matches_leaf_list(ma: list[Any], pages: list[int]) -> None:
    d = build("arm-lpae-s1", _maps(ma) + [(0x100_0000, 0x8000_0000, 0x1_0000, "rw")])  # an alias of low phys
    leaves = list(d.walker.iter_leaves(0, 1 << 48))
    pas = [0x8000_0000 + p * 0x200 + 8 for p in pages]
    hits = reverse_pas(d, pas)
    for pa in pas:
        want = sorted(v + pa - p for v, p, size, *_ in leaves if p <= pa < p + size)
        assert sorted(h.iova for h in hits[pa]) == want
        for h in hits[pa]:
            t = d.translate(h.iova)
            assert (t.phys, t.size, t.prot, t.level) == (pa, h.pgsize, h.prot, h.level)


# -- walk --phys-range --------------------------------------------------------------------------

def test_walk_phys_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = build("arm-lpae-s1", REV)
    s = phys_summary(d, 0, 1 << 48, 0x8003_F000, 0x8004_2000)
    # leaves: the 4K page 0x8003_F000 (at 0x13_F000), the 2M block (3 pages of it in the window),
    # the 4K page at 0x5000_0000; bytes with output in the window: 4K + 12K + 4K
    assert (s.mapped, s.runs, dict(s.leaves)) == (0x5000, 3, {K4: 2, M2: 1})
    path = write(tmp_path, "d", "arm-lpae-s1", REV)
    code, rows, _ = run(capsys, "walk", path, "--phys-range", "0x8003_F000+0x3000", "--json")
    assert code == 0
    assert [(r["iova"], r["phys"], r["pgsize"]) for r in rows[:-1]] == [
        ("0x13f000", "0x8003f000", 4096), ("0x40000000", "0x80000000", 2097152), ("0x50000000", "0x8003f000", 4096)]
    assert rows[-1]["summary"]["mapped"] == 0x5000
    code, rows, _ = run(capsys, "walk", path, "--phys-range", "0x8003_F000+0x3000", "--range", "0:0x4000_1000",
                        "--summary", "--json")
    # IOVA-clipped too: the block contributes only [0x4000_0000, 0x4000_1000), whose output is
    # 0x8000_0000, outside the window
    assert rows[0]["summary"]["mapped"] == K4 and rows[0]["summary"]["runs"] == 2
    code, rows, _ = run(capsys, "walk", path, "--phys-range", "0x7000_0000+16M", "--json")
    assert rows[-1]["summary"] == {"mapped": 0, "runs": 0, "leaves": {},
                                   "range": {"iova": "0x0", "end": "0x1000000000000"}}
    code, _, text = run(capsys, "walk", path, "--phys-range", "0x8003_F000+0x3000", "--holes")
    assert code == 2 and "--holes does not combine with --phys-range" in text
    code, _, text = run(capsys, "walk", path, "--phys-range", "nonsense")
    assert code == 2 and "--phys-range 'nonsense'" in text


# -- aliases ------------------------------------------------------------------------------------

def test_phys_aliases() -> None:
    d = build("arm-lpae-s1", [(M1, 0x8000_0000, 0x4_0000, "rw"), (0x4000_0000, 0x8000_0000, M2, "r"),
                              (0x5000_0000, 0x8003_F000, K4, "rw"), (0x6000_0000, 0x9000_0000, 0x4000, "rw")])
    phys, _ = find_aliases(d)
    assert phys == [PhysAlias(0x8000_0000, 0x8004_0000, 3, [(M1, M1 + 0x4_0000, 0x8000_0000, K4, RW),
                                                            (0x4000_0000, 0x4004_0000, 0x8000_0000, M2, R),
                                                            (0x5000_0000, 0x5000_1000, 0x8003_F000, K4, RW)])]
    # restricted to a physical window that misses the alias
    assert find_aliases(d, phys_window=(0x9000_0000, 0x9100_0000)) == ([], [])


def test_table_pages_mapped_by_the_domain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # tables_at 0x4000_0000: the builder allocates the root there, then the first mapping's L1, L2,
    # L3 tables at 0x4000_1000, 0x4000_2000, 0x4000_3000 (4K granule: one 4K table per level).
    # The second mapping exposes those four pages read-only, the third the root page writable.
    maps = [(M1, 0x8000_0000, K4, "rw"), (0x7000_0000, 0x4000_0000, 0x4000, "r"),
            (0x7100_0000, 0x4000_0000, K4, "rw")]
    d = build("arm-lpae-s1", maps)
    assert d.roots == [0x4000_0000]
    _, tabs = find_aliases(d)
    got = [(t.table, t.level, t.nbytes, t.iova, t.end, t.prot, t.writable) for t in tabs]
    assert got == [(0x4000_0000, 0, 4096, 0x7000_0000, 0x7000_1000, R, False),
                   (0x4000_0000, 0, 4096, 0x7100_0000, 0x7100_1000, RW, True),
                   (0x4000_1000, 1, 4096, 0x7000_1000, 0x7000_2000, R, False),
                   (0x4000_2000, 2, 4096, 0x7000_2000, 0x7000_3000, R, False),
                   (0x4000_3000, 3, 4096, 0x7000_3000, 0x7000_4000, R, False)]
    path = write(tmp_path, "d", "arm-lpae-s1", maps)
    code, rows, _ = run(capsys, "walk", path, "--aliases", "--json")
    assert code == 0
    assert rows[0] == {"alias": "phys", "phys": "0x40000000", "end": "0x40001000", "depth": 2,
                       "mappings": [{"iova": "0x70000000", "end": "0x70001000", "phys": "0x40000000",
                                     "pgsize": 4096, "prot": "r"},
                                    {"iova": "0x71000000", "end": "0x71001000", "phys": "0x40000000",
                                     "pgsize": 4096, "prot": "rw"}]}
    assert rows[2] == {"alias": "table", "table": "0x40000000", "level": 0, "bytes": 4096, "iova": "0x71000000",
                       "end": "0x71001000", "phys": "0x40000000", "pgsize": 4096, "prot": "rw", "writable": True}
    assert rows[-1]["summary"] == {"phys_aliases": 1, "aliased_bytes": 4096, "mapped_tables": 4,
                                   "writable_tables": 1, "range": {"iova": "0x0", "end": "0x1000000000000"}}
    code, _, text = run(capsys, "walk", path, "--aliases")
    assert code == 0 and "4 page tables mapped by the domain (1 writable)" in text


def test_aliases_in_a_two_level_format_with_small_tables() -> None:
    # exynos: 16K lv1 table, 1K lv2 tables (NUM_LV2ENTRIES 256 x 4 bytes), 4K-granular map of a
    # page holding the root's first 4K and (later) lv2 tables
    if not available("exynos"):
        pytest.skip("exynos not built yet")
    d = build("exynos", [(M1, 0x4000_0000, K4, "rw")])
    _, tabs = find_aliases(d)
    assert [(t.table, t.nbytes, t.iova, t.end) for t in tabs] == [(0x4000_0000, 0x4000, M1, M1 + K4)]


# -- bad input ----------------------------------------------------------------------------------

def test_a_table_cycle_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # L0[0] of the root at 0x1000 points back at the root (ARM_LPAE_PTE_TYPE_TABLE = 3)
    p = tmp_path / "cycle.yaml"
    p.write_text("format: arm-lpae-s1\nroot: 0x1000\nmemory:\n  - hex: {0x1000: '03 10 00 00 00 00 00 00'}\n"
                 "  - zero: {base: 0x1008, length: 0xff8}\n")
    for argv in (["walk", str(p), "--aliases"], ["walk", str(p), "--phys-range", "0+1G"],
                 ["reverse", str(p), "0x1000"], ["diff", str(p), str(p)]):
        code, _, text = run(capsys, *argv)
        assert code == 2 and "iommuctl: error:" in text and "Traceback" not in text, argv


# -- the benchmark's hand-written image ---------------------------------------------------------

def test_bench_image_is_what_the_kernel_map_writes(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        import phys_queries
    finally:
        sys.path.pop(0)
    from iommuctl.domain import load_domain

    yaml_path, phys = phys_queries.build_image(tmp_path, 1)  # 1 GiB: 262144 leaves, 513 L3 tables
    d = load_domain(yaml_path)
    rng = np.random.default_rng(3)
    for k in rng.integers(0, len(phys), 20).tolist():
        t = d.translate(k * K4 + 0x10)
        assert (t.phys, t.size, t.prot) == (int(phys[k]) + 0x10, K4, RW)
    # the same pages built through `mappings:` give the same translations (diff is empty)
    built = load_domain_text("format: arm-lpae-s1\nmappings:\n  - {iova: 0, size: 1G, prot: rw, "
                             f"phys: {{scatter: 4K, seed: {phys_queries.SEED}, base: {phys_queries.PHYS_BASE:#x}}}}}\n")
    assert list(diff_domains(d, built, 0, 1 << 30)) == []
    pa = int(phys[1234]) + 8
    assert [h.iova for h in reverse_pas(d, [pa])[pa]] == [1234 * K4 + 8]
    lo = phys_queries.PHYS_BASE + (1 << 28)
    s = phys_summary(d, 0, 1 << 48, lo, lo + (1 << 28))
    inside = int(((phys >= np.uint64(lo)) & (phys < np.uint64(lo + (1 << 28)))).sum())
    assert (s.mapped, s.runs) == (inside * K4, inside)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 63), st.integers(0, 40), st.sampled_from([1, 2, 3, 16, 512])),
                max_size=8))
def test_aliases_match_per_page_count(items: list[tuple[int, int, int]]) -> None:
    # phys pages drawn from a small pool so that aliases are common
    maps = _maps([(slot, page, n, "rw") for slot, page, n in items])
    d = build("arm-lpae-s1", maps)
    reached: dict[int, list[int]] = {}
    for v, p, size, *_ in d.walker.iter_leaves(0, 1 << 48):
        for off in range(0, size, K4):
            reached.setdefault(p + off, []).append(v + off)
    want = {p: sorted(vs) for p, vs in reached.items() if len(vs) > 1}
    phys, tabs = find_aliases(d)
    got: dict[int, list[int]] = {}
    for a in phys:
        assert a.depth == max(len(want[p]) for p in range(a.phys, a.end, K4))
        for v, e, p0, _pg, _pr in a.mappings:
            assert a.phys <= p0 and p0 + (e - v) <= a.end
            for off in range(0, e - v, K4):
                got.setdefault(p0 + off, []).append(v + off)
    assert {p: sorted(vs) for p, vs in got.items()} == want
    assert tabs == []  # the pool 0x8000_0000.. holds no tables (tables_at 0x4000_0000)


_FUZZ_BASE: list[Domain] = []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 511),
                          st.one_of(st.integers(0, (1 << 64) - 1), st.sampled_from([0x4000_0003, 0x4000_1003, 3, 1])),
                          ), min_size=1, max_size=4))
def test_junk_tables_give_answers_or_user_errors(edits: list[tuple[int, int, int]]) -> None:
    # junk descriptors (random, pointing back at the root or the L1 table, bare type bits) in the
    # six tables of a built domain: every analysis answers or raises UserError, nothing else
    if not _FUZZ_BASE:
        _FUZZ_BASE.append(build("arm-lpae-s1", [(M1, 0x8000_0000, 0x4_0000, "rw"), (0x4000_0000, 0x8000_0000, M2, "r"),
                                                (0x7000_0000, 0x4000_0000, 0x6000, "rw")]))
    base = _FUZZ_BASE[0]
    d = base.copy()
    for table, index, value in edits:
        d.mem.write_uint(0x4000_0000 + table * K4 + index * 8, 8, value)
    for call in (lambda: find_aliases(d), lambda: reverse_pas(d, [0x8000_0000, 0x4000_0000]),
                 lambda: list(ReverseRange(d, 0x4000_0000, 0x9000_0000, 0, 1 << 48).runs()),
                 lambda: phys_summary(d, 0, 1 << 48, 0, 1 << 40), lambda: list(diff_domains(base, d, 0, 1 << 48)),
                 lambda: list(diff_domains(d, base, 0, 1 << 48))):
        try:
            call()
        except UserError:
            pass
