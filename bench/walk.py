#!/usr/bin/env python3
"""Walk and translate speed, each figure beside its baseline and the ratio.

Baselines on the same image:
  - the floor: a small C walker (ARM LPAE 4K), compiled here with cc -O2 (skipped without cc);
  - a plain per-entry Python walker (struct reads, one Python step per entry).

Figures (issue 7 targets in brackets):
  1. walk --summary over 64 GiB of scattered 4K pages, 16.7 M leaves   [<= 10x C, >= 10x per-entry Python]
  2. walk of 1 TiB of 1G blocks against 1,024 leaves                     [work grows with tables, not range]
  3. translate --json of 1 M random IOVAs from stdin                     [>= 2 M IOVAs/s, whole command]
  4. cold `iommuctl translate example:smmuv3-4k 0x1000`                  [<= 2x python -c "import click, yaml"]
  5. peak RSS walking a 128 MiB image                                    [< image + 100 MiB]
  6. leaves/s for one format of each family
  7-8. walk --json and diff --json of 8 GiB of scattered pages (2 M rows)
  9. check --json of an image read with the wrong granule (4 M findings)
  10. batch translation on a table-less (virtio) domain

Images are built once into bench/out/ (not committed). Run: python bench/walk.py [--quick]
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
IOMMUCTL = [sys.executable, "-m", "iommuctl"]

C_WALKER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <time.h>
/* ARM LPAE 4K granule from level 0, the work of `walk --summary`: every leaf's output address,
   size and attribute bits, runs of IOVA- and PA-contiguous leaves with equal size and attributes,
   leaves per size and bytes mapped. */
static const uint8_t *img; static uint64_t base, size;
static uint64_t leaves[4], mapped, runs, next_iova = ~0ull, next_pa, last_size, last_attr;
static const uint64_t *tbl(uint64_t pa) {
    if (pa < base || pa + 4096 > base + size) { fprintf(stderr, "bad table %llx\n", (unsigned long long)pa); exit(2); }
    return (const uint64_t *)(img + (pa - base));
}
static void walk(uint64_t pa, int lvl, uint64_t va) {
    const uint64_t *t = tbl(pa);
    int shift = 12 + 9 * (3 - lvl);
    for (int i = 0; i < 512; i++) {
        uint64_t e = t[i], iova = va + ((uint64_t)i << shift);
        if (!e) continue;
        unsigned type = e & 3;
        if (lvl < 3 && type == 3) { walk(e & 0x0000fffffffff000ull, lvl + 1, iova); continue; }
        if ((lvl < 3 && type == 1) || (lvl == 3 && type == 3)) {
            uint64_t sz = 1ull << shift, out = e & 0x0000fffffffff000ull & ~(sz - 1), attr = e & ~0x0000fffffffff000ull;
            if (iova != next_iova || out != next_pa || sz != last_size || attr != last_attr) runs++;
            next_iova = iova + sz; next_pa = out + sz; last_size = sz; last_attr = attr;
            leaves[lvl]++; mapped += sz;
        }
    }
}
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDONLY); struct stat st; fstat(fd, &st);
    size = st.st_size; base = strtoull(argv[2], 0, 0); uint64_t root = strtoull(argv[3], 0, 0);
    img = mmap(0, size, PROT_READ, MAP_PRIVATE, fd, 0);
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    walk(root, 0, 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%llu %llu %.6f %llu\n", (unsigned long long)(leaves[0] + leaves[1] + leaves[2] + leaves[3]),
           (unsigned long long)mapped, (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9,
           (unsigned long long)runs);
    return 0;
}
"""


def python_per_entry(image: Path, base: int, root: int, limit_leaves: int) -> tuple[int, float]:
    """The simple baseline: one Python step per table entry doing the summary's work (output
    address, size, attributes, run counting), stopping after limit_leaves."""
    data = image.read_bytes()
    st: dict[str, Any] = {"leaves": 0, "runs": 0, "mapped": 0, "next": (-1, -1, 0, 0)}
    addr_mask = 0x0000FFFFFFFFF000
    t0 = time.perf_counter()

    def walk(pa: int, lvl: int, va: int) -> bool:
        off = pa - base
        shift = 12 + 9 * (3 - lvl)
        for i in range(512):
            (e,) = struct.unpack_from("<Q", data, off + 8 * i)
            if not e:
                continue
            typ = e & 3
            iova = va + (i << shift)
            if lvl < 3 and typ == 3:
                if walk(e & addr_mask, lvl + 1, iova):
                    return True
            elif (lvl < 3 and typ == 1) or (lvl == 3 and typ == 3):
                sz = 1 << shift
                out, attr = e & addr_mask & ~(sz - 1), e & ~addr_mask
                if (iova, out, sz, attr) != st["next"]:
                    st["runs"] += 1
                st["next"] = (iova + sz, out + sz, sz, attr)
                st["mapped"] += sz
                st["leaves"] += 1
                if st["leaves"] >= limit_leaves:
                    return True
        return False

    walk(root, 0, 0)
    return st["leaves"], time.perf_counter() - t0


