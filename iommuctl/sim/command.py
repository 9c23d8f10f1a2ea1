"""`iommuctl unmap-sim`: the callers' teardown, legacy against length-aware, counted."""

from __future__ import annotations

import sys
from typing import Any

import click

from iommuctl.errors import UserError

from . import CALLERS, UNCONFIRMED, CallerResult, applicable, simulate

TRACE_LIMIT_PAGES = 4096
ROWS = (("translations", "translations"), ("entries_read", "table entries read"), ("unmaps", "unmap calls"),
        ("syncs", "iotlb syncs"), ("unpin_calls", "unpin calls"), ("unpinned_pages", "pages unpinned"))

HELP = """Simulate the callers' teardown of a range, legacy against length-aware.

Each caller's loop runs twice over the domain's tables: legacy (one iova_to_phys per PAGE_SIZE
step, as the kernel did before the series) and length-aware (one iova_to_phys_length per PTE,
advancing to the PTE's end), counting translation calls, table entries their walks read, unmap
calls, IOTLB syncs, unpin calls and pages unpinned; the floor is what one range walk reads.
Small ranges are replayed call by call on a private copy of the tables (unmaps done as the
kernel's unmap does them) and checked: both versions unmap exactly the mapped bytes, unpin the
same PFNs and leave nothing mapped. A failed check is exit status 1 with the first IOVA.

\b
Callers (--caller, default all that apply to the format):
  vfio              VFIO type1 vfio_unmap_unpin (one vfio_dma per --area)
                    length-aware loop UNCONFIRMED (callers.md 2.3 reconstruction)
  iommufd           IOMMUFD iopt_area_unfill_domain / batch_from_domain (one iopt_area per
                    --area; default: each mapped stretch of the range is an area)
                    length-aware loop UNCONFIRMED (callers.md 3.3 reconstruction)
  panfrost          panfrost_mmu_unmap (--heap: a heap BO, lookups per 2M chunk)
  panthor           panthor_vm_unmap_pages
  iommufd-selftest  iommufd_test_md_check_pa (translations only)
                    length-aware loop UNCONFIRMED
The legacy VFIO loop WARNs on a hole and steps through it a page at a time; the hole pages are
reported.
"""


def _parse_span(text: str, domain: Any, what: str) -> tuple[int, int]:
    from iommuctl.walk import parse_range

    try:
        return parse_range(text, domain)
    except UserError as e:
        raise UserError(str(e).replace("--range", what, 1)) from None


def _ratio(a: int, b: int) -> str:
    if b == 0:
        return "-" if a == 0 else "inf"
    r = a / b
    return f"{r:.0f}x" if r >= 100 else f"{r:.2f}x"


def _render(r: CallerResult) -> None:
    from iommuctl.numbers import fmt_size
    from iommuctl.output import say, table

    unconf = " (length-aware loop UNCONFIRMED)" if UNCONFIRMED[r.caller] else ""
    title = f"{r.caller}: [{r.start:#x}, {r.end:#x}), PAGE_SIZE {fmt_size(r.page_size)}{unconf}"
    leg, la = r.legacy.counts, r.length_aware.counts
    rows = []
    for key, label in ROWS:
        a, b = getattr(leg, key), getattr(la, key)
        rows.append([label, a, b, _ratio(a, b)])
    table(title, ["", "legacy", "length-aware", "ratio"], rows, justify_right=("legacy", "length-aware", "ratio"))
    units = f"{len(r.units)} unit(s)" if r.caller != "iommufd" else f"{len(r.units)} area(s)"
    say(f"floor: {r.floor} table entries (one range walk); {units}; counted by {r.mode}; "
            f"driver unmap calls {leg.driver_unmaps} / {la.driver_unmaps}")
    if leg.hole_pages:
        spans = ", ".join(f"[{a:#x}, {b:#x})" for a, b in r.legacy.holes[:4])
        more = "" if len(r.legacy.holes) <= 4 else f" and {len(r.legacy.holes) - 4} more"
        what = "WARNs and steps a page at a time" if r.caller == "vfio" else "finds unmapped"
        say(f"holes: {leg.hole_pages} pages the legacy loop {what}" + (f": {spans}{more}" if spans else ""))
    for n in r.notes:
        say(f"note: {n}")
    if r.ok:
        say("check: ok")
    else:
        assert r.mismatch is not None
        say(f"check: FAILED at {r.mismatch[0]:#x}: {r.mismatch[1]}")


def _table_segments(domain: Any) -> list[Any]:
    """The memory segments holding the domain's tables (root and every table reached)."""
    from .runcount import table_addresses

    addrs = table_addresses(domain.walker)
    segs = []
    for seg in domain.mem.segments:
        if any(seg.base <= a < seg.end for a in addrs):
            segs.append(seg)
    return segs


