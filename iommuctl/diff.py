"""`iommuctl diff`: mappings added, removed or changed between two domains, compared per byte
of IOVA space (phys, page size of the backing PTE, prot), whatever their formats.

Both domains' clipped leaves (analysis.Segs) are pulled batch by batch up to a common cut;
each chunk's elementary pieces are classified with numpy and merged into runs as arrays
(ChangeBatch), a run straddling two chunks merged when the next chunk shows it goes on. The
command writes the runs as JSON lines or as the plain table with bulk.Rows, chunk by chunk, so
millions of changed runs cost array work and bounded memory, never a Python object each.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import click
import numpy as np

from formats.base import prot_str

from .analysis import TOP, U64, Segs, _halves, _leaves
from .cli import json_option, load
from .columns import Columns, hold_last
from .domain import Domain
from .numbers import fmt_size
from .walk import parse_range
from .writer import Chunk, Job, write_chunks

CHUNK = 1 << 16  # leaves buffered per diff step: bounds memory, amortises numpy call overhead
ROWS_CHUNK = 1 << 15  # changes formatted at a time
ADDED, REMOVED, CHANGED = 1, 2, 3
KIND_NAMES = {ADDED: "added", REMOVED: "removed", CHANGED: "changed"}
WHAT_PHYS, WHAT_PGSIZE, WHAT_PROT = 4, 2, 1  # bits of ChangeBatch.what, in the order `what` lists them


@dataclass(frozen=True)
class Side:
    phys: int  # output of the run's first IOVA
    pgsize: int
    prot: int


@dataclass
class Change:
    """IOVAs [iova, end) translate differently: `a` is the first domain's translation (None:
    unmapped there), `b` the second's. One run: each side is IOVA- and PA-contiguous with one
    page size and prot."""

    kind: str  # added, removed, changed
    iova: int
    end: int
    a: Side | None
    b: Side | None

    @property
    def what(self) -> list[str]:
        if self.a is None or self.b is None:
            return []
        out = []
        if self.a.phys != self.b.phys:
            out.append("phys")
        if self.a.pgsize != self.b.pgsize:
            out.append("pgsize")
        if self.a.prot != self.b.prot:
            out.append("prot")
        return out

    def follows(self, prev: Change) -> bool:
        if prev.kind != self.kind or prev.end != self.iova:
            return False
        n = prev.end - prev.iova
        for x, y in ((prev.a, self.a), (prev.b, self.b)):
            if (x is None) != (y is None):
                return False
            if x is not None and y is not None and (
                    x.phys + n != y.phys or x.pgsize != y.pgsize or x.prot != y.prot):
                return False
        return True


@dataclass
class DiffStats:
    same: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0
    runs: dict[str, int] = field(default_factory=lambda: {"added": 0, "removed": 0, "changed": 0})

    @property
    def differ(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass
class ChangeBatch(Columns):
    """Changed runs as parallel arrays: kind (ADDED/REMOVED/CHANGED), iova and length (uint64:
    a run never crosses 2^63, so its length fits; iova + length may be 2^64), and per side its
    presence, phys of the first IOVA, page size and prot."""

    kind: np.ndarray
    iova: np.ndarray
    length: np.ndarray
    has_a: np.ndarray
    a_phys: np.ndarray
    a_pg: np.ndarray
    a_pr: np.ndarray
    has_b: np.ndarray
    b_phys: np.ndarray
    b_pg: np.ndarray
    b_pr: np.ndarray

    def change(self, i: int) -> Change:
        iova = int(self.iova[i])
        a = Side(int(self.a_phys[i]), int(self.a_pg[i]), int(self.a_pr[i])) if self.has_a[i] else None
        b = Side(int(self.b_phys[i]), int(self.b_pg[i]), int(self.b_pr[i])) if self.has_b[i] else None
        return Change(KIND_NAMES[int(self.kind[i])], iova, iova + int(self.length[i]), a, b)

    def sides(self) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]:
        """(present, phys, page size, prot) of side a, then of side b."""
        return (self.has_a, self.a_phys, self.a_pg, self.a_pr), (self.has_b, self.b_phys, self.b_pg, self.b_pr)

    @property
    def what(self) -> np.ndarray:
        """WHAT_* bits per run: the sides' differences (none unless both sides are there)."""
        both = self.has_a & self.has_b
        return np.where(both, (self.a_phys != self.b_phys) * WHAT_PHYS + (self.a_pg != self.b_pg) * WHAT_PGSIZE
                        + (self.a_pr != self.b_pr) * WHAT_PROT, 0).astype(np.intp)


