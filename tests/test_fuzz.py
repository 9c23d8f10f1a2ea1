"""The CI subset of the fuzz corpus (bench/fuzz.py runs 2,000+ cases): hypothesis drives the same
mutation engine, in-process, bounded in examples and time.

Every case must end with exit status 0, 1 or 2, never a traceback nor the CLI's "internal error"
line, and within a few seconds, whatever the image or the domain file says.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import formats

HERE = Path(__file__).resolve().parent
CASE_SECONDS = 5.0

_spec = importlib.util.spec_from_file_location("iommuctl_fuzz", HERE.parent / "bench" / "fuzz.py")
assert _spec is not None and _spec.loader is not None
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["iommuctl_fuzz"] = fuzz
_spec.loader.exec_module(fuzz)

_BASES: list[Any] = []


def bases() -> list[Any]:
    if not _BASES:
        _BASES.extend(fuzz.make_bases(per_format=1))  # the bundled examples: one per landed format
    return _BASES


def commands_available() -> set[str]:
    import click

    from iommuctl.cli import cli

    ctx = click.Context(cli)
    return {n for n in cli.list_commands(ctx) if cli.get_command(ctx, n) is not None}


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail a case that runs away instead of hanging CI (SIGALRM, main thread only)."""
    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"case ran over {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds * 4)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    """contextlib.chdir, which Python 3.10 lacks."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_cli(argv: list[str], cwd: Path, stdin: bytes = b"") -> tuple[int, str, str, float]:
    """iommuctl in-process: (exit status, stdout, stderr, CPU seconds)."""
    from iommuctl.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    old_in = sys.stdin
    sys.stdin = io.StringIO(stdin.decode(errors="replace"))
    t0 = time.process_time()  # CPU seconds: the machine may be busy with other work
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), chdir(cwd), \
                time_limit(CASE_SECONDS):
            try:
                main(argv)
            except SystemExit as e:
                code = e.code
    finally:
        sys.stdin = old_in
    return (code if isinstance(code, int) else 2), out.getvalue(), err.getvalue(), time.process_time() - t0


def assert_sane(argv: list[str], code: int, err: str, seconds: float, desc: str) -> None:
    where = f"iommuctl {' '.join(argv)} [{desc}]"
    assert code in (0, 1, 2), (where, code, err[-500:])
    assert "Traceback" not in err and "internal error" not in err, (where, err[-500:])
    assert seconds < CASE_SECONDS, (where, seconds)
    if code == 2:
        assert err.startswith("iommuctl: error: ") and err.count("\n") == 1, (where, err)


def write(files: dict[str, bytes], where: Path) -> None:
    for name, data in files.items():
        (where / name).write_bytes(data)


FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])


@FUZZ
@given(rnd=st.randoms(use_true_random=False), which=st.integers(min_value=0, max_value=10 ** 6))
def test_mutated_images_through_every_command(tmp_path_factory: pytest.TempPathFactory, rnd: Any,
                                               which: int) -> None:
    """Bit flips, junk, self/root/shared/far table pointers, zeroed tables, truncation, random
    roots, replicated junk, the image read as another format, junk root registers, zero memory
    around it: every command answers 0/1/2, never a traceback, in bounded time."""
    bs = bases()
    if not bs:
        pytest.skip("no table format with a bundled example has landed")
    b = bs[which % len(bs)]
    img, roots, done = fuzz.mutate_image(rnd, b)
    text, how = fuzz.hostile_doc(rnd, b, roots, len(img))
    done.append(how)
    where = tmp_path_factory.mktemp("img")
    write({"image.bin": bytes(img), "clean.bin": b.image, "d.yaml": text.encode(),
           "clean.yaml": fuzz.domain_text(b.fmt_id, b.config, b.roots, b.base).encode().replace(
               b"image.bin", b"clean.bin")}, where)
    for argv, stdin in fuzz.commands(rnd, b, "d.yaml", commands_available()):
        code, _, err, secs = run_cli(argv, where, stdin)
        assert_sane(argv, code, err, secs, f"{b.name} {'+'.join(done)}")


@settings(FUZZ, max_examples=120)
@given(rnd=st.randoms(use_true_random=False), fid=st.sampled_from(sorted(formats.FORMATS)),
       cmd=st.sampled_from([["check"], ["translate", "0x1000"], ["walk", "--summary"], ["explain", "0x0"],
                            ["walk", "--json"], ["check", "--json"]]))
def test_hostile_domain_files(tmp_path_factory: pytest.TempPathFactory, rnd: Any, fid: str,
                              cmd: list[str]) -> None:
    """Wrong types, missing keys, huge numbers, unknown keys, deep nesting, alias bombs, binary
    junk, bad memory segments and roots, for every format id: one clear error line or an answer."""
    data, what = fuzz.mutate_yaml(rnd, fid)
    where = tmp_path_factory.mktemp("yaml")
    write({"d.yaml": data, "junk.bin": bytes(range(256)) * 16, "junk.elf": b"\x7fELF\x02\x01\x01" + bytes(120)},
          where)
    argv = [cmd[0], "d.yaml", *cmd[1:]]
    code, _, err, secs = run_cli(argv, where)
    assert_sane(argv, code, err, secs, f"{fid} {what}")