def _write_after(orig: Any, after_mem: Any, out: str) -> str:
    import os

    import yaml

    segs = _table_segments(orig)
    memory = []
    offset = 0
    try:
        with open(out, "wb") as f:
            for seg in segs:
                data = after_mem.read(seg.base, seg.length)
                f.write(data)
                memory.append({"file": os.path.basename(out), "base": f"{seg.base:#x}", "offset": offset,
                               "length": seg.length})
                offset += seg.length
    except OSError as e:
        raise UserError(f"{out}: {e.strerror or e}") from None
    doc: dict[str, Any] = {"format": orig.fmt.name,
                           "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in orig.fmt.config.items()}}
    if len(orig.roots) == 1:
        doc["root"] = f"{orig.roots[0]:#x}"
    else:
        doc["roots"] = [f"{x:#x}" for x in orig.roots]
    doc["memory"] = memory
    doc["description"] = f"{orig.name} after unmap-sim's teardown"
    return yaml.safe_dump(doc, sort_keys=False)


@click.command("unmap-sim", help=HELP)
@click.argument("domain")
@click.option("--range", "range_", metavar="R", help="START:END (exclusive) or START+LENGTH; default: the whole "
                                                     "input address space.")
@click.option("--caller", type=click.Choice(list(CALLERS) + ["all"]), default="all", show_default=True,
              help="Whose teardown loop.")
@click.option("--page-size", "page_size", default="4K", show_default=True, metavar="SIZE",
              help="The kernel's PAGE_SIZE (4K, 16K, 64K).")
@click.option("--area", "areas", multiple=True, metavar="START+LEN",
              help="The caller's own unit inside the range (a vfio_dma, an iopt_area), torn down on its own; "
                   "repeatable.")
@click.option("--heap", is_flag=True, help="panfrost: the BO is a heap (mapped 2M at a time on GPU faults).")
@click.option("--mode", type=click.Choice(["auto", "replay", "runs"]), default="auto", show_default=True,
              help="replay: call by call on a copy of the tables; runs: counted from the leaf runs.")
@click.option("--trace", is_flag=True, help=f"Print every call (ranges of at most {TRACE_LIMIT_PAGES} pages).")
@click.option("--write-after", "write_after", type=click.Path(dir_okay=False), metavar="OUT.bin",
              help="Write the table memory as the first caller's length-aware teardown leaves it (replayed "
                   "call by call: at most 4 M pages) and print a domain YAML referencing the image.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per caller.")
def unmap_sim(domain: str, range_: str | None, caller: str, page_size: str, areas: tuple[str, ...], heap: bool,
              mode: str, trace: bool, write_after: str | None, as_json: bool) -> None:
    from iommuctl.domain import load_domain
    from iommuctl.numbers import parse_number
    from iommuctl.output import emit_json

    dom = load_domain(domain)
    try:
        page = parse_number(page_size)
    except ValueError as e:
        raise UserError(f"--page-size {page_size!r}: {e}") from None
    if page < 1024 or page & (page - 1):
        raise UserError(f"--page-size {page_size!r}: the kernel's PAGE_SIZE is a power of two (4K, 16K, 64K)")
    from iommuctl.walk import parse_range

    start, end = parse_range(range_, dom)
    spans = [_parse_span(a, dom, "--area") for a in areas] or None
    callers = applicable(dom.fmt) if caller == "all" else [caller]
    if trace and (end - start) // max(page, 1) > TRACE_LIMIT_PAGES and not spans:
        raise UserError(f"--trace prints every call: use it on ranges of at most {TRACE_LIMIT_PAGES} pages")
    if write_after:
        mode = "replay" if mode == "auto" else mode
    results: list[CallerResult] = []
    for name in callers:
        tracer = None
        if trace:
            def tracer(line: str, _name: str = name) -> None:
                if as_json:
                    emit_json({"trace": line, "caller": _name})
                else:
                    sys.stdout.write(f"{_name}: {line}\n")
        from iommuctl.output import progress

        units = spans or [(start, end)]
        pages = sum(b - a for a, b in units) // page
        with progress(2 * pages if mode != "runs" and pages > (1 << 16) else 0, f"unmap-sim {name}") as bar:
            r = simulate(dom, name, start, end, spans, page, mode, heap, tracer, bar.advance)
        results.append(r)
        if as_json:
            emit_json(r.as_json())
        else:
            _render(r)
    if write_after:
        first = results[0]
        sim = first.length_aware.sim
        if sim is None:
            raise UserError("--write-after needs the call-by-call replay (--mode replay)")
        text = _write_after(dom, sim.domain.mem, write_after)
        if as_json:
            emit_json({"write_after": write_after, "caller": first.caller, "yaml": text})
        else:
            sys.stdout.write(text)
    bad = [r for r in results if not r.ok]
    if bad:
        for r in bad:
            assert r.mismatch is not None
            sys.stderr.write(f"iommuctl: unmap-sim: {r.caller}: check failed at {r.mismatch[0]:#x}: "
                             f"{r.mismatch[1]}\n")
        sys.exit(1)
