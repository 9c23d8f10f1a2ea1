"""The callers' teardown loops (SPEC section 6): VFIO type1, IOMMUFD, panfrost, panthor and the
iommufd selftest check, each legacy (iova_to_phys per PAGE_SIZE step) and length-aware
(iova_to_phys_length per PTE), counted as the kernel's own code counts.

`simulate(domain, caller, start, end, ...)` runs one caller both ways. Small ranges are replayed
call by call on private copies of the tables (every translation walked and counted, every unmap
performed by the kernel's unmap semantics, the results checked); long ones are counted from the
leaf runs (runcount), which the tests hold against the replay. A table-less domain (virtio-iommu's
mapping tree) has no leaf runs to count from: it is always replayed, its size bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iommuctl.errors import UserError

from .core import AlgoResult, Counts, SimDomain, first_pfn_difference, floor_entries, leaf_list
from .runcount import NotRunnable as _NotRunnable

CALLERS = ("vfio", "iommufd", "panfrost", "panthor", "iommufd-selftest")
#: callers whose length-aware loop is callers.md's reconstruction, not read from the patch
UNCONFIRMED = {"vfio": True, "iommufd": True, "panfrost": False, "panthor": False, "iommufd-selftest": True}
GPU_FORMATS = ("arm-mali-lpae",)
SELFTEST_FORMATS = ("amdv1-mock",)
AUTO_REPLAY_PAGES = 1 << 14  # below this many pages, replay call by call (and check everything)
FALLBACK_LIMIT_PAGES = 1 << 18  # auto: the most replayed when the run model does not apply
REPLAY_LIMIT_PAGES = 1 << 22  # --mode replay: the most replayed (about a minute per million pages)


def applicable(fmt: Any) -> list[str]:
    """Callers `--caller all` runs for this format."""
    if fmt.name in GPU_FORMATS:
        return ["panfrost", "panthor"]
    out = ["vfio", "iommufd"]
    if fmt.name in SELFTEST_FORMATS:
        out.append("iommufd-selftest")
    return out


@dataclass
class CallerResult:
    caller: str
    start: int
    end: int
    units: list[tuple[int, int]]
    legacy: AlgoResult
    length_aware: AlgoResult
    floor: int
    mode: str  # "replay" or "runs"
    ok: bool = True
    mismatch: tuple[int, str] | None = None
    notes: list[str] = field(default_factory=list)
    page_size: int = 4096

    @property
    def hole_pages(self) -> int:
        return self.legacy.counts.hole_pages

    def as_json(self) -> dict[str, Any]:
        from .core import MAIN_KEYS

        def main(c: Counts) -> dict[str, int]:
            d = c.as_dict()
            return {k: d[k] for k in MAIN_KEYS} | {k: v for k, v in d.items() if k not in MAIN_KEYS}

        out: dict[str, Any] = {
            "caller": self.caller,
            "range": {"iova": f"{self.start:#x}", "end": f"{self.end:#x}"},
            "ok": self.ok,
            "legacy": main(self.legacy.counts),
            "length_aware": main(self.length_aware.counts),
            "floor": {"entries_read": self.floor},
            "mode": self.mode,
            "page_size": self.page_size,
            "units": [{"iova": f"{a:#x}", "end": f"{b:#x}"} for a, b in self.units],
            "hole_pages": self.hole_pages,
            "unconfirmed": UNCONFIRMED[self.caller],
        }
        if self.legacy.holes:
            out["holes"] = [{"iova": f"{a:#x}", "end": f"{b:#x}"} for a, b in self.legacy.holes[:64]]
        if self.mismatch is not None:
            out["mismatch"] = {"iova": f"{self.mismatch[0]:#x}", "reason": self.mismatch[1]}
        if self.notes:
            out["notes"] = self.notes
        return out


def stretches(domain: Any, lo: int, hi: int) -> list[tuple[int, int]]:
    """IOVA-contiguous mapped stretches of [lo, hi), clipped: IOMMUFD's areas and the GPU
    callers' mappings by default."""
    if not domain.fmt.has_tables:
        # the mapping tree's nodes, side by side ones merged (runcount walks tables only)
        out: list[tuple[int, int]] = []
        for v, _, s, _, _, _ in domain.walker.iter_leaves(lo, hi):
            a, b = max(v, lo), min(v + s, hi)
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
        return out
    from .runcount import mapped_stretches

    return mapped_stretches(domain.walker, lo, hi)