def scattered(gib: int, seed: int) -> str:
    """A mappings: domain of `gib` GiB of 4K pages at IOVA 4G, scattered over physical memory."""
    return (f"format: arm-lpae-s1\nconfig: {{granule: 4K, ias: 48, oas: 48}}\nmappings:\n"
            f"  - {{iova: 0x100000000, size: {gib}G, phys: {{scatter: 4K, seed: {seed}, base: 0x1000000000}}, "
            f"prot: rw}}\n")


def build(name: str, yaml_text: str) -> Path:
    """Build a mappings: domain once into bench/out/NAME.{bin,yaml}; return the table domain."""
    OUT.mkdir(exist_ok=True)
    src, dom = OUT / f"{name}-src.yaml", OUT / f"{name}.yaml"
    stale = not (src.exists() and dom.exists() and src.read_text() == yaml_text)
    if stale:
        src.write_text(yaml_text)
        t0 = time.perf_counter()
        subprocess.run(IOMMUCTL + ["build", str(src), "-o", str(OUT / f"{name}.bin"), "--yaml", str(dom)],
                       check=True)
        print(f"  (built {name} in {time.perf_counter() - t0:.1f} s)")
    return dom


def timed(args: list[str], stdin: bytes | None = None, repeat: int = 1, tty: bool = False,
          env: dict[str, str] | None = None) -> tuple[float, bytes]:
    """Best wall time of `repeat` runs, by default with the bytecode cached as an install leaves
    it (cached_env()). stdin comes from a file; stdout is a pseudo-terminal with tty (as a person at a
    shell sees it), else a pipe this process reads 1 MiB at a time (as `cat` or `jq` read it;
    subprocess's communicate() reads 32 KiB at a time and writes the input too, and on two cores
    that reader's work shows in the command's time)."""
    best = float("inf")
    out = b""
    env = cached_env() if env is None else env
    with tempfile.TemporaryFile() as inp, tempfile.TemporaryFile() as errf:
        inp.write(stdin or b"")
        for _ in range(repeat):
            inp.seek(0)
            if tty:
                master, slave = os.openpty()
                t0 = time.perf_counter()
                p = subprocess.run(args, stdin=inp, stdout=slave, stderr=errf, env=env)
                best = min(best, time.perf_counter() - t0)
                os.close(slave)
                os.close(master)
            else:
                t0 = time.perf_counter()
                with subprocess.Popen(args, stdin=inp, stdout=subprocess.PIPE, stderr=errf, env=env) as proc:
                    assert proc.stdout is not None
                    parts = []
                    while block := os.read(proc.stdout.fileno(), 1 << 20):
                        parts.append(block)
                best = min(best, time.perf_counter() - t0)
                out = b"".join(parts)
                p = proc  # type: ignore[assignment]
            if p.returncode not in (0, 1):
                errf.seek(0)
                raise SystemExit(f"{' '.join(args[:4])}... failed: {errf.read().decode()[-400:]}")
    return best, out


_CACHE: list[str] = []