@settings(FUZZ, max_examples=40)
@given(data=st.binary(min_size=0, max_size=2048))
def test_binary_file_as_domain(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    where = tmp_path_factory.mktemp("bin")
    (where / "d.yaml").write_bytes(data)
    code, _, err, secs = run_cli(["check", "d.yaml"], where)
    assert_sane(["check", "d.yaml"], code, err, secs, "binary")


def test_every_table_self_pointing(tmp_path: Path) -> None:
    """Worst case for the walk: every live entry of every table rewritten to point at its own
    table. Each table is still entered once: walk fails cleanly, check lists the cycles."""
    for b in bases():
        fmt = b.fmt()
        img = bytearray(b.image)
        for addr, table, li, _ in b.entries:
            if li + 1 < len(fmt.levels):
                raw = fmt.encode_table(table, fmt.levels[li])
                off = addr - b.base
                img[off:off + fmt.entry_size] = raw.to_bytes(fmt.entry_size, fmt.byteorder)
        write({"image.bin": bytes(img), "d.yaml": fuzz.domain_text(b.fmt_id, b.config, b.roots, b.base).encode()},
              tmp_path)
        for argv in (["walk", "d.yaml", "--summary"], ["check", "d.yaml", "--json"], ["translate", "d.yaml", "0x0"]):
            code, out, err, secs = run_cli(argv, tmp_path)
            assert_sane(argv, code, err, secs, b.name)
            if argv[0] == "check" and any(x[2] + 1 < len(fmt.levels) for x in b.entries):
                assert code == 1 and '"cycle"' in out, (b.name, out[-300:])


def _bulk_formats() -> list[str]:
    out = []
    for fid in formats.available():
        cls = formats.get_format(fid)
        try:
            fmt = cls(dict(cls.config_defaults))
        except Exception:  # noqa: BLE001 - a format whose defaults need a key
            continue
        if fmt.has_tables:
            out.append(fid)
    return out


@pytest.mark.parametrize("fid", _bulk_formats())
def test_bulk_map_equals_page_by_page(fid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long run of small pages (iova and phys misaligned for every larger size) is written a
    leaf table at a time: the image must be byte for byte what one map_page per page writes."""
    from formats import builder
    from iommuctl.domain import load_domain_text

    cls = formats.get_format(fid)
    fmt = cls(dict(cls.config_defaults))
    pg = min(fmt.page_sizes)
    s = fmt.windows[0][0]
    text = (f"format: {fid}\nmappings:\n  - {{iova: {s + 257 * pg:#x}, phys: {0x1000_0000 + pg:#x}, "
            f"size: {700 * pg:#x}, prot: rw}}\n")
    if len(fmt.page_sizes) > 1 and fmt.page_sizes[1] * 300 < fmt.windows[0][1] - s - (1 << 24):
        # the next size up (a replicated 64K on v7s/omap/exynos, NAPOT, NL=7): pages of n entries
        pg2 = fmt.page_sizes[1]
        at = -(-(s + 1024 * pg + pg2) // (4 * pg2)) * 4 * pg2 + pg2
        text += f"  - {{iova: {at:#x}, phys: {0x2000_0000 + 3 * pg2:#x}, size: {300 * pg2:#x}, prot: r}}\n"
    bulk = load_domain_text(text, ".", fid)
    monkeypatch.setattr(builder, "BULK_PAGES", 1 << 62)
    each = load_domain_text(text, ".", fid)
    assert bulk.arena is not None and each.arena is not None
    assert bulk.roots == each.roots
    assert bulk.arena.image() == each.arena.image()
    assert bulk.translate(s + 300 * pg).phys == 0x1000_0000 + pg + 43 * pg


def test_huge_misaligned_mapping_is_bounded(tmp_path: Path) -> None:
    """64G that only 4K pages fit (16 M leaves): built and walked within the case limit."""
    (tmp_path / "d.yaml").write_text("format: arm-lpae-s1\nmappings:\n"
                                     "  - {iova: 0x7fff_f000, phys: 0x1000, size: 64G, prot: r}\n")
    if "arm-lpae-s1" not in formats.available():
        pytest.skip("arm-lpae-s1 has not landed yet")
    code, out, err, secs = run_cli(["translate", "d.yaml", "0x8000_0000", "--json"], tmp_path)
    assert_sane(["translate"], code, err, secs, "64G of 4K pages")
    assert code == 0 and "\"phys\": \"0x2000\"" in out