def _replay_algo(domain: Any, caller: str, units: list[tuple[int, int]], page: int, la: bool, heap: bool,
                 trace: Callable[[str], None] | None, tick: Callable[[int], None] | None = None) -> AlgoResult:
    from . import gpu, iommufd, selftest, vfio

    sim = SimDomain(domain, page, trace)
    sim.tick = tick
    res = AlgoResult(sim=sim)
    for lo, hi in units:
        if trace:
            trace(f"-- {caller} {'length-aware' if la else 'legacy'}: unit [{lo:#x}, {hi:#x})")
        if caller == "vfio":
            vfio.vfio_unmap_unpin(sim, lo, hi - lo, la, res)
        elif caller == "iommufd":
            iommufd.unfill_area(sim, lo, hi - lo, la, res)
        elif caller == "panfrost":
            gpu.panfrost_unmap(sim, lo, hi - lo, la, res, heap)
        elif caller == "panthor":
            gpu.panthor_unmap(sim, lo, hi - lo, la, res)
        else:
            selftest.md_check_pa(sim, lo, hi - lo, la, res)
    res.counts = sim.c
    res.unpins = sim.unpins
    return res


def _check(domain: Any, caller: str, units: list[tuple[int, int]], leg: AlgoResult, la: AlgoResult,
           page: int) -> tuple[int, str] | None:
    """The first problem, as (IOVA, what), or None."""
    if caller == "iommufd-selftest":
        if leg.stop != la.stop or leg.counts.hole_pages != la.counts.hole_pages:
            at = min(x for x in (leg.stop, la.stop) if x is not None)
            return at, "legacy and length-aware checks stop at different IOVAs"
        return None
    lo = min(a for a, _ in units)
    hi = max(b for _, b in units)
    before = leaf_list(domain, lo, hi)
    problems: list[tuple[int, str]] = []
    assert leg.sim is not None and la.sim is not None
    left_l = set(leg.sim.leaves(lo, hi))
    left_a = set(la.sim.leaves(lo, hi))
    if left_l != left_a:
        v = min(x[0] for x in left_l ^ left_a)
        problems.append((max(v, lo), "legacy and length-aware leave different mappings"))
    pfn_at = first_pfn_difference(leg.unpins, la.unpins, page.bit_length() - 1)
    if pfn_at is not None:
        problems.append((pfn_at, "legacy and length-aware unpin different PFNs"))

    def in_units(v: int, s: int) -> bool:
        return any(v < b and a < v + s for a, b in units)

    for name, left in (("legacy", left_l), ("length-aware", left_a)):
        still = sorted(x for x in left if in_units(x[0], x[2]))
        if still:
            v = max(still[0][0], lo)
            problems.append((v, f"{name} leaves {still[0][2]:#x} mapped at {still[0][0]:#x} in the range"))
        gone = [x for x in before if x not in left]
        outside = [x for x in gone if x[0] < lo or x[0] + x[2] > hi]
        if outside:
            problems.append((outside[0][0], f"{name} unmaps the whole leaf at {outside[0][0]:#x}, "
                                             f"beyond the range"))
    if caller in ("vfio", "iommufd"):
        # the PFNs of the mapped PAGE_SIZE pages of the units, as runs
        shift = page.bit_length() - 1
        exp: list[tuple[int, int, int]] = []
        for v, p, s in before:
            for a, b in units:
                x0, x1 = max(v, a), min(v + s, b)
                x0 = -(-x0 // page) * page
                if x0 < x1:
                    exp.append((x0, (p + x0 - v) >> shift, (x1 - x0 + page - 1) >> shift))
        for name, res in (("legacy", leg), ("length-aware", la)):
            d = first_pfn_difference(res.unpins, exp, shift)
            if d is not None:
                problems.append((d, f"{name} unpins PFNs other than the mapped pages'"))
    if not problems:
        return None
    return min(problems, key=lambda x: x[0])


def simulate(domain: Any, caller: str, start: int, end: int, areas: list[tuple[int, int]] | None = None,
             page: int = 4096, mode: str = "auto", heap: bool = False,
             trace: Callable[[str], None] | None = None, tick: Callable[[int], None] | None = None) -> CallerResult:
    """Run `caller`'s teardown of [start, end) legacy and length-aware. `tick(n)` is told of
    every n translations a replay makes (progress)."""
    if caller not in CALLERS:
        raise UserError(f"unknown caller {caller!r} ({', '.join(CALLERS)})")
    if not domain.fmt.has_tables and domain.fmt.name == "fsl-pamu":
        # fsl_pamu_domain.c: the domain ops are attach_dev and iova_to_phys only
        raise UserError(f"{domain.name}: fsl-pamu has no map or unmap ops in the kernel (fsl_pamu_domain.c): "
                        f"its identity window cannot be torn down, so there is no teardown to simulate")
    if page & (page - 1) or page < 4096:
        raise UserError(f"--page-size {page:#x} is not a power of two of at least 4K")
    if (start | end) & (page - 1):
        raise UserError(f"range [{start:#x}, {end:#x}) is not aligned to PAGE_SIZE {page:#x}")
    explicit = bool(areas)
    if areas:
        for a, b in areas:
            if a < start or b > end:
                raise UserError(f"--area [{a:#x}, {b:#x}) is outside the range [{start:#x}, {end:#x})")
            if (a | b) & (page - 1):
                raise UserError(f"--area [{a:#x}, {b:#x}) is not aligned to PAGE_SIZE {page:#x}")
        units = sorted(areas)
        for (_, b), (a2, _) in zip(units, units[1:]):
            if a2 < b:
                raise UserError(f"--area ranges overlap at {a2:#x}")
    elif caller in ("panfrost", "panthor") and not heap:
        # a GPU unmap is of one mapping (a BO, a VMA): by default each mapped stretch is one
        units = stretches(domain, start, end)
    else:
        units = [(start, end)]
    spans = list(units) if units else [(start, end)]
    floor = floor_entries(domain, spans)
    pages = sum(b - a for a, b in units) // page
    notes: list[str] = []
    if not domain.fmt.has_tables:
        return _replay_tableless(domain, caller, start, end, units, explicit, page, mode, heap, floor,
                                 trace, tick)
    use_replay = mode == "replay" or trace is not None or heap or (mode == "auto" and pages <= AUTO_REPLAY_PAGES)
    if not use_replay:
        try:
            return _runs(domain, caller, start, end, units, explicit, page, floor)
        except _NotRunnable as e:
            if mode == "runs":
                raise UserError(f"{caller}: the run-based count does not cover this range ({e})") from None
            if pages > FALLBACK_LIMIT_PAGES:
                raise UserError(f"{caller}: the run-based count does not cover this range ({e}) and "
                                f"{pages} pages are many to replay one by one: narrow --range, or ask "
                                f"for it with --mode replay (up to {REPLAY_LIMIT_PAGES} pages)") from None
            notes.append(f"replayed call by call: {e}")
    # the replay's cost: one Python loop step per page (a heap BO: per 2M chunk)
    cost = pages // 512 if heap and caller == "panfrost" else pages
    if cost > REPLAY_LIMIT_PAGES:
        raise UserError(f"{pages} pages are too many to replay one by one (limit {REPLAY_LIMIT_PAGES}"
                        f"{' 2M chunks' if heap else ''}): narrow --range or use --area")
    if caller == "iommufd" and not explicit:
        units = stretches(domain, start, end)
    leg = _replay_algo(domain, caller, units, page, False, heap, trace, tick)
    la = _replay_algo(domain, caller, units, page, True, heap, trace, tick)
    res = CallerResult(caller, start, end, units, leg, la, floor, "replay", notes=notes, page_size=page)
    bad = _check(domain, caller, units, leg, la, page) if units else None
    if bad is not None:
        res.ok = False
        res.mismatch = bad
    return res



def _replay_tableless(domain: Any, caller: str, start: int, end: int, units: list[tuple[int, int]],
                      explicit: bool, page: int, mode: str, heap: bool, floor: int,
                      trace: Callable[[str], None] | None, tick: Callable[[int], None] | None) -> CallerResult:
    """A table-less (virtio-iommu) domain: the run-based count walks tables, so replay call by
    call, bounded by the pages the loops step through (IOMMUFD: its mapped stretches only)."""
    if mode == "runs":
        raise UserError(f"{caller}: the run-based count walks page tables; {domain.fmt.name} has none "
                        f"(use --mode replay or auto)")
    if caller == "iommufd" and not explicit:
        units = stretches(domain, start, end)
    pages = sum(b - a for a, b in units) // page
    cost = pages // 512 if heap and caller == "panfrost" else pages
    limit = REPLAY_LIMIT_PAGES if mode == "replay" else FALLBACK_LIMIT_PAGES
    if cost > limit:
        more = (f", or ask for up to {REPLAY_LIMIT_PAGES} pages with --mode replay"
                if mode != "replay" else "")
        raise UserError(f"{caller}: {domain.fmt.name} has no page table to count runs from, so [{start:#x}, "
                        f"{end:#x}) is replayed page by page, and its {pages} pages are too many (limit "
                        f"{limit}): narrow it with --range (or --area){more}")
    notes = [f"replayed call by call: {domain.fmt.name} has no page table for the run-based count"]
    leg = _replay_algo(domain, caller, units, page, False, heap, trace, tick)
    la = _replay_algo(domain, caller, units, page, True, heap, trace, tick)
    res = CallerResult(caller, start, end, units, leg, la, floor, "replay", notes=notes, page_size=page)
    bad = _check(domain, caller, units, leg, la, page) if units else None
    if bad is not None:
        res.ok = False
        res.mismatch = bad
    return res


def _runs(domain: Any, caller: str, start: int, end: int, units: list[tuple[int, int]], explicit: bool,
          page: int, floor: int) -> CallerResult:
    from . import runcount as rc

    w = domain.walker
    minpg = min(domain.fmt.page_sizes)
    for lo, hi in units:
        if (lo | hi) & (minpg - 1):
            # __iommu_unmap refuses a whole call whose iova or size is not aligned to the smallest
            # IOMMU page ("unaligned"); the run formulas assume the call gets as far as the driver.
            raise rc.NotRunnable(f"[{lo:#x}, {hi:#x}) is not aligned to the IOMMU page size {minpg:#x}")
    leg, la = Counts(), Counts()
    out_units = list(units)
    stop: int | None = None
    holes: list[tuple[int, int]] = []
    problems: list[tuple[int, str]] = []
    if caller == "iommufd":
        out_units = []
        for lo, hi in units:
            a, b, areas = rc.iommufd_areas(w, lo, hi, page, implicit=not explicit, problems=problems)
            leg.add(a)
            la.add(b)
            out_units.extend(areas)
    else:
        for lo, hi in units:
            if caller == "vfio":
                a, b = rc.vfio_unit(w, lo, hi, page, holes, problems)
            elif caller in ("panfrost", "panthor"):
                a, b = rc.gpu_unit(w, lo, hi, page)
            else:
                a, b, st = rc.selftest_unit(w, lo, hi)
                stop = stop if stop is not None else st
            leg.add(a)
            la.add(b)
    res = CallerResult(caller, start, end, out_units, AlgoResult(leg), AlgoResult(la), floor, "runs",
                       page_size=page)
    res.legacy.stop = res.length_aware.stop = stop
    if problems:
        res.ok = False
        res.mismatch = min(problems, key=lambda x: x[0])
    merged: list[tuple[int, int]] = []
    for h0, h1 in holes:  # units side by side: one hole across their boundary, as the replay sees it
        if merged and merged[-1][1] == h0:
            merged[-1] = (merged[-1][0], h1)
        else:
            merged.append((h0, h1))
    res.legacy.holes = merged
    return res