def cached_env() -> dict[str, str]:
    """The environment with bytecode cached, as `pip install` leaves it: the dev shell sets
    PYTHONDONTWRITEBYTECODE, and an editable install would then compile iommuctl's sources on
    every run. The cache is a scratch prefix, so nothing lands in the tree."""
    if not _CACHE:
        _CACHE.append(tempfile.mkdtemp(prefix="iommuctl-bench-pyc-"))
        atexit.register(shutil.rmtree, _CACHE[0], True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = _CACHE[0]
    return env


def in_process(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def row(label: str, value: str, baseline: str = "", ratio: str = "", target: str = "") -> None:
    print(f"  {label:<46} {value:>16} {baseline:>22} {ratio:>10}  {target}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="8 GiB instead of 64 GiB, fewer repeats")
    args = ap.parse_args()
    from iommuctl.domain import load_domain
    from iommuctl.walk import summarise

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.platform()}")
    gib = 8 if args.quick else 64
    print(f"\n1. walk --summary, {gib} GiB of scattered 4K pages (arm-lpae-s1 4K)")
    dom_path = build(f"scatter{gib}g", scattered(gib, seed=7))
    dom = load_domain(dom_path)
    image, base, root = OUT / f"scatter{gib}g.bin", dom.mem.segments[0].base, dom.roots[0]
    ours = in_process(lambda: summarise(dom, 0, 1 << 48))
    s = summarise(dom, 0, 1 << 48)
    leaves = sum(s.leaves.values())
    cli, _ = timed(IOMMUCTL + ["walk", "--summary", str(dom_path)], repeat=2)
    c_time = None
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        with tempfile.TemporaryDirectory() as tmp:
            src, exe = Path(tmp) / "w.c", Path(tmp) / "w"
            src.write_text(C_WALKER)
            subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
            runs = [subprocess.run([str(exe), str(image), hex(base), hex(root)], capture_output=True, text=True,
                                   check=True).stdout.split() for _ in range(3)]
            assert int(runs[0][0]) == leaves and int(runs[0][3]) == s.runs, (runs[0], leaves, s.runs)
            c_time = min(float(r[2]) for r in runs)
    limit = 1 << 19
    py_leaves, py_time = python_per_entry(image, base, root, limit)
    py_rate = py_leaves / py_time
    rate = leaves / ours
    row("", "iommuctl", "baseline", "ratio", "target")
    if c_time:
        row(f"vs C walker ({leaves:,} leaves)", f"{ours:.2f} s", f"C {c_time:.3f} s", f"{ours / c_time:.1f}x",
            "<= 10x")
    else:
        row("vs C walker", f"{ours:.2f} s", "no C compiler", "-", "<= 10x")
    row("vs per-entry Python (leaves/s)", f"{rate / 1e6:.1f} M/s", f"{py_rate / 1e6:.2f} M/s",
        f"{rate / py_rate:.0f}x", ">= 10x")
    row("whole command, cold process", f"{cli:.2f} s")

    print("\n2. 1 TiB of 1G blocks against 1,024 leaves")
    tib = build("blocks1t", """format: arm-lpae-s1
config: {granule: 4K, ias: 48, oas: 48}
mappings:
  - {iova: 0x10000000000, size: 1T, phys: 0x20000000000, prot: rw}
""")
    few = build("leaves1024", """format: arm-lpae-s1
config: {granule: 4K, ias: 48, oas: 48}
mappings:
  - {iova: 0x10000000000, size: 4M, phys: 0x20000001000, prot: rw}
""")
    d1, d2 = load_domain(tib), load_domain(few)
    t1 = in_process(lambda: summarise(d1, 0, 1 << 48), 5)
    t2 = in_process(lambda: summarise(d2, 0, 1 << 48), 5)
    row("1 TiB of 1G blocks (1,024 leaves)", f"{t1 * 1e3:.2f} ms", f"1,024 4K: {t2 * 1e3:.2f} ms",
        f"{t1 / t2:.2f}x", "~1x")

    import numpy as np

    rng = np.random.default_rng(3)
    n = 200_000 if args.quick else 1_000_000
    print(f"\n3. translate {n:,} random IOVAs from stdin")
    iovas = (np.uint64(0x100000000) + rng.integers(0, gib << 30, n, dtype=np.uint64)).tolist()
    text = "".join(f"{v:#x}\n" for v in iovas).encode()
    from formats.batch import translate_many

    arr = np.array(iovas, dtype=np.uint64)
    tw = in_process(lambda: translate_many(dom.walker, arr))
    sample = iovas[:2000]
    t_one = in_process(lambda: [dom.walker.translate(v) for v in sample], 1) / len(sample)
    cmd = IOMMUCTL + ["translate", "--json", str(dom_path), "-"]
    trials = [timed(cmd, stdin=text) for _ in range(7)]
    tcli, t_mid, out = min(t for t, _ in trials), statistics.median(t for t, _ in trials), trials[0][1]
    assert out.count(b"\n") == n
    n_few = 2000  # the same batch path (numpy, stdin parser), as good as no work: the command's fixed cost
    few_text = "".join(f"{v:#x}\n" for v in iovas[:n_few]).encode()
    tfew, _ = timed(cmd, stdin=few_text, repeat=5)
    row("batch walk (translate_many)", f"{n / tw / 1e6:.2f} M/s", f"1 by 1: {1 / t_one / 1e6:.3f} M/s",
        f"{t_one * n / tw:.0f}x")
    row("whole command (start, parse, walk, JSON out)", f"{n / tcli / 1e6:.2f} M/s",
        f"median of 7: {n / t_mid / 1e6:.2f} M/s", "", ">= 2 M/s")
    row("  its time: best / median / fixed cost", f"{tcli:.2f} / {t_mid:.2f} s", f"{tfew * 1e3:.0f} ms")
    from iommuctl import translate as tr
    from iommuctl.bulk import parse_numbers

    tp = in_process(lambda: parse_numbers(text))
    res = translate_many(dom.walker, arr)
    tf = in_process(lambda: [tr._json_rows(res, slice(k, k + tr.CHUNK), None) for k in range(0, n, tr.CHUNK)], 2)
    row("  parse / walk / format JSON, one thread each", f"{tp:.2f} / {tw:.2f} / {tf:.2f} s")
    print("    (the command formats and writes on threads beside parsing and walking: writer.py)")

    print("\n4. cold start")
    script = shutil.which("iommuctl") or "iommuctl"  # the console script, as a user types it
    cmd = [script, "translate", "example:smmuv3-4k", "0x1000"]
    base_cmd = [sys.executable, "-c", "import click, yaml"]
    timed(cmd)  # the first run compiles into the scratch cache
    base_t, _ = timed(base_cmd, repeat=15)
    cold, _ = timed(cmd, repeat=15)
    cold_tty, _ = timed(cmd, repeat=15, tty=True)
    row("translate example:smmuv3-4k 0x1000 (piped)", f"{cold * 1e3:.0f} ms",
        f"import click,yaml {base_t * 1e3:.0f} ms", f"{cold / base_t:.2f}x", "<= 2x")
    row("  the same on a terminal (rich table)", f"{cold_tty * 1e3:.0f} ms", "", f"{cold_tty / base_t:.2f}x")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        # the dev shell's way: iommuctl's sources compiled on every run (the baseline's modules
        # are compiled at install, so they are not)
        b2, c2 = (timed(c, repeat=15, env=dict(os.environ))[0] for c in (base_cmd, cmd))
        row("  no bytecode written (this dev shell)", f"{c2 * 1e3:.0f} ms", f"import click,yaml {b2 * 1e3:.0f} ms",
            f"{c2 / b2:.2f}x")

    print("\n5. peak RSS walking a 128 MiB image")
    big = image if image.stat().st_size >= 100 << 20 else None
    if big is not None:
        p = subprocess.run(["/usr/bin/time", "-f", "%M"] + IOMMUCTL + ["walk", "--summary", str(dom_path)],
                           capture_output=True, text=True)
        rss = int(p.stderr.strip().splitlines()[-1]) * 1024
        size = big.stat().st_size
        row(f"walk --summary ({size >> 20} MiB image)", f"{rss >> 20} MiB", f"image {size >> 20} MiB",
            f"+{(rss - size) >> 20} MiB", "< image + 100 MiB")
    else:
        row("(needs the 64 GiB image: run without --quick)", "-")

    print("\n6. one format of each family: leaves/s of walk --summary over 1 GiB of scattered pages")
    families = {  # label: (domain head, scatter page, physical base)
        "arm-v7s": ("format: arm-v7s\nconfig: {ias: 32, oas: 32}\n", "4K", 0x40000000),
        "apple-dart2 (16K)": ("driver: apple-dart-t6000\n", "16K", 0x100000000),
        "amdv1": ("format: amdv1\nconfig: {levels: 4, vasz: 48, oasz: 52}\n", "4K", 0x100000000),
        "rockchip": ("format: rockchip\nconfig: {version: 2}\n", "4K", 0x100000000),
    }
    for label, (head, page, pbase) in families.items():
        name = "fam-" + label.split()[0]
        try:
            path = build(name, head + f"mappings:\n  - {{iova: 0x40000000, size: 1G, phys: {{scatter: {page}, "
                                      f"seed: 1, base: {pbase:#x}}}, prot: rw}}\n")
        except subprocess.CalledProcessError:
            row(label, "not built (format or config not available)")
            continue
        d = load_domain(path)
        lo, hi = min(s for s, _ in d.windows), max(e for _, e in d.windows)
        t = in_process(lambda d=d, lo=lo, hi=hi: summarise(d, lo, hi))
        n_leaves = sum(summarise(d, lo, hi).leaves.values())
        row(label, f"{n_leaves / t / 1e6:.1f} M leaves/s", f"{n_leaves:,} leaves")

    print("\n7. walk --json of 8 GiB of scattered 4K pages (one row per run)")
    path8 = build("scatter8g", scattered(8, seed=7))
    d8 = load_domain(path8)
    from formats.base import prot_str
    from iommuctl.walk import leaf_runs

    def per_run_rows() -> int:  # the simple way: a Run object and an f-string per run
        lines = [f'{{"iova": "{r.iova:#x}", "end": "{r.end:#x}", "phys": "{r.phys:#x}", "pgsize": {r.pgsize}, '
                 f'"count": {r.count}, "prot": "{prot_str(r.prot)}", "level": {r.level}}}'
                 for r in leaf_runs(d8, 0, 1 << 48)]
        return len("\n".join(lines))

    t_py = in_process(per_run_rows, 1)
    t_json, out8 = timed(IOMMUCTL + ["walk", "--json", str(path8)], repeat=2)
    n_runs = out8.count(b"\n") - 1
    row(f"whole command ({n_runs:,} runs, cold, piped)", f"{t_json:.2f} s", f"per-run Python {t_py:.2f} s",
        f"{t_py / t_json:.1f}x", "")
    t_text, _ = timed(IOMMUCTL + ["walk", str(path8)], repeat=2)
    row("  the plain table instead (two passes: widths, rows)", f"{t_text:.2f} s")

    print("\n8. diff of two 8 GiB scattered domains (every 4K page moved: one changed run each)")
    other = build("scatter8g-b", scattered(8, seed=8))
    import json

    from iommuctl.diff import diff_domains

    d8b = load_domain(other)

    def per_change() -> int:  # the simple way: a Change object and json.dumps per run
        return sum(len(json.dumps({"change": c.kind, "iova": hex(c.iova), "end": hex(c.end)}))
                   for c in diff_domains(d8, d8b, 0, 1 << 48))

    t_simple = in_process(per_change, 1)
    t_diff, out_d = timed(IOMMUCTL + ["diff", "--json", str(path8), str(other)], repeat=2)
    n_changes = out_d.count(b"\n") - 1
    row(f"diff --json ({n_changes:,} runs, cold, piped)", f"{t_diff:.2f} s",
        f"per-change Python {t_simple:.2f} s", f"{t_simple / t_diff:.1f}x", "")
    t_dtext, _ = timed(IOMMUCTL + ["diff", str(path8), str(other)], repeat=2)
    row("  the plain table instead (two passes)", f"{t_dtext:.2f} s")

    print("\n9. check --json of the 8 GiB image read with the wrong granule (16K): a finding per entry")
    wrong = OUT / "scatter8g-as-16k.yaml"
    wrong.write_text(path8.read_text().replace("granule: 4096", "granule: 16384"))
    from iommuctl.check import Checker, Finding

    dw = load_domain(wrong)

    def per_finding() -> int:  # the simple way: a Finding object and its json_line each
        c = Checker(dw.walker, 0, 1 << 48)
        return sum(len(f.json_line()) for f in c.findings() if isinstance(f, Finding))

    t_simple = in_process(per_finding, 1)
    t_check, out_c = timed(IOMMUCTL + ["check", "--json", str(wrong)], repeat=2)
    n_found = out_c.count(b"\n") - 1  # a line each, then the summary
    row(f"check --json ({n_found:,} findings, cold, piped)", f"{t_check:.2f} s",
        f"per-finding Python {t_simple:.2f} s", f"{t_simple / t_check:.1f}x", "")

    print(f"\n10. translate of {n:,} random IOVAs on a table-less domain (virtio: 65,536 nodes)")
    virtio = OUT / "virtio64k.yaml"
    virtio.write_text("format: virtio\nconfig: {page_size_mask: 0x1000}\nmappings:\n" + "".join(
        f"  - {{iova: {k << 16:#x}, size: 32K, phys: {(1 << 40) + (k << 15):#x}, prot: rw}}\n" for k in range(65536)))
    dv = load_domain(virtio)
    varr = (rng.integers(0, 1 << 32, n, dtype=np.uint64))
    tv = in_process(lambda: translate_many(dv.walker, varr))
    vsample = varr[:20000].tolist()
    tv_one = in_process(lambda: [dv.walker.translate(v) for v in vsample], 1) / len(vsample)
    row("batch (one binary search for all)", f"{n / tv / 1e6:.2f} M/s", f"1 by 1: {1 / tv_one / 1e6:.3f} M/s",
        f"{tv_one * n / tv:.0f}x")


if __name__ == "__main__":
    main()
