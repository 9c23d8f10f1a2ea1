"""walk writes its rows with numpy (iommuctl.run_rows), as JSON lines and as the plain table;
they must be exactly the rows made one run at a time from leaf_runs and with_holes (the plain
table as output.plain_table lays those out), holes, leaves and summary included."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formats.base import prot_str
from iommuctl.cli import cli
from iommuctl.domain import example_names, load_domain, load_domain_text
from iommuctl.numbers import fmt_size
from iommuctl.output import plain_table
from iommuctl.walk import Run, leaf_runs, with_holes


def reference(dom: object, start: int, end: int, leaves: bool, holes: bool) -> list[dict]:
    items = leaf_runs(dom, start, end, coalesce=not leaves)  # type: ignore[arg-type]
    out = []
    for it in with_holes(items, start, end) if holes else items:
        if isinstance(it, Run):
            out.append({"iova": f"{it.iova:#x}", "end": f"{it.end:#x}", "phys": f"{it.phys:#x}", "pgsize": it.pgsize,
                        "count": it.count, "prot": prot_str(it.prot), "level": it.level})
        else:
            out.append({"iova": f"{it[0]:#x}", "end": f"{it[1]:#x}", "hole": True})
    return out


def reference_text(dom: object, start: int, end: int, leaves: bool, holes: bool) -> str:
    rows = []
    for r in reference(dom, start, end, leaves, holes):
        if "hole" in r:
            rows.append([r["iova"], r["end"], "hole", "", "", "", ""])
        else:
            rows.append([r["iova"], r["end"], r["phys"], fmt_size(r["pgsize"]), str(r["count"]), str(r["level"]),
                         r["prot"]])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        plain_table(None, ["iova", "end", "phys", "pgsize", "count", "level", "prot"], rows, ("pgsize", "count"))
    return out.getvalue()


def walk_text(spec: str, *opts: str) -> str:
    """The table without its summary line (CliRunner's stdout is no terminal: the plain table)."""
    res = CliRunner().invoke(cli, ["walk", spec, *opts])
    assert res.exit_code == 0, res.output
    return res.output[:res.output.rstrip("\n").rfind("\n") + 1]


def walk_json(spec: str, *opts: str) -> list[dict]:
    res = CliRunner().invoke(cli, ["walk", "--json", spec, *opts])
    assert res.exit_code == 0, res.output
    return [json.loads(x) for x in res.output.splitlines()]


@pytest.mark.parametrize("name", [n for n in example_names() if n != "fsl-pamu"])
@pytest.mark.parametrize("opts", [(), ("--holes",), ("--leaves",), ("--leaves", "--holes")])
def test_example_rows_equal_one_run_at_a_time(name: str, opts: tuple[str, ...]) -> None:
    dom = load_domain(f"example:{name}")
    lo, hi = min(s for s, _ in dom.windows), max(e for _, e in dom.windows)
    rows = walk_json(f"example:{name}", *opts)
    assert rows[:-1] == reference(dom, lo, hi, "--leaves" in opts, "--holes" in opts)
    assert walk_text(f"example:{name}", *opts) == reference_text(dom, lo, hi, "--leaves" in opts, "--holes" in opts)
    summary = rows[-1]["summary"]
    assert summary["runs"] == len([r for r in rows[:-1] if "hole" not in r])


def test_rows_in_small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import iommuctl.run_rows as walk_mod

    whole, text = walk_json("example:vm-guest", "--leaves", "--holes"), walk_text("example:vm-guest", "--leaves",
                                                                                   "--holes")
    monkeypatch.setattr(walk_mod, "ROWS_CHUNK", 7)
    assert walk_json("example:vm-guest", "--leaves", "--holes") == whole
    assert walk_text("example:vm-guest", "--leaves", "--holes") == text


def test_run_ending_at_the_top_of_a_64_bit_space(tmp_path: Path) -> None:
    p = tmp_path / "top.yaml"
    p.write_text("""format: riscv64
config: {levels: 4}
mappings:
  - {iova: 0xffffffffffe00000, phys: 0x80000000, size: 2M, prot: rw}
  - {iova: 0x1000, phys: 0xa0000000, size: 4K, prot: rw}
""")
    rows = walk_json(str(p), "--holes")
    assert rows[-2] == {"iova": "0xffffffffffe00000", "end": "0x10000000000000000", "phys": "0x80000000",
                        "pgsize": 2097152, "count": 1, "prot": "rw", "level": 1}
    assert rows[:-1] == reference(load_domain(str(p)), 0, 1 << 64, False, True)
    assert walk_text(str(p), "--holes") == reference_text(load_domain(str(p)), 0, 1 << 64, False, True)


def test_corrupt_replica_after_a_run_ending_at_the_top(tmp_path: Path) -> None:
    # The walker follows each PTE as the kernel does: a Svnapot 64K leaf whose 4th copy was
    # overwritten by a 4K leaf yields the 64K run to 2**64 and then that 4K leaf, behind it.
    (tmp_path / "m.yaml").write_text("""format: riscv64
config: {levels: 4, vasz: 48, features: [sign-extend, riscv-svnapot-64k]}
mappings:
  - {iova: 0xffffffffffff0000, phys: 0x500000000, size: 64K, prot: rw}
  - {iova: 0x1000, phys: 0xa0000000, size: 4K, prot: rw}
""")
    res = CliRunner().invoke(cli, ["build", str(tmp_path / "m.yaml"), "-o", str(tmp_path / "img.bin")])
    assert res.exit_code == 0, res.output
    (tmp_path / "d.yaml").write_text(res.output)
    step = json.loads(CliRunner().invoke(cli, ["explain", "--json", str(tmp_path / "d.yaml"),
                                               "0xffffffffffff3000"]).output.splitlines()[-2])
    assert step["kind"] == "contiguous" and step["entry"] == "0x40003f98"  # index 499 of the leaf table
    img = bytearray((tmp_path / "img.bin").read_bytes())
    img[0x3f98:0x3fa0] = (0x40000 << 10 | 0b0111).to_bytes(8, "little")  # V|R|W, ppn 0x40000: 4K leaf
    (tmp_path / "img.bin").write_bytes(img)
    dom = load_domain(str(tmp_path / "d.yaml"))
    for opts in ((), ("--holes",), ("--leaves",)):
        rows = walk_json(str(tmp_path / "d.yaml"), *opts)
        assert rows[:-1] == reference(dom, 0, 1 << 64, "--leaves" in opts, "--holes" in opts)
        assert walk_text(str(tmp_path / "d.yaml"), *opts) == reference_text(dom, 0, 1 << 64, "--leaves" in opts,
                                                                             "--holes" in opts)
    tail = walk_json(str(tmp_path / "d.yaml"))[-3:-1]
    assert [(r["iova"], r["end"], r["phys"], r["pgsize"]) for r in tail] == [
        ("0xffffffffffff0000", "0x10000000000000000", "0x500000000", 65536),
        ("0xffffffffffff3000", "0xffffffffffff4000", "0x40000000", 4096)]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 63), st.integers(1, 1500), st.sampled_from([0, 1]),
                          st.sampled_from(["rw", "r"])), min_size=1, max_size=5),
       st.integers(0, 63), st.integers(1, 64))
