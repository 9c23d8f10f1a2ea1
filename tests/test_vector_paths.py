"""The vectorised paths (range walk with fused last-level gathers, batch translation) give exactly
what a plain per-entry walk with the formats' scalar hooks gives, for every format.

The reference walker here is deliberately naive: one Python step per table entry, the scalar
classify/next_table/leaf_* hooks only, replicated leaves reported once from their first slot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formats.base import INVALID, LEAF, TABLE
from formats.batch import translate_many
from iommuctl.domain import Domain, example_names, load_domain, load_domain_text

from .test_conformance import CASES, available, domain_for


def simple_leaves(dom: Domain) -> list[tuple[int, int, int, int]]:
    fmt, mem, out = dom.fmt, dom.mem, []

    def table(addr: int, li: int, base: int, lo: int, hi: int) -> None:
        lvl = fmt.levels[li]
        skip_to = -1
        entries: Any = range(lvl.entries)
        if fmt.classify(0, lvl) == INVALID:  # only the non-zero entries can mean anything (flat 1M-entry tables)
            entries = np.flatnonzero(mem.array(addr, lvl.entries, fmt.dtype)).tolist()
        for i in entries:
            va = base + (i << lvl.shift)
            if va + lvl.block <= lo or va >= hi or i < skip_to:
                continue
            raw = mem.read_uint(addr + i * fmt.entry_size, fmt.entry_size, fmt.byteorder)
            kind = fmt.classify(raw, lvl)
            if kind == INVALID:
                continue
            if kind == TABLE and li + 1 < len(fmt.levels):
                table(fmt.next_table(raw, lvl), li + 1, va, lo, hi)
            elif kind == LEAF:
                size = fmt.leaf_size(raw, lvl)
                first = va & ~(size - 1)
                out.append((first, fmt.leaf_phys(raw, lvl), size, fmt.leaf_prot(raw, lvl)))
                skip_to = ((first + size - base) >> lvl.shift)

    for top in dom.walker.tops:
        table(top.table, top.level_index, top.base, top.start, top.end)
    return out


def fast_leaves(dom: Domain) -> list[tuple[int, int, int, int]]:
    lo, hi = min(s for s, _ in dom.windows), max(e for _, e in dom.windows)
    return [(i, p, s, pr) for i, p, s, _lvl, pr, _raw in dom.walker.iter_leaves(lo, hi)]


def assert_legacy_vec_matches(dom: Domain, res: Any, iovas: list[int]) -> None:
    """The format's batch legacy_iova_to_phys (when it has one) against its scalar hook."""
    vec = dom.fmt.legacy_iova_to_phys_vec(res.iova, res.phys, res.size, res.level, res.raw)
    if vec is None:
        return
    for k, v in enumerate(iovas):
        t = dom.walker.translate(v)
        assert int(vec[k]) == dom.fmt.legacy_iova_to_phys(v, t), (dom.fmt.name, hex(v))


TABLE_EXAMPLES = [n for n in example_names() if load_domain(f"example:{n}").fmt.has_tables]


@pytest.mark.parametrize("name", TABLE_EXAMPLES)
def test_every_format_example_fast_equals_simple(name: str) -> None:
    dom = load_domain(f"example:{name}")
    simple = simple_leaves(dom)
    assert fast_leaves(dom) == simple
    rng = np.random.default_rng(5)
    iovas = [i + int(rng.integers(0, s)) for i, _, s, _ in simple[:300]]
    lo, hi = min(s for s, _ in dom.windows), max(e for _, e in dom.windows)
    iovas += [lo + int(x) % (hi - lo) for x in rng.integers(0, 1 << 62, 200, dtype=np.uint64)]
    iovas = [v for v in iovas if dom.fmt.in_windows(v)]
    res = translate_many(dom.walker, np.array(iovas, dtype=np.uint64))
    for k, v in enumerate(iovas):
        t = dom.walker.translate(v)
        assert (int(res.phys[k]), int(res.size[k]), int(res.prot[k])) == (t.phys, t.size, t.prot), hex(v)
    assert_legacy_vec_matches(dom, res, iovas)


LPAE_4K = """format: arm-lpae-s1
config: {granule: 4K, ias: 39, oas: 40}
mappings:
  - {iova: 0x4b00000000, size: 12M, phys: {scatter: 4K, seed: 3, base: 0x6000000000}, prot: rw}
"""  # the scattered 12M spans 6 consecutive leaf tables: the fused 2-D gather path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(1, 700), st.sampled_from([0, 1, 2]),
                          st.sampled_from(["rw", "r", "rw,cache", "w,noexec"])), min_size=1, max_size=6))