class _Feed:
    """One domain's clipped leaves, pulled batch by batch; everything below `frontier` is known."""

    def __init__(self, dom: Domain, start: int, end: int, bar: bool = False) -> None:
        self.it = _leaves(dom, start, end, bar)
        self.end = end
        self.buf: list[Segs] = []
        self.n = 0
        self.frontier = start
        self.done = False

    def pull(self) -> None:
        for sg in self.it:
            self.buf.append(sg)
            self.n += len(sg)
            self.frontier = int(sg.s[-1]) + int(sg.ln[-1])
            return
        self.done = True
        self.frontier = self.end

    def take(self, cut: int) -> Segs:
        """Everything below `cut`; a piece straddling it is split."""
        allseg = Segs.concat(self.buf)
        if cut >= TOP:
            k = len(allseg)
        else:
            k = int(np.searchsorted(allseg.s, U64(cut), "left"))
        out, rest = allseg[:k], allseg[k:]
        if k and int(out.s[-1]) + int(out.ln[-1]) > cut:
            s0, l0, p0 = int(out.s[-1]), int(out.ln[-1]), int(out.p[-1])
            out = Segs(out.s.copy(), out.ln.copy(), out.p, out.pg, out.pr, out.lv)
            out.ln[-1] = cut - s0
            tail = Segs(np.array([cut], dtype=np.uint64), np.array([s0 + l0 - cut], dtype=np.uint64),
                        np.array([p0 + cut - s0], dtype=np.uint64), out.pg[-1:], out.pr[-1:], out.lv[-1:])
            rest = Segs.concat([tail, rest])
        self.buf = [rest] if len(rest) else []
        self.n = len(rest)
        return out


def diff_batches(a: Domain, b: Domain, start: int, end: int, ignore: Sequence[str] = (),
                 stats: DiffStats | None = None, bar: bool = True) -> Iterator[ChangeBatch]:
    """Maximal runs of IOVAs in [start, end) whose translation differs between `a` and `b`, a
    batch at a time. `ignore` may hold "pgsize" and/or "prot". Streams: at most about CHUNK
    leaves of each domain are held at once; each batch's last run is held back until the next
    shows whether it goes on."""
    st = stats if stats is not None else DiffStats()

    def emit(cb: ChangeBatch) -> ChangeBatch:
        kinds = np.bincount(cb.kind, minlength=4)
        for k, name in KIND_NAMES.items():
            st.runs[name] += int(kinds[k])
        return cb

    def chunks(lo: int, hi: int) -> Iterator[ChangeBatch]:
        fa, fb = _Feed(a, lo, hi, bar=bar), _Feed(b, lo, hi)
        last_cut = lo
        while True:
            while not (fa.done and fb.done):
                cut = min(fa.frontier, fb.frontier)
                if fa.n + fb.n >= CHUNK and cut > last_cut:
                    break
                lag = fa if not fa.done and (fb.done or fa.frontier <= fb.frontier) else fb
                lag.pull()
            cut = min(fa.frontier, fb.frontier)
            cb = _diff_chunk(fa.take(cut), fb.take(cut), ignore, st)
            if cb is not None:
                yield cb
            last_cut = cut
            if fa.done and fb.done and not fa.n and not fb.n:
                return

    for lo, hi in _halves(start, end):  # a run never crosses 2^63: offsets stay within uint64
        for cb in hold_last(chunks(lo, hi), _join):
            yield emit(cb)


