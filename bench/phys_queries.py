"""Physical-side queries on a big domain: `reverse` of one PA and `walk --phys-range` of a 1 GiB
physical window, each against `walk --summary` of the same domain (issue 9 asks for within 2x).

The domain is 64 GiB of scattered 4K pages in the arm-lpae-s1 4K-granule layout (48-bit ias:
levels 0..3). Building 16 M pages through `mappings:` costs minutes, so the tables are written
directly with numpy: one L0, one L1, 64 L2 and 32768 L3 tables, contiguous in one image file,
descriptors from the format's own encode_table / encode_leaf (so the bytes are what the
kernel's map writes), and a domain YAML pointing at the image with `root:`.

    python bench/phys_queries.py [--gib 64] [--dir DIR] [--repeat 3]

Times are those of the CLI (`python -m iommuctl ...`, start-up included), best of `--repeat`
runs: wall-clock (what a user waits for) and CPU (user + system of the child, which other load on
the machine does not inflate); the ratios use CPU time.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

GRANULE = 4096
TABLES_AT = 0x4000_0000
PHYS_BASE = 0x1_0000_0000
SEED = 7


def build_image(directory: Path, gib: int = 64) -> tuple[Path, np.ndarray]:
    """Write tables.bin + domain.yaml into `directory`; returns (yaml path, per-page phys)."""
    from formats import get_format
    from iommuctl.domain import scatter_pages

    cls = get_format("arm-lpae-s1")
    fmt = cls(dict(cls.config_defaults))
    l0, l1, l2, l3 = fmt.levels
    pages = (gib << 30) // GRANULE
    assert gib <= 512 and pages % 512 == 0, "one L1 table: at most 512 GiB, whole L3 tables"
    n_l3 = pages // 512
    n_l2 = -(-n_l3 // 512)
    n_tables = 2 + n_l2 + n_l3
    img = np.zeros(n_tables * 512, dtype=np.uint64)

    def addr(t: int) -> int:  # physical address of table number t
        return TABLES_AT + t * GRANULE

    img[0] = fmt.encode_table(addr(1), l0)  # L0[0] -> the one L1 table
    l2_first, l3_first = 2, 2 + n_l2
    for i in range(n_l2):
        img[512 + i] = fmt.encode_table(addr(l2_first + i), l1)
    l2_slots = (l2_first * 512) + np.arange(n_l3)  # the L2 entries, in order, contiguous
    img[l2_slots] = [fmt.encode_table(addr(l3_first + j), l2) for j in range(n_l3)]
    # Scattered pages exactly as the loader's `scatter:` makes them (no two physically adjacent).
    phys = np.asarray(scatter_pages(pages, SEED, PHYS_BASE, GRANULE), dtype=np.uint64)
    # A 4K page descriptor is its attribute bits | the page address (ARM_LPAE_PTE_ADDR_MASK, 4K
    # granule: no address rotation), so encode_leaf at 0 gives the template; a sample is checked
    # against the format's own encoder.
    prot = 3  # IOMMU_READ | IOMMU_WRITE
    template = fmt.encode_leaf(0, GRANULE, l3, prot)
    leaves = phys | np.uint64(template)
    for k in np.random.default_rng(1).integers(0, pages, 64).tolist():
        assert int(leaves[k]) == fmt.encode_leaf(int(phys[k]), GRANULE, l3, prot), "template encoding differs"
    img[l3_first * 512:] = leaves
    image = directory / "tables.bin"
    img.astype("<u8").tofile(image)
    yaml_path = directory / "domain.yaml"
    yaml_path.write_text(
        f"description: {gib} GiB of scattered 4K pages (bench/phys_queries.py)\n"
        "format: arm-lpae-s1\n"
        f"root: {TABLES_AT:#x}\n"
        f"memory:\n  - {{file: tables.bin, base: {TABLES_AT:#x}}}\n")
    return yaml_path, phys


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(args: list[str], repeat: int) -> tuple[float, float, str]:
    """(best CPU seconds, best wall seconds, stdout) of `iommuctl ARGS`."""
    best_cpu, best_wall, out = float("inf"), float("inf"), ""
    for _ in range(repeat):
        c0, t0 = _cpu(), time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "iommuctl", *args], capture_output=True, text=True)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        if p.returncode not in (0, 1):
            raise SystemExit(f"iommuctl {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
        best_cpu, best_wall, out = min(best_cpu, cpu), min(best_wall, wall), p.stdout
    return best_cpu, best_wall, out


@contextmanager
def scattered_bench(doc: str | None) -> Iterator[tuple[argparse.Namespace, Path, Path, np.ndarray]]:
    """The benches' common set-up: --gib/--dir/--repeat, the scattered image built into --dir or
    a temporary directory (removed afterwards). Yields (args, directory, domain file, PAs)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=int, default=64)
    ap.add_argument("--dir", type=Path, help="keep the images here (default: a temporary directory)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    tmp = None
    directory = a.dir
    if directory is None:
        tmp = tempfile.mkdtemp(prefix="iommuctl-bench-")
        directory = Path(tmp)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        dom, phys = build_image(directory, a.gib)
        print(f"built {a.gib} GiB of scattered 4K pages ({len(phys)} leaves, "
              f"{(dom.parent / 'tables.bin').stat().st_size >> 20} MiB of tables) in {time.perf_counter() - t0:.1f} s")
        yield a, directory, dom, phys
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    with scattered_bench(__doc__) as (a, _directory, dom, phys):
        d = str(dom)
        pa = int(phys[len(phys) // 3]) + 0x123  # a mapped PA, inside its page
        window = f"{PHYS_BASE + (8 << 30):#x}+1G"
        base, wall, out = timed(["walk", d, "--summary", "--json"], a.repeat)
        print(f"{'walk --summary':35s} cpu {base:6.2f} s  wall {wall:6.2f} s   {out.strip()}")
        rows = [
            ("reverse PA", ["reverse", d, f"{pa:#x}", "--json"], True),
            ("walk --phys-range 1G --summary", ["walk", d, "--phys-range", window, "--summary", "--json"], True),
            ("reverse --range 1G --json (runs)", ["reverse", d, "--range", window, "--json"], False),
            ("walk --phys-range 1G --json (runs)", ["walk", d, "--phys-range", window, "--json"], False),
        ]
        worst = 0.0
        for label, args, counted in rows:
            dt, wall, out = timed(args, a.repeat)
            lines = out.strip().splitlines()
            ratio = dt / base
            if counted:
                worst = max(worst, ratio)
            print(f"{label:35s} cpu {dt:6.2f} s  wall {wall:6.2f} s   ratio {ratio:4.2f}   "
                  f"({len(lines)} lines; last: {lines[-1][:90] if lines else ''})")
        print(f"worst ratio of the queries {worst:.2f} (issue 9 asks for <= 2; the --json row prints "
              f"every one of the window's leaves and is shown for scale)")


if __name__ == "__main__":
    main()
