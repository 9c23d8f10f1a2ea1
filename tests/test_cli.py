"""The command line as SPEC section 4 fixes it: JSON shapes, exit statuses, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from iommuctl.cli import cli, main

PHYS_ADDR_MAX = "0xffffffffffffffff"


def run(args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    """In-process through main(), as the console script runs it."""
    runner = CliRunner()
    result = runner.invoke(_entry, args, input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


import click  # noqa: E402


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def _entry(ctx: click.Context) -> None:
    main(list(ctx.args))


def jl(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.strip()]


@pytest.fixture
def pa_zero(tmp_path: Path) -> Path:
    p = tmp_path / "pa0.yaml"
    p.write_text("""format: arm-lpae-s1
config: {granule: 4K, ias: 48, oas: 48}
mappings:
  - {iova: 0x10000, phys: 0x0, size: 4K, prot: rw}
  - {iova: 0x20000, phys: 0x5000, size: 4K, prot: r}
""")
    return p


def test_physical_address_zero_is_a_mapping(pa_zero: Path) -> None:
    # Why the series moved misses to PHYS_ADDR_MAX: the legacy op says 0 for both of these.
    rc, out, _ = run(["translate", "--json", "--legacy", str(pa_zero), "0x10000", "0x10fff", "0x30000"])
    rows = jl(out)
    assert rows[0] == {**rows[0], "iova": "0x10000", "mapped": True, "phys": "0x0", "size": 4096, "level": 3,
                       "legacy": "0x0"}
    assert rows[1]["phys"] == "0xfff" and rows[1]["legacy"] == "0xfff"
    assert rows[2] == {"iova": "0x30000", "mapped": False, "phys": PHYS_ADDR_MAX, "size": 0, "legacy": "0x0"}
    assert rc == 1  # some IOVA unmapped
    rc, out, _ = run(["translate", "--json", str(pa_zero), "0x10000"])
    assert rc == 0 and "legacy" not in jl(out)[0]


def test_translate_stdin_and_batch_agree(pa_zero: Path) -> None:
    iovas = [0x10000 + i * 0x800 for i in range(600)]  # more than the batch threshold
    stdin = "".join(f"{v:#x}\n" for v in iovas)
    rc, out, _ = run(["translate", "--json", "--legacy", str(pa_zero), "-"], stdin)
    batch = jl(out)
    assert rc == 1 and len(batch) == 600
    one = jl(run(["translate", "--json", "--legacy", str(pa_zero)] + [hex(v) for v in iovas[:40]])[1])
    assert batch[:40] == one


def test_walk_json_shapes(pa_zero: Path) -> None:
    rc, out, _ = run(["walk", "--json", "--holes", "--range", "0x0:0x40000", str(pa_zero)])
    rows = jl(out)
    assert rc == 0
    assert rows[0] == {"iova": "0x0", "end": "0x10000", "hole": True}
    assert rows[1] == {"iova": "0x10000", "end": "0x11000", "phys": "0x0", "pgsize": 4096, "count": 1,
                       "prot": "rw", "level": 3}
    assert rows[-1]["summary"]["mapped"] == 8192 and rows[-1]["summary"]["leaves"] == {"4096": 2}
    assert rows[-1]["summary"]["runs"] == 2


def test_explain_json(pa_zero: Path) -> None:
    rc, out, _ = run(["explain", "--json", str(pa_zero), "0x10000"])
    rows = jl(out)
    assert rc == 0 and [r["level"] for r in rows[:4]] == [0, 1, 2, 3]
    assert [r["kind"] for r in rows[:4]] == ["table", "table", "table", "page"]
    # ARM_LPAE_PTE_TYPE_PAGE | AP_UNPRIV | SH_OS | AF | nG, PA 0: rw, no cache
    assert rows[3]["raw"] == hex(3 | (1 << 6) | (2 << 8) | (1 << 10) | (1 << 11))
    assert rows[-1]["mapped"] is True and rows[-1]["phys"] == "0x0"


def test_build_writes_an_image_that_reads_back(pa_zero: Path, tmp_path: Path) -> None:
    out_bin, out_yaml = tmp_path / "t.bin", tmp_path / "t.yaml"
    rc, _, _ = run(["build", str(pa_zero), "-o", str(out_bin), "--yaml", str(out_yaml)])
    assert rc == 0 and out_bin.stat().st_size > 0
    rc, out, _ = run(["translate", "--json", str(out_yaml), "0x20000"])
    assert jl(out)[0]["phys"] == "0x5000" and jl(out)[0]["prot"] == "r"


@pytest.mark.parametrize("doc,message", [
    ("format: arm-lpae-s1\nconfig: {granule: 3K}\nmappings: []\n", "config.granule"),
    ("format: arm-lpae-s1\nconfig: {colour: blue}\nroot: 0x1000\n", "config.colour: unknown key"),
    ("format: nope\nroot: 0\n", "format: unknown format 'nope'"),
    ("format: arm-lpae-s1\nroot: 0x1000\nmemory:\n  - file: missing.bin\n    base: 0\n", "memory[0]"),
    ("format: arm-lpae-s1\nroot: 0x9000\nmemory:\n  - zero: {base: 0, length: 4K}\n", "outside memory"),
    ("[1, 2", "not valid YAML"),
    ("format: arm-lpae-s1\nmappings:\n  - {iova: 0x1000, phys: 0x2000, size: 4K, prot: rx}\n", "mappings[0].prot"),
    ("format: arm-lpae-s1\nmappings:\n  - {iova: 0x1000, phys: 0x2000, size: zz}\n", "mappings[0].size"),
])
def test_bad_domains_are_one_line_exit_2(tmp_path: Path, doc: str, message: str) -> None:
    p = tmp_path / "d.yaml"
    p.write_text(doc)
    rc, out, err = run(["translate", str(p), "0x1000"])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("iommuctl: error: ") and message in err, err
    assert str(p) in err or "d.yaml" in err


def test_scattered_mapping_outside_the_space_is_refused_before_its_pages(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # arm-v7s has a 32-bit input space: 64G of scattered pages cannot fit, and its 16 M page
    # addresses must not be drawn to find that out
    import iommuctl.domain as domain_mod

    def never(*args: object) -> None:
        raise AssertionError("scatter_pages was called")

    monkeypatch.setattr(domain_mod, "scatter_pages", never)
    p = tmp_path / "d.yaml"
    p.write_text("format: arm-v7s\nmappings:\n  - {iova: 0x7fff_f000, phys: {scatter: 4K, base: 0x1_0000_0000}, "
                 "size: 64G, prot: rw}\n")
    rc, _, err = run(["walk", str(p)])
    assert rc == 2 and "mappings[0]: iova range 0x7ffff000+0x1000000000 is outside the input address space" in err


def test_binary_file_as_yaml(tmp_path: Path) -> None:
    p = tmp_path / "junk.yaml"
    p.write_bytes(bytes(range(256)) * 4)
    rc, _, err = run(["walk", str(p)])
    assert rc == 2 and "not a YAML text file" in err


def test_usage_errors_are_one_line(pa_zero: Path) -> None:
    rc, _, err = run(["walk", str(pa_zero), "--range", "0x10:0x5"])
    assert rc == 2 and "empty range" in err
    rc, _, err = run(["translate", str(pa_zero), "0x1000000000000"])
    assert rc == 2 and "outside the input address space" in err
    rc, _, err = run(["translate", str(pa_zero), "banana"])
    assert rc == 2 and err.count("\n") == 1
    rc, _, err = run(["frobnicate"])
    assert rc == 2 and err.startswith("iommuctl: error:")


def test_formats_and_examples_json() -> None:
    rc, out, _ = run(["formats", "--json", "arm-lpae-s1"])
    rec = jl(out)[0]
    assert rc == 0 and rec["format"] == "arm-lpae-s1" and rec["page_sizes"] == [4096, 2 << 20, 1 << 30]
    assert "granule" in rec["config"]
    rc, out, _ = run(["formats", "--drivers", "--json"])
    drivers = {r["driver"]: r["format"] for r in jl(out)}
    assert drivers["arm-smmu-v3"] == "arm-lpae-s1" and drivers["panfrost"] == "arm-mali-lpae"
    rc, out, _ = run(["examples", "--json"])
    names = {r["name"]: r for r in jl(out)}
    assert names["smmuv3-4k"]["format"] == "arm-lpae-s1" and names["smmuv3-4k"]["description"]


def test_every_example_loads_and_walks() -> None:
    from iommuctl.domain import example_names, load_domain
    from iommuctl.walk import summarise

    for name in example_names():
        d = load_domain(f"example:{name}")
        lo, hi = min(s for s, _ in d.windows), max(e for _, e in d.windows)
        assert summarise(d, lo, hi).mapped > 0, name


def test_python_dash_m_is_the_same_command(pa_zero: Path) -> None:
    env = dict(os.environ, NO_COLOR="1")
    p = subprocess.run([sys.executable, "-m", "iommuctl", "translate", "--json", str(pa_zero), "0x20000"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0 and json.loads(p.stdout)["phys"] == "0x5000"
    p = subprocess.run([sys.executable, "-m", "iommuctl", "walk", str(pa_zero) + ".missing"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.startswith("iommuctl: error:")


def test_cli_group_lists_every_command() -> None:
    names = cli.list_commands(click.Context(cli))
    for c in ["translate", "walk", "explain", "build", "check", "unmap-sim", "diff", "reverse", "formats",
              "examples"]:
        assert c in names


def test_chunked_batch_rows_equal_one_pass(pa_zero: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import iommuctl.translate as translate_mod

    stdin = "".join(f"{0x10000 + i * 0x400:#x}\n" for i in range(1000))
    whole = run(["translate", "--json", "--legacy", str(pa_zero), "-"], stdin)
    monkeypatch.setattr(translate_mod, "CHUNK", 97)
    assert run(["translate", "--json", "--legacy", str(pa_zero), "-"], stdin) == whole


@pytest.mark.parametrize("name", ["smmuv3-4k", "mtk-v7s", "apple-dart-t6000", "amd-v1", "s390", "virtio", "fsl-pamu",
                                  "sprd"])
def test_bulk_stdin_rows_equal_one_by_one(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Big enough for the numpy parser and row writer (bulk.py); each row must be the one-row path's.
    import numpy as np

    import iommuctl.translate as translate_mod
    from iommuctl.domain import load_domain

    dom = load_domain(f"example:{name}")
    runs = [(iova, iova + pgsize * count) for iova, _, pgsize, count in dom.chunks[:50]]
    runs += [(m.iova, m.iova + m.size) for m in dom.mappings[:20]]
    rng = np.random.default_rng(11)
    lo, hi = dom.windows[0]
    iovas = [int(v) for v in rng.integers(lo, min(hi, 1 << 63), 1500, dtype=np.uint64)]
    for s, e in runs:
        iovas += [s, e - 1, (s + e) // 2]
    text = "".join(f"{v:#x}\n" for v in iovas)
    assert len(text) >= translate_mod.BULK_INPUT
    monkeypatch.setattr(translate_mod, "CHUNK", 1000)
    rc, out, _ = run(["translate", "--json", "--legacy", f"example:{name}", "-"], text)
    want = [translate_mod.translation_row(t, dom.fmt.legacy_iova_to_phys(v, t))
            for v, t in ((v, dom.translate(v)) for v in iovas)]
    assert jl(out) == want
    assert rc == (1 if any(not r["mapped"] for r in want) else 0)
    # the plain table (piped human output), also written with numpy: output.plain_table's layout
    import contextlib
    import io

    from iommuctl.numbers import fmt_size
    from iommuctl.output import plain_table

    for legacy in ([], ["--legacy"]):
        cells = [[r["iova"], r["phys"] if r["mapped"] else "unmapped", fmt_size(r["size"]) if r["mapped"] else "-",
                  str(r.get("level", "-")), r.get("prot", "-"), r.get("raw", "-")] + ([r["legacy"]] if legacy else [])
                 for r in want]
        ref = io.StringIO()
        with contextlib.redirect_stdout(ref):
            plain_table(None, ["iova", "phys", "size", "level", "prot", "raw"] + (["legacy"] if legacy else []),
                        cells, ("size",))
        rc2, out, _ = run(["translate", *legacy, f"example:{name}", "-"], text)
        assert out == ref.getvalue() and rc2 == rc


def test_human_output_rich_on_a_terminal_plain_when_piped(pa_zero: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import iommuctl.output as output

    rc, out, _ = run(["translate", str(pa_zero), "0x10000", "0x30000"])
    lines = out.splitlines()
    assert lines[0].split() == ["iova", "phys", "size", "level", "prot", "raw"]
    # nG 0x800 | AF 0x400 | SH_OS 0x200 (not IOMMU_CACHE) | AP_UNPRIV 0x40 | page 0x3 (arm_lpae_prot_to_pte)
    assert lines[1].split() == ["0x10000", "0x0", "4K", "3", "rw", "0xe43"]
    assert lines[2].split() == ["0x30000", "unmapped", "-", "-", "-", "-"]
    assert "┃" not in out and rc == 1
    monkeypatch.setattr(output, "styled", lambda: True)
    rc, out, _ = run(["translate", str(pa_zero), "0x10000"])
    assert "┃" in out and "0x10000" in out and rc == 0
    rc, out, _ = run(["walk", "--summary", str(pa_zero)])
    assert rc == 0 and "mapped" in out


def test_json_stdin_streams_in_blocks(pa_zero: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # translate --json DOMAIN - reads, walks and writes a block of lines at a time (bounded memory)
    import functools

    import iommuctl.translate as translate_mod

    iovas = [0x10000 + i * 0x200 for i in range(3000)]
    text = "".join(f"{v:#x}\n" for v in iovas)
    whole = run(["translate", "--json", "--legacy", str(pa_zero), "-"], text)
    monkeypatch.setattr(translate_mod, "stdin_blocks", functools.partial(translate_mod.stdin_blocks, block=4096))
    assert run(["translate", "--json", "--legacy", str(pa_zero), "-"], text) == whole
    assert whole[0] == 1 and len(jl(whole[1])) == 3000
    # a bad line in a later block: the earlier blocks' rows are out, the line is named, status 2
    lines = text.splitlines()
    lines[2500] = "0x1x"
    rc, out, err = run(["translate", "--json", "--legacy", str(pa_zero), "-"], "\n".join(lines) + "\n")
    assert rc == 2 and "<stdin> line 2501:" in err and "0x1x" in err
    done = jl(out)
    assert 0 < len(done) <= 2500 and done == jl(whole[1])[:len(done)]
    rc, out, err = run(["translate", "--json", str(pa_zero), "-"], "0x1" * 10000)
    assert rc == 2 and "<stdin> line 1: longer than 16384 bytes" in err and len(err) < 200
    rc, out, err = run(["translate", "--json", str(pa_zero), "-"], "0x1" * 3000 + "\n")
    assert rc == 2 and "<stdin> line 1: IOVA '0x10x10x1" in err and len(err) < 200


def many_pages(tmp_path: Path) -> Path:
    """64 MiB of scattered 4K pages: more output than a pipe holds."""
    p = tmp_path / "many.yaml"
    p.write_text("format: arm-lpae-s1\nconfig: {granule: 4K, ias: 48, oas: 48}\nmappings:\n"
                 "  - {iova: 0x100000000, size: 64M, phys: {scatter: 4K, seed: 1, base: 0x1000000000}, prot: rw}\n")
    return p


def translate_stream(tmp_path: Path) -> subprocess.Popen[bytes]:
    """`translate --json DOMAIN -` over 200,000 IOVAs of many_pages, stdout a pipe."""
    iovas = tmp_path / "iovas"
    iovas.write_text("".join(f"{0x100000000 + 4096 * k:#x}\n" for k in range(200_000)))
    with iovas.open() as inp:
        return subprocess.Popen([sys.executable, "-m", "iommuctl", "translate", "--json", str(many_pages(tmp_path)),
                                 "-"], stdin=inp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("argv", [["walk", "--json", "--leaves"], ["walk", "--leaves"], ["walk", "--json"], ["walk"],
                                  ["check", "--json"]])
def test_reader_closing_the_pipe_early_is_success(tmp_path: Path, argv: list[str]) -> None:
    # `iommuctl walk ... | head`: more output than the (widened, 1 MiB) pipe holds, the reader
    # goes after 100 bytes; the command ends quietly with 0, as main() promises, not click's 1.
    proc = subprocess.Popen([sys.executable, "-m", "iommuctl", argv[0], str(many_pages(tmp_path)), *argv[1:]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(100)) == 100
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and err == b"", err[-500:]


def test_translate_stream_reader_closing_early_is_success(tmp_path: Path) -> None:
    # the same with the chunks formatted on threads (translate --json -, writer.write_chunks)
    proc = translate_stream(tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100).startswith(b'{"iova": "0x100000000", "mapped": true')
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and err == b"", err[-500:]


def test_ctrl_c_ends_a_stream_whose_reader_stalled(tmp_path: Path) -> None:
    # the reader stops reading but keeps the pipe open (a pager, a stuck consumer): the write
    # blocks, and Ctrl-C must still end the command with 130, not hang joining the writer
    proc = translate_stream(tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(100_000)) == 100_000  # it is writing; the pipe fills from here
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=20)
    finally:
        proc.kill()
    assert rc == 130 and b"Traceback" not in proc.stderr.read()


def test_ctrl_c_is_130_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("iommuctl.domain.example_names", interrupted)  # `examples` calls it first
    rc, out, err = run(["examples"])
    assert rc == 130 and "Traceback" not in err


def test_bare_command_prints_the_usage() -> None:
    rc, _, err = run([])
    assert rc == 2 and "Usage: iommuctl" in err and "Commands:" in err


def test_shell_completion_is_click_s() -> None:
    env = {**os.environ, "_IOMMUCTL_COMPLETE": "bash_complete", "COMP_WORDS": "iommuctl wal", "COMP_CWORD": "1"}
    p = subprocess.run([sys.executable, "-m", "iommuctl"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.split() == ["plain,walk"], (p.stdout, p.stderr)


def test_formats_table_folds_runs_of_page_sizes() -> None:
    from iommuctl.catalog import size_list

    assert size_list([4096, 8192, 16384, 1 << 21]) == "4K-16K 2M"
    assert size_list([4096, 1 << 21, 1 << 30]) == "4K 2M 1G"
    assert size_list([4096, 8192]) == "4K 8K"
    rc, out, _ = run(["formats", "amdv1"])  # every power of two from 4K but 512G (amdv1 leaves)
    assert rc == 0 and "4K-256G 1T-2048T" in out