def test_random_lpae_domains_fast_equals_simple(spec: list[tuple[int, int, int, int]]) -> None:
    # Each item: a slot of 1 GiB, a length in 4K pages, how far the PA is from IOVA-congruent.
    lines, used = [], set()
    for slot, pages, skew, prot in spec:
        if slot in used:
            continue
        used.add(slot)
        iova = slot << 30
        phys = (1 << 35) + (slot << 30) + skew * 0x1000
        lines.append(f"  - {{iova: {iova:#x}, phys: {phys:#x}, size: {pages * 4096:#x}, prot: '{prot}'}}")
    dom = load_domain_text(LPAE_4K + "\n".join(lines) + "\n")
    assert fast_leaves(dom) == simple_leaves(dom)


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_kernel_images_fast_equals_simple(case_dir: Path) -> None:
    # The range walk's shortcuts (leaf_size_is_block, dense fused tables, uniform prot) against
    # the scalar hooks, on the tables the kernel's own map wrote.
    case = json.loads((case_dir / "case.json").read_text())
    if not available(case):
        pytest.skip("format not built yet")
    dom = domain_for(case, case_dir / "image.bin", "root")
    if not dom.fmt.has_tables:
        pytest.skip("no table to walk")
    assert fast_leaves(dom) == simple_leaves(dom)
    # the kernel's probes (hits, misses, quirks such as mtk 4GB mode or sign extension): the batch
    # legacy answer against the scalar hook, and against what the kernel's iova_to_phys returned
    probes = [p for p in case["probes"] if dom.fmt.in_windows(int(str(p["iova"]), 0))]
    iovas = [int(str(p["iova"]), 0) for p in probes]
    res = translate_many(dom.walker, np.array(iovas, dtype=np.uint64))
    assert_legacy_vec_matches(dom, res, iovas)
    vec = dom.fmt.legacy_iova_to_phys_vec(res.iova, res.phys, res.size, res.level, res.raw)
    if vec is not None:
        kernel = [(k, int(str(p["kernel_iova_to_phys"]), 0)) for k, p in enumerate(probes)
                  if p.get("kernel_iova_to_phys") is not None]
        assert kernel and all(int(vec[k]) == want for k, want in kernel)


def _format_heads() -> list[tuple[str, str]]:
    """(label, domain head) for each table format/driver of the bundled examples."""
    import yaml

    from iommuctl.output import plain_config

    heads: dict[str, str] = {}
    for name in TABLE_EXAMPLES:
        dom = load_domain(f"example:{name}")
        head = yaml.safe_dump({"format": dom.fmt.name, "config": plain_config(dom.fmt.config)})
        heads.setdefault(head, name)
    return [(name, head) for head, name in heads.items()]


@pytest.mark.parametrize("name,head", _format_heads(), ids=[n for n, _ in _format_heads()])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_domains_every_format_fast_equals_simple(name: str, head: str, data: st.DataObject) -> None:
    # Random mappings through every table format's encoder; the vectorised range walk and batch
    # translation against the per-entry walk with the scalar hooks.
    from hypothesis import assume

    from iommuctl.errors import UserError

    from .mapping_strategy import draw_layout

    fmt = load_domain(f"example:{name}").fmt  # the same format and config as `head`
    lo, hi = fmt.windows[0]
    region = min(1 << 30, (hi - lo) // 8)
    prot = data.draw(st.sampled_from(["rw", "r"]))
    maps = data.draw(st.composite(lambda draw: draw_layout(draw, fmt, lo, region, st.just(0), 3, 40))())
    lines = "".join(f"  - {{iova: {i:#x}, phys: {p:#x}, size: {s:#x}, prot: '{prot}'}}\n" for i, p, s, _ in maps)
    try:
        dom = load_domain_text(head + "mappings:\n" + lines)
    except UserError:  # a prot or placement this format's map refuses
        assume(False)
    simple = simple_leaves(dom)
    assert fast_leaves(dom) == simple
    iovas = [i + (s >> 1) for i, _, s, _ in simple[:200]] + [i for i, _, _, _ in simple[:200]]
    iovas += [lo + k * (region // 3) for k in range(24) if lo + k * (region // 3) < hi]
    res = translate_many(dom.walker, np.array(iovas, dtype=np.uint64))
    for k, v in enumerate(iovas):
        t = dom.walker.translate(v)
        assert (int(res.phys[k]), int(res.size[k]), int(res.prot[k])) == (t.phys, t.size, t.prot), hex(v)
    assert_legacy_vec_matches(dom, res, iovas)