def test_random_ranges_rows_equal_one_run_at_a_time(spec: list[tuple[int, int, int, str]], a: int, n: int) -> None:
    # runs crossing table (batch) boundaries, PA breaks, prot changes; ranges cutting leaves
    lines, used = [], set()
    for slot, pages, skew, prot in spec:
        if slot in used:
            continue
        used.add(slot)
        iova = (slot << 23) + (0x1ff000 if skew else 0)
        lines.append(f"  - {{iova: {iova:#x}, phys: {(1 << 33) + (slot << 24) + skew * 0x3000:#x}, "
                     f"size: {pages * 4096:#x}, prot: '{prot}'}}")
    text = "format: arm-lpae-s1\nconfig: {granule: 4K, ias: 39, oas: 40}\nmappings:\n" + "\n".join(lines) + "\n"
    dom = load_domain_text(text)
    start, end = (a << 23) + 0x3000, ((a + n) << 23) + 0x7000  # both cut a 4K leaf or a hole
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.yaml"
        path.write_text(text)
        for opts in ((), ("--holes",), ("--leaves",)):
            rows = walk_json(str(path), "--range", f"{start:#x}:{end:#x}", *opts)
            assert rows[:-1] == reference(dom, start, end, "--leaves" in opts, "--holes" in opts)
            assert walk_text(str(path), "--range", f"{start:#x}:{end:#x}", *opts) == reference_text(
                dom, start, end, "--leaves" in opts, "--holes" in opts)


def test_terminal_gets_rich_for_a_small_table_plain_for_a_large_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import iommuctl.output as output

    monkeypatch.setattr(output, "styled", lambda: True)
    res = CliRunner().invoke(cli, ["walk", "example:vm-guest", "--range", "0:0x500004000"])
    assert res.exit_code == 0 and "┃" in res.output  # rich's table
    monkeypatch.setattr(output, "PLAIN_ROWS", 2)
    res = CliRunner().invoke(cli, ["walk", "example:vm-guest", "--range", "0:0x500004000"])
    assert res.exit_code == 0 and "┃" not in res.output
    assert res.output.splitlines()[1].split() == ["0x0", "0x80000000", "0x1000200000", "2M", "1024", "2", "rw,cache"]


@pytest.mark.parametrize("terminal", [False, True])
def test_phys_range_cutting_a_block_counts_once(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    # The window starts 4K into vm-guest's 2M block at phys 0x1000200000: walk counts only the
    # block's bytes inside the window (64M in all), however many passes the table takes.
    import iommuctl.output as output

    monkeypatch.setattr(output, "styled", lambda: terminal)
    args = ["walk", "example:vm-guest", "--phys-range", "0x1000201000+64M"]
    lines = [CliRunner().invoke(cli, args + opt).output.splitlines()[-1] for opt in ([], ["--leaves"], ["--summary"])]
    assert all(line.startswith("mapped 0x4000000 bytes (64M) in ") for line in lines), lines
    summary = json.loads(CliRunner().invoke(cli, args + ["--json"]).output.splitlines()[-1])["summary"]
    assert summary["mapped"] == 1 << 26
