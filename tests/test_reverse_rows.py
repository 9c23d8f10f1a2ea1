"""reverse --range builds its runs as arrays and writes them with numpy (iommuctl.reverse); the
rows, holes and coverage must be what a plain per-leaf computation gives: each leaf clipped to
the window, pieces merged in IOVA order while IOVA- and PA-contiguous with one page size and
prot, and a per-page count of the window for mapped, aliased and holes."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iommuctl.reverse as reverse_mod
from formats.base import prot_str
from iommuctl.cli import main
from iommuctl.domain import load_domain
from iommuctl.numbers import fmt_size
from iommuctl.output import plain_table

from .test_analysis import _map, _maps, yaml_text

K4 = 0x1000


def oracle(path: Path, plo: int, phi: int) -> tuple[list[dict[str, Any]], list[tuple[int, int]], int, int]:
    """(runs, holes, mapped, aliased) of a page-aligned window, leaf by leaf and page by page."""
    d = load_domain(str(path))
    runs: list[dict[str, Any]] = []
    pages: Counter[int] = Counter()
    for v, p, size, lvl, prot, _raw in d.walker.iter_leaves(0, 1 << 48):
        lo, hi = max(p, plo), min(p + size, phi)
        if lo >= hi:
            continue
        iova = v + (lo - p)
        for pa in range(lo, hi, K4):
            pages[pa] += 1
        r = runs[-1] if runs else None
        if r and r["end"] == iova and r["phys_end"] == lo and r["pgsize"] == size and r["prot"] == prot:
            r["end"], r["phys_end"], r["count"] = iova + hi - lo, hi, r["count"] + 1
        else:
            runs.append({"iova": iova, "end": iova + hi - lo, "phys": lo, "phys_end": hi, "pgsize": size,
                         "count": 1, "prot": prot, "level": lvl})
    holes: list[tuple[int, int]] = []
    for pa in range(plo, phi, K4):
        if not pages[pa]:
            if holes and holes[-1][1] == pa:
                holes[-1] = (holes[-1][0], pa + K4)
            else:
                holes.append((pa, pa + K4))
    mapped = K4 * sum(1 for n in pages.values() if n)
    aliased = K4 * sum(1 for n in pages.values() if n > 1)
    return runs, holes, mapped, aliased


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        main(["reverse", *argv])
    return capsys.readouterr().out


def check(capsys: pytest.CaptureFixture[str], path: Path, plo: int, phi: int) -> None:
    runs, holes, mapped, aliased = oracle(path, plo, phi)
    rng = {"phys": f"{plo:#x}", "end": f"{phi:#x}"}
    rows = [json.loads(x) for x in run(capsys, str(path), "--range", f"{plo:#x}:{phi:#x}", "--holes",
                                       "--json").splitlines()]
    assert rows[:-1] == [{"range": rng, "iova": f"{r['iova']:#x}", "end": f"{r['end']:#x}", "phys": f"{r['phys']:#x}",
                          "pgsize": r["pgsize"], "count": r["count"], "prot": prot_str(r["prot"]),
                          "level": r["level"]} for r in runs] + [
        {"range": rng, "phys": f"{a:#x}", "end": f"{z:#x}", "hole": True} for a, z in holes]
    assert rows[-1] == {"summary": {"range": rng, "mapped": mapped, "unmapped": phi - plo - mapped,
                                    "aliased": aliased, "runs": len(runs), "holes": len(holes)}}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        plain_table(f"{path}: IOVAs mapping [{plo:#x}, {phi:#x})", reverse_mod.HEAD,
                    [[f"{r['iova']:#x}", f"{r['end']:#x}", f"{r['phys']:#x}", f"{r['phys_end']:#x}",
                      fmt_size(r["pgsize"]), str(r["count"]), str(r["level"]), prot_str(r["prot"])] for r in runs]
                    + [["", "", f"{a:#x}", f"{z:#x}", "hole", "", "", ""] for a, z in holes], ("pgsize", "count"))
    text = run(capsys, str(path), "--range", f"{plo:#x}:{phi:#x}", "--holes")
    assert text[:text.rstrip("\n").rfind("\n") + 1] == out.getvalue()


def write(tmp: Path, maps: list[tuple[int, int, int, str]]) -> Path:
    p = tmp / "d.yaml"
    p.write_text(yaml_text("arm-lpae-s1", maps))
    return p


def test_runs_across_leaf_tables_are_not_aliases(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Two 2M blocks either side of the 1G boundary: two level-2 tables (two leaf batches), one
    # run; 4 MiB of 4K pages elsewhere; 2 pages mapped twice: exactly 8K aliased.
    path = write(tmp_path, [(0x3FE0_0000, 0x8000_0000, 0x40_0000, "rw"), (0x10_0000, 0x9000_0000, 0x40_0000, "rw"),
                            (0x5000_0000, 0x8010_0000, 0x2000, "r")])
    assert [len(b) for b in load_domain(str(path)).leaves(0x3FE0_0000, 0x4020_0000)] == [1, 1]
    check(capsys, path, 0x8000_0000, 0x9080_0000)
    runs, _, mapped, aliased = oracle(path, 0x8000_0000, 0x9080_0000)
    assert [(r["iova"], r["count"]) for r in runs] == [(0x10_0000, 1024), (0x3FE0_0000, 2), (0x5000_0000, 2)]
    assert (mapped, aliased) == (0x80_0000, 0x2000)
    monkeypatch.setattr(reverse_mod, "ROWS_CHUNK", 1)
    check(capsys, path, 0x7FFF_F000, 0x9040_1000)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(_map, min_size=1, max_size=8), st.integers(0, 4095), st.integers(1, 4096))
def test_random_windows(tmp_path: Path, capsys: pytest.CaptureFixture[str], ma: list[Any], first: int,
                        pages: int) -> None:
    path = write(tmp_path, _maps(ma))
    plo = 0x8000_0000 + first * K4
    check(capsys, path, plo, plo + pages * K4)


def test_shared_and_touching_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # two runs with the same output (both ends shared), a third touching them: one gap-free
    # stretch of 12K, 8K of it reached twice, holes either side
    path = write(tmp_path, [(0x10_0000, 0x8000_0000, 0x2000, "rw"), (0x20_0000, 0x8000_0000, 0x2000, "r"),
                            (0x30_0000, 0x8000_2000, 0x1000, "rw")])
    check(capsys, path, 0x7FFF_F000, 0x8000_5000)
    _, holes, mapped, aliased = oracle(path, 0x7FFF_F000, 0x8000_5000)
    assert (holes, mapped, aliased) == ([(0x7FFF_F000, 0x8000_0000), (0x8000_3000, 0x8000_5000)], 0x3000, 0x2000)