def _join(held: ChangeBatch, cb: ChangeBatch) -> bool:
    """hold_last's merge: the held change goes on into cb's first (Change.follows)."""
    if not cb.change(0).follows(held.change(0)):
        return False
    for f in ("iova", "a_phys", "b_phys"):
        getattr(cb, f)[0] = getattr(held, f)[0]
    cb.length[0] += held.length[0]
    return True


def diff_domains(a: Domain, b: Domain, start: int, end: int, ignore: Sequence[str] = (),
                 stats: DiffStats | None = None) -> Iterator[Change]:
    """diff_batches as Change objects (for the API and small ranges)."""
    for cb in diff_batches(a, b, start, end, ignore, stats):
        for i in range(len(cb)):
            yield cb.change(i)


def _diff_chunk(A: Segs, B: Segs, ignore: Sequence[str], st: DiffStats) -> ChangeBatch | None:
    """The changed runs of one chunk (both sides' pieces below the same cut); counts bytes."""
    if not len(A) and not len(B):
        return None
    base = min(int(x.s[0]) for x in (A, B) if len(x))
    ub = U64(base)
    a_s, b_s = A.s - ub, B.s - ub
    a_e, b_e = a_s + A.ln, b_s + B.ln
    pts = _sorted_unique(np.concatenate((a_s, a_e, b_s, b_e)))
    lo, hi = pts[:-1], pts[1:]  # elementary pieces: no side changes inside one
    width = hi - lo

    def locate(s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(s):
            return np.zeros(len(lo), dtype=bool), np.zeros(len(lo), dtype=np.int64)
        i = np.searchsorted(s, lo, "right") - 1
        ic = np.maximum(i, 0)
        return (i >= 0) & (lo < e[ic]), ic

    in_a, ia = locate(a_s, a_e)
    in_b, ib = locate(b_s, b_e)
    z = np.zeros(len(lo), dtype=np.uint64)
    a_ph = A.p[ia] + (lo - a_s[ia]) if len(A) else z
    b_ph = B.p[ib] + (lo - b_s[ib]) if len(B) else z
    a_pg = A.pg[ia] if len(A) else z
    b_pg = B.pg[ib] if len(B) else z
    zi = np.zeros(len(lo), dtype=np.int64)
    a_pr = A.pr[ia] if len(A) else zi
    b_pr = B.pr[ib] if len(B) else zi
    both = in_a & in_b
    differs = a_ph != b_ph
    if "pgsize" not in ignore:
        differs |= a_pg != b_pg
    if "prot" not in ignore:
        differs |= a_pr != b_pr
    kind = np.zeros(len(lo), dtype=np.int8)
    kind[in_b & ~in_a] = ADDED
    kind[in_a & ~in_b] = REMOVED
    kind[both & differs] = CHANGED
    st.same += int(width[both & ~differs].sum(dtype=np.uint64))
    st.added += int(width[kind == ADDED].sum(dtype=np.uint64))
    st.removed += int(width[kind == REMOVED].sum(dtype=np.uint64))
    st.changed += int(width[kind == CHANGED].sum(dtype=np.uint64))
    sel = np.flatnonzero(kind)
    if not len(sel):
        return None
    k, l_, h = kind[sel], lo[sel], hi[sel]
    ap, bp, ag, bg, ar, br = a_ph[sel], b_ph[sel], a_pg[sel], b_pg[sel], a_pr[sel], b_pr[sel]
    has_a, has_b = in_a[sel], in_b[sel]
    n = len(sel)
    brk = np.ones(n, dtype=bool)
    if n > 1:  # a piece continues the one before: same kind, adjacent, each side linear
        w = h[:-1] - l_[:-1]
        cont = (k[1:] == k[:-1]) & (l_[1:] == h[:-1])
        cont &= ~has_a[1:] | ((ap[1:] == ap[:-1] + w) & (ag[1:] == ag[:-1]) & (ar[1:] == ar[:-1]))
        cont &= ~has_b[1:] | ((bp[1:] == bp[:-1] + w) & (bg[1:] == bg[:-1]) & (br[1:] == br[:-1]))
        brk[1:] = ~cont
    starts = np.flatnonzero(brk)
    last = np.append(starts[1:], n) - 1
    return ChangeBatch(k[starts], l_[starts] + ub, h[last] - l_[starts], has_a[starts], ap[starts], ag[starts],
                       ar[starts], has_b[starts], bp[starts], bg[starts], br[starts])


def diff_range(a: Domain, b: Domain, text: str | None) -> tuple[int, int]:
    """--range for diff: within the union of both input address spaces."""

    class Both:
        windows = a.windows + b.windows
        name = a.name if a.name == b.name else f"{a.name} and {b.name}"

    return parse_range(text, Both())  # type: ignore[arg-type]


# -- output -------------------------------------------------------------------------------------

def _wraps(cb: ChangeBatch) -> bool:
    """A run ending at 2^64: its end is beyond uint64 (the rows go one by one)."""
    return bool(((cb.iova + cb.length) == 0).any())


def _what_words() -> list[str]:
    return [",".join(w for bit, w in ((WHAT_PHYS, "phys"), (WHAT_PGSIZE, "pgsize"), (WHAT_PROT, "prot"))
                     if code & bit) for code in range(8)]


def _json_change(ch: Change) -> str:
    rec = f'{{"change": "{ch.kind}", "iova": "{ch.iova:#x}", "end": "{ch.end:#x}", "size": {ch.end - ch.iova}'
    for name, s in (("a", ch.a), ("b", ch.b)):
        if s is not None:
            rec += f', "{name}": {{"phys": "{s.phys:#x}", "pgsize": {s.pgsize}, "prot": "{prot_str(s.prot)}"}}'
    if ch.kind == "changed":
        rec += ', "what": [' + ", ".join(f'"{w}"' for w in ch.what) + "]"
    return rec + "}\n"


def _json_rows(cb: ChangeBatch) -> Chunk:
    from .bulk import Rows, pow2_codes, small_codes

    rows = Rows(len(cb))
    rows.words(cb.kind.astype(np.intp), ["", '{"change": "added", "iova": "0x', '{"change": "removed", "iova": "0x',
                                         '{"change": "changed", "iova": "0x'])
    rows.hex(cb.iova)
    rows.text('", "end": "0x')
    rows.hex(cb.iova + cb.length)
    rows.text('", "size": ')
    rows.decimal(cb.length)
    for name, (has, phys, pg, pr) in zip("ab", cb.sides()):
        rows.text(f', "{name}": {{"phys": "0x', has)
        rows.hex(phys, has)
        rows.text('", "pgsize": ', has)
        rows.words(*pow2_codes(pg), where=has)
        rows.text(', "prot": "', has)
        codes, words = small_codes(pr)
        rows.words(codes, [prot_str(int(w)) + '"}' for w in words], has)
    changed = cb.kind == CHANGED
    rows.words(cb.what, [', "what": [' + ", ".join(f'"{w}"' for w in ws.split(",") if w) + "]"
                         for ws in _what_words()], changed)
    rows.text("}\n")
    return rows.array()


HEAD = ["change", "iova", "end", "size", "a (phys size prot)", "b (phys size prot)", "what"]


def _side_text(s: Side | None) -> str:
    return "-" if s is None else f"{s.phys:#x} {fmt_size(s.pgsize)} {prot_str(s.prot)}"


def _text_cells(ch: Change) -> list[str]:
    return [ch.kind, f"{ch.iova:#x}", f"{ch.end:#x}", fmt_size(ch.end - ch.iova), _side_text(ch.a), _side_text(ch.b),
            ",".join(ch.what)]


def _side_words(pg: np.ndarray, pr: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(codes, " SIZE PROT" words) of one side's page sizes and prots."""
    from .bulk import small_codes

    sizes, pg_codes = np.unique(pg, return_inverse=True)
    pr_codes, prots = small_codes(pr)
    codes = pg_codes.reshape(-1) * len(prots) + pr_codes
    return codes, [f" {fmt_size(int(z))} {prot_str(int(p))}" for z in sizes.tolist() for p in prots]


def _size_parts(n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """fmt_size of each length in pieces: (decimal?, the decimal value, suffix shift, characters).
    N + T/G/M/K for exact multiples, else decimal below 1K and hex above."""
    from .bulk import decimal_digits, hex_digits

    low = n & (~n + np.uint64(1))  # lowest set bit
    tz = np.frexp(low.astype(np.float64))[1] - 1
    shift = np.select([tz >= 40, tz >= 30, tz >= 20, tz >= 10], [40, 30, 20, 10], 0)
    dec = (shift > 0) | (n < np.uint64(1024))
    q = n >> shift.astype(np.uint64)
    return dec, q, shift, np.where(dec, decimal_digits(q) + (shift > 0), hex_digits(n) + 2)


def _size_text(rows: Any, n: np.ndarray, width: int) -> None:
    """fmt_size of each length, right-justified to `width`."""
    dec, q, shift, used = _size_parts(n)
    rows.pad(used, width)
    rows.decimal(q, dec)
    rows.words(shift // 10, ["", "K", "M", "G", "T"], dec)
    rows.text("0x", ~dec)
    rows.hex(n, ~dec)


@dataclass
class _Layout:
    rows: int = 0
    wraps: bool = False
    widths: list[int] = field(default_factory=lambda: [len(h) for h in HEAD[:-1]])


def _layout(a: Domain, b: Domain, start: int, end: int, ignore: Sequence[str], st: DiffStats) -> _Layout:
    """The first pass of the plain table: rows and column widths (and the totals, into st)."""
    from .bulk import hex_digits

    lay = _Layout()
    w = lay.widths
    for cb in diff_batches(a, b, start, end, ignore, st):
        lay.rows += len(cb)
        if lay.wraps or _wraps(cb):
            lay.wraps = True
            continue
        w[0] = max(w[0], max(len(KIND_NAMES[int(k)]) for k in np.unique(cb.kind).tolist()))
        w[1] = max(w[1], 2 + int(hex_digits(cb.iova).max()))
        w[2] = max(w[2], 2 + int(hex_digits(cb.iova + cb.length).max()))
        w[3] = max(w[3], int(_size_parts(cb.length)[3].max()))
        for col, (has, phys, pg, pr) in zip((4, 5), cb.sides()):
            if not has.all():
                w[col] = max(w[col], 1)
            if has.any():
                codes, words = _side_words(pg[has], pr[has])
                lens = np.array([len(x) for x in words])[codes] + 2 + hex_digits(phys[has])
                w[col] = max(w[col], int(lens.max()))
    return lay


def _text_rows(cb: ChangeBatch, widths: list[int]) -> Chunk:
    from .bulk import Rows

    rows = Rows(len(cb))
    rows.words(cb.kind.astype(np.intp), [""] + [KIND_NAMES[k].ljust(widths[0]) + "  " for k in (1, 2, 3)])
    rows.hex_cell(cb.iova, widths[1])
    rows.text("  ")
    rows.hex_cell(cb.iova + cb.length, widths[2])
    rows.text("  ")
    _size_text(rows, cb.length, widths[3])
    # `what`, the last column, is empty unless changed: plain_table's rstrip then also takes the
    # b column's padding, so that column is padded only on changed rows
    changed = cb.kind == CHANGED
    for col, (has, phys, pg, pr) in zip((4, 5), cb.sides()):
        padded = changed if col == 5 else np.ones(len(cb), dtype=bool)
        rows.text("  ")
        rows.text("0x", has)
        digits = rows.hex(phys, has)
        codes, words = _side_words(pg, pr)
        rows.words(codes, words, has)
        rows.pad(2 + digits + np.array([len(x) for x in words])[codes], widths[col], has & padded)
        dash = (~has).astype(np.intp) * (1 + padded)  # 0: none, 1: "-", 2: "-" padded
        rows.words(dash, ["", "-", "-".ljust(widths[col])])
    rows.words(cb.what, ["  " + w for w in _what_words()], changed)
    rows.text("\n")
    return rows.array()


@click.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--range", "range_", metavar="R", help="Only IOVAs in R: START:END (exclusive) or START+LENGTH.")
@click.option("--ignore", type=click.Choice(["pgsize", "prot"]), multiple=True,
              help="Do not count a difference in page size or prot as a change (repeatable).")
@json_option
def diff_cmd(a: str, b: str, range_: str | None, ignore: tuple[str, ...], as_json: bool) -> None:
    """Mappings added, removed or changed (phys, page size, prot) from domain A to domain B.

    Compares translations, not bytes: A and B may be of different formats. Changes are runs
    of IOVAs whose translation differs in the same way. Exit status 1 when they differ.
    """
    from .output import PLAIN_ROWS, emit_json, plain_line, say, styled, table

    da, db = load(a), load(b)
    start, end = diff_range(da, db, range_)
    st = DiffStats()
    title = f"{da.name} -> {db.name}"
    if as_json:
        def json_chunks() -> Iterator[Job]:
            for cb in diff_batches(da, db, start, end, ignore, st):
                if _wraps(cb):
                    yield "".join(_json_change(cb.change(i)) for i in range(len(cb))).encode()
                    continue
                for k in range(0, len(cb), ROWS_CHUNK):
                    yield partial(_json_rows, cb[k:k + ROWS_CHUNK])

        write_chunks(json_chunks())
        emit_json({"summary": {"differ": st.differ, "added": st.added, "removed": st.removed,
                               "changed": st.changed, "same": st.same, "runs": dict(st.runs),
                               "range": {"iova": f"{start:#x}", "end": f"{end:#x}"}}})
    else:
        lay = _layout(da, db, start, end, ignore, st)
        if lay.rows and (lay.wraps or (styled() and lay.rows <= PLAIN_ROWS)):  # rich, or 2^64 ends: per row
            table(title, HEAD, [_text_cells(ch) for ch in diff_domains(da, db, start, end, ignore)],
                  justify_right=("size",))
        elif lay.rows:
            w = lay.widths
            head = plain_line(HEAD, HEAD, w, ("size",))

            def text_chunks() -> Iterator[Job]:
                yield f"{title}\n{head}".encode()
                for cb in diff_batches(da, db, start, end, ignore, bar=False):
                    for k in range(0, len(cb), ROWS_CHUNK):
                        yield partial(_text_rows, cb[k:k + ROWS_CHUNK], w)

            write_chunks(text_chunks())
        verdict = "differ" if st.differ else "translate the same"
        say(f"{verdict}: added {fmt_size(st.added)}, removed {fmt_size(st.removed)}, changed "
            f"{fmt_size(st.changed)} ({sum(st.runs.values())} runs); same {fmt_size(st.same)}; "
            f"range [{start:#x}, {end:#x})")
    if st.differ:
        sys.exit(1)
def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sorting (recent numpy's hash-based unique is far slower on uint64)."""
    x = np.sort(x)
    if len(x) < 2:
        return x
    keep = np.ones(len(x), dtype=bool)
    keep[1:] = x[1:] != x[:-1]
    return x[keep]


