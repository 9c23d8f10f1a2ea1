"""diff writes its rows with numpy (iommuctl.diff: JSON lines and the plain table); they must be
exactly what one Change at a time gives: json.dumps of the record for --json, and
output.plain_table's layout of the cells for the table."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iommuctl.diff as diff_mod
from formats.base import prot_str
from iommuctl.diff import Change, diff_domains
from iommuctl.domain import load_domain
from iommuctl.numbers import fmt_size
from iommuctl.output import plain_table

from .test_analysis import _map, _maps, yaml_text

K4, M1, M2 = 0x1000, 0x10_0000, 0x20_0000
TOP = 1 << 64
A_MAPS = [(M1, 0x8000_0000, 0x4_0000, "rw"), (2 * M1, 0x9000_0000, 0x4000, "r"), (0x4000_0000, 0x8000_0000, M2, "rw"),
          (0x5000_0000, 0x4000_0000, K4, "rw"), (0x7000_0000, 0x12_4000_0000, 0x180_0000, "'rw,cache'")]
B_MAPS = [(M1, 0x8000_0000, 0x2_0000, "rw"), (M1 + 0x2_0000, 0x8002_1000, 0x2_0000, "rw"),
          (2 * M1, 0x9000_0000, 0x4000, "rw"), (0x4000_0000, 0x8000_0000, M1, "rw"),
          (0x4010_0000, 0x8010_0000, M1, "r"), (0x6000_0000, 0x8000_0000, K4, "rw"),
          (0x7000_1000, 0x12_4000_0000, K4, "rw")]


def record(ch: Change) -> dict[str, Any]:
    rec: dict[str, Any] = {"change": ch.kind, "iova": f"{ch.iova:#x}", "end": f"{ch.end:#x}", "size": ch.end - ch.iova}
    for name, s in (("a", ch.a), ("b", ch.b)):
        if s is not None:
            rec[name] = {"phys": f"{s.phys:#x}", "pgsize": s.pgsize, "prot": prot_str(s.prot)}
    if ch.kind == "changed":
        rec["what"] = ch.what
    return rec


def reference(pa: Path, pb: Path, start: int, end: int, ignore: tuple[str, ...]) -> tuple[str, str]:
    """(JSON lines, plain table) of the changes, one Change at a time."""
    a, b = load_domain(str(pa)), load_domain(str(pb))
    changes = list(diff_domains(a, b, start, end, ignore))
    js = "".join(json.dumps(record(c), separators=(", ", ": ")) + "\n" for c in changes)

    def side(s: Any) -> str:
        return "-" if s is None else f"{s.phys:#x} {fmt_size(s.pgsize)} {prot_str(s.prot)}"

    out = io.StringIO()
    if changes:
        with contextlib.redirect_stdout(out):
            plain_table(f"{a.name} -> {b.name}", diff_mod.HEAD,
                        [[c.kind, f"{c.iova:#x}", f"{c.end:#x}", fmt_size(c.end - c.iova), side(c.a), side(c.b),
                          ",".join(c.what)] for c in changes], ("size",))
    return js, out.getvalue()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    from iommuctl.cli import main

    with pytest.raises(SystemExit):
        main(["diff", *argv])
    out, _ = capsys.readouterr()
    return out[:out.rstrip("\n").rfind("\n") + 1]  # without the summary line


def check(capsys: pytest.CaptureFixture[str], pa: Path, pb: Path, start: int = 0, end: int = 1 << 48,
          ignore: tuple[str, ...] = ()) -> None:
    js, text = reference(pa, pb, start, end, ignore)
    opts = ["--range", f"{start:#x}:{end:#x}"] + [x for i in ignore for x in ("--ignore", i)]
    assert run(capsys, str(pa), str(pb), "--json", *opts) == js
    assert run(capsys, str(pa), str(pb), *opts) == text


def write(tmp: Path, name: str, fmt: str, maps: list[tuple[int, int, int, str]], config: str = "") -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(yaml_text(fmt, maps, config))
    return p


@pytest.mark.parametrize("ignore", [(), ("prot",), ("pgsize", "prot")])
def test_hand_built_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str], ignore: tuple[str, ...]) -> None:
    pa, pb = write(tmp_path, "a", "arm-lpae-s1", A_MAPS), write(tmp_path, "b", "arm-lpae-s2", B_MAPS)
    check(capsys, pa, pb, ignore=ignore)
    check(capsys, pb, pa, ignore=ignore)
    # a row as the kernel's map leaves it, by hand: the 2M block at 0x7000_0000 (rw,cache) against a
    # 4K page 0x1000 further on with the same output: every attribute differs
    rows = [json.loads(x) for x in run(capsys, str(pa), str(pb), "--json").splitlines()]
    assert {"change": "changed", "iova": "0x70001000", "end": "0x70002000", "size": K4,
            "a": {"phys": "0x1240001000", "pgsize": M2, "prot": "rw,cache"},
            "b": {"phys": "0x1240000000", "pgsize": K4, "prot": "rw"}, "what": ["phys", "pgsize", "prot"]} in rows


def test_small_chunks(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pa, pb = write(tmp_path, "a", "arm-lpae-s1", A_MAPS), write(tmp_path, "b", "arm-lpae-s2", B_MAPS)
    monkeypatch.setattr(diff_mod, "CHUNK", 3)
    monkeypatch.setattr(diff_mod, "ROWS_CHUNK", 2)
    check(capsys, pa, pb)


def test_runs_ending_at_the_top_of_the_space(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = "{quirks: [arm-ttbr1]}"
    pa = write(tmp_path, "a", "arm-lpae-s1", [(TOP - M2, 0x8000_0000, M2, "rw"),
                                              (0xFFFF_0000_0000_0000, 0x8000_0000, K4, "r")], cfg)
    pb = write(tmp_path, "b", "arm-lpae-s1", [(TOP - M2, 0x8000_0000, M1, "rw"), (TOP - M1, 0x8010_0000, M1, "rw")],
               cfg)
    check(capsys, pa, pb, TOP - (1 << 48), TOP)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(_map, max_size=8), st.lists(_map, max_size=8), st.sampled_from([(), ("pgsize",), ("prot",)]))
def test_random_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str], ma: list[Any], mb: list[Any],
                     ignore: tuple[str, ...]) -> None:
    pa, pb = write(tmp_path, "a", "arm-lpae-s1", _maps(ma)), write(tmp_path, "b", "arm-lpae-s2", _maps(mb))
    check(capsys, pa, pb, 0, 8 * M1, ignore)
