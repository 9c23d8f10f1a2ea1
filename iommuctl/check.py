"""`iommuctl check`: lint a domain's tables for what a crash dump or a buggy driver leaves behind.

The traversal is the shared walker's (`Walker.visit_tables`): every table is entered once, in
IOVA order, and a table that cannot be entered (outside memory, a cycle, a second parent) comes
back as a TableFault instead of stopping the walk. Each table's entries are then judged with the
format's own vectorised hooks (numpy per table), so the cost is the tables visited, as for
`walk`. Rules (ids as printed):

  outside-memory    a table pointer (or root) whose table is not (wholly) in the image
  cycle             a table pointer at its own table or an ancestor
  shared-table      a table reached from a second parent
  misaligned-table  a table address not aligned as the kernel allocates that table
  misaligned-leaf   a leaf output address not aligned to the leaf's size
  reserved-bits     bits the format never sets for that kind of entry (the format's hook)
  oas               a leaf (or table) address beyond the output address size
  ias               a live top-level entry outside the input address space (TTBR1 / halves)
  replica-mismatch  copies of a replicated leaf (64K/16M, NL=7, NAPOT...) that disagree
  leaf-size         a leaf size that is not a power of two within its table
  last-level-table  a table pointer where the last level holds leaves only
  undecodable       the format could not decode an entry at all
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

from formats.base import INVALID, LEAF, TABLE, U64, PageTable, WalkError
from formats.lazy import np
from formats.walker import TableFault, TableVisit, Walker, bad_leaf_sizes
from iommuctl.memory import MemoryFault

RULES = ("outside-memory", "cycle", "shared-table", "misaligned-table", "misaligned-leaf", "reserved-bits", "oas",
         "ias", "replica-mismatch", "leaf-size", "last-level-table", "undecodable")


@dataclass(frozen=True)
class Finding:
    """One problem: `address` is the physical address of the offending entry (the root table's
    address for a root), `level` the format's own level number, `index` the entry's index in
    `table`, `raw` the descriptor (None for a root), `iova` the first IOVA the entry maps."""

    rule: str
    address: int
    level: int
    index: int | None
    raw: int | None
    table: int
    iova: int | None
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "address": f"{self.address:#x}", "level": self.level, "index": self.index,
                "raw": None if self.raw is None else f"{self.raw:#x}", "table": f"{self.table:#x}",
                "iova": None if self.iova is None else f"{self.iova:#x}", "message": self.message}

    def json_line(self) -> str:
        """as_json as one line of text, without an encoder call (millions of findings are normal
        for an image read with the wrong format)."""
        from json.encoder import encode_basestring_ascii

        index = "null" if self.index is None else self.index
        raw = "null" if self.raw is None else f'"{self.raw:#x}"'
        iova = "null" if self.iova is None else f'"{self.iova:#x}"'
        return (f'{{"rule": "{self.rule}", "address": "{self.address:#x}", "level": {self.level}, "index": {index}, '
                f'"raw": {raw}, "table": "{self.table:#x}", "iova": {iova}, '
                f'"message": {encode_basestring_ascii(self.message)}}}\n')


# A message piece: a literal, each finding's value as 0x-hex, or each finding's word (codes, words)
Part = str | np.ndarray | tuple[np.ndarray, list[str]]


@dataclass
class FindingBatch:
    """Findings of one rule in one table, as arrays (an image read with the wrong format has one
    per entry): entry `idx[k]` holding `raw[k]`, its message the parts at k."""

    rule: str
    level: int
    table: int
    entry_size: int
    base: int
    shift: int
    idx: np.ndarray
    raw: np.ndarray
    parts: list[Part]

    def __len__(self) -> int:
        return len(self.idx)

    def select(self, k: Any) -> FindingBatch:
        """The findings k selects (a slice or indices), messages included."""
        parts: list[Part] = [p if isinstance(p, str) else (p[0][k], p[1]) if isinstance(p, tuple) else p[k]
                             for p in self.parts]
        return FindingBatch(self.rule, self.level, self.table, self.entry_size, self.base, self.shift,
                            self.idx[k], self.raw[k], parts)

    def head(self, m: int) -> FindingBatch:
        """The first m findings."""
        return self if m >= len(self) else self.select(slice(None, m))

    def message(self, k: int) -> str:
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
            elif isinstance(p, tuple):
                out.append(p[1][int(p[0][k])])
            else:
                out.append(f"{int(p[k]):#x}")
        return "".join(out)

    def finding(self, k: int) -> Finding:
        i = int(self.idx[k])
        return Finding(self.rule, self.table + i * self.entry_size, self.level, i, int(self.raw[k]), self.table,
                       (self.base + (i << self.shift)) & U64, self.message(k))

    def findings(self) -> Iterator[Finding]:
        for k in range(len(self)):
            yield self.finding(k)

    def json_rows(self) -> np.ndarray:
        """The findings' json_line text, with numpy (iommuctl.bulk.Rows)."""
        from json.encoder import encode_basestring_ascii

        from .bulk import Rows

        def lit(s: str) -> str:  # message text as JSON writes it, inside the quotes
            return encode_basestring_ascii(s)[1:-1]

        idx = self.idx.astype(np.uint64)
        rows = Rows(len(idx))
        rows.text(f'{{"rule": "{self.rule}", "address": "0x')
        rows.hex(np.uint64(self.table) + idx * np.uint64(self.entry_size))
        rows.text(f'", "level": {self.level}, "index": ')
        rows.decimal(idx)
        rows.text(', "raw": "0x')
        rows.hex(self.raw.astype(np.uint64))
        rows.text(f'", "table": "{self.table:#x}", "iova": "0x')
        rows.hex(np.uint64(self.base) + (idx << np.uint64(self.shift)))  # wraps as & U64 does
        rows.text('", "message": "')
        for p in self.parts:
            if isinstance(p, str):
                rows.text(lit(p))
            elif isinstance(p, tuple):
                rows.words(p[0], [lit(w) for w in p[1]])
            else:
                rows.text("0x")
                rows.hex(p.astype(np.uint64))
        rows.text('"}\n')
        return rows.array()


@dataclass(frozen=True)
class Count:
    """`n` more findings of `rule`, counted but not made (past the number to show)."""

    rule: str
    n: int


@dataclass
class Stats:
    tables: int = 0
    entries: int = 0  # live (non-zero) entries judged


class Checker:
    """Runs every rule over [start, end) of a walker's tables; `findings()` streams them."""

    def __init__(self, walker: Walker, start: int, end: int, whole: bool = True, show: int | None = None,
                 batches: bool = False) -> None:
        self.w = walker
        self.fmt: PageTable = walker.fmt
        self.start, self.end = start, end
        self.whole = whole  # no --range: also judge top-level entries outside every window
        self.stats = Stats()
        self._roots_done: set[int] = set()
        # Findings still to make as objects; past it the bulk rules yield Counts (an image read
        # with the wrong format has a finding per entry: counting them is array work)
        self.show = show
        self.batches = batches  # the bulk rules yield a FindingBatch each, not Findings

    def _take(self, n: int) -> int:
        """How many of n findings to make (the rest are counted)."""
        if self.show is None:
            return n
        m = min(n, self.show)
        self.show -= m
        return m

    def _some(self, v: TableVisit, rule: str, ks: np.ndarray, raw: np.ndarray, idx: np.ndarray,
              parts: list[Part]) -> Iterator[Finding | FindingBatch | Count]:
        """Findings of `rule` at positions ks of (raw, idx), messages from `parts` (arrays over
        the same positions), up to the budget."""
        m = self._take(len(ks))
        if m:
            batch = self._batch(v, rule, idx, raw, parts).select(ks[:m])
            if self.batches:
                yield batch
            else:
                yield from batch.findings()
        if len(ks) > m:
            yield Count(rule, len(ks) - m)

    # -- driver ----------------------------------------------------------------------------------
    def findings(self) -> Iterator[Finding | FindingBatch | Count]:
        fmt = self.fmt
        events = self.w.visit_tables(self.start, self.end)
        while True:
            try:
                ev = next(events)
            except StopIteration:
                return
            except (ValueError, WalkError, OverflowError, ArithmeticError) as e:
                # a hook gave up on an entry the walk had to follow: report it, stop there
                addr = getattr(e, "addr", self.w.roots[0] if self.w.roots else 0)
                yield Finding("undecodable", addr, fmt.levels[0].num, None, None, addr, None,
                              f"the walk stopped: {e}")
                return
            if isinstance(ev, TableFault):
                yield self._fault(ev)
            elif isinstance(ev, TableVisit):
                try:
                    yield from self._table(ev)
                except (ValueError, WalkError, OverflowError, ArithmeticError) as e:
                    yield Finding("undecodable", ev.table, ev.level.num, None, None, ev.table, ev.base,
                                  f"level {ev.level.num} table at {ev.table:#x} could not be decoded: {e}")

    # -- table faults ------------------------------------------------------------------------------
    def _fault(self, f: TableFault) -> Finding:
        fmt = self.fmt
        lvl = fmt.levels[f.level_index]
        if f.parent is None:
            size = lvl.entries * fmt.entry_size
            return Finding("outside-memory", f.table, lvl.num, None, None, f.table, f.base,
                           f"level {lvl.num} root table {f.table:#x} (+{size:#x}) is not wholly in memory")
        entry, pli, idx, raw = f.parent
        plvl = fmt.levels[pli]
        ptable = entry - idx * fmt.entry_size
        iova = f.base
        if f.reason == "outside-memory":
            msg = f"points at a level {lvl.num} table at {f.table:#x} that is not (wholly) in memory"
            rule = "outside-memory"
        elif f.reason == "cycle":
            msg = f"points at {f.table:#x}, its own table or an ancestor (a cycle)"
            rule = "cycle"
        else:
            msg = f"points at the table {f.table:#x}, already reached from another entry"
            rule = "shared-table"
        return Finding(rule, entry, plvl.num, idx, raw, ptable, iova, msg)

    # -- one table ---------------------------------------------------------------------------------
    def _table(self, v: TableVisit) -> Iterator[Finding | FindingBatch | Count]:
        fmt = self.fmt
        lvl = v.level
        self.stats.tables += 1
        if v.parent is None and v.table not in self._roots_done:
            self._roots_done.add(v.table)
            yield from self._root(v)
        ents = np.asarray(v.entries[v.i0:v.i1], dtype=np.uint64)
        nz = np.flatnonzero(ents)
        if len(nz) == 0:
            return
        raw = ents[nz]
        idx = nz + v.i0
        self.stats.entries += len(nz)
        kinds = np.asarray(fmt.classify_vec(raw, lvl))
        yield from self._reserved(v, raw, idx, kinds)
        last = v.level_index == len(fmt.levels) - 1
        t = kinds == TABLE
        if t.any():
            if last:
                yield from self._some(v, "last-level-table", np.flatnonzero(t), raw, idx,
                                      ["a table descriptor at the last level, which holds leaves only"])
            else:
                yield from self._tables(v, raw[t], idx[t])
        leaf = kinds == LEAF
        if leaf.any():
            yield from self._leaves(v, raw[leaf], idx[leaf])

    def _batch(self, v: TableVisit, rule: str, idx: np.ndarray, raw: np.ndarray, parts: list[Part]) -> FindingBatch:
        return FindingBatch(rule, v.level.num, v.table, self.fmt.entry_size, v.base, v.level.shift, idx, raw, parts)

    def _at(self, v: TableVisit, rule: str, index: int, raw: int, message: str) -> Finding:
        """One finding at entry `index` of v's table (where, and which IOVA, as a batch says)."""
        return self._batch(v, rule, np.array([index]), np.array([raw], dtype=np.uint64), [message]).finding(0)

    def _reserved(self, v: TableVisit, raw: np.ndarray, idx: np.ndarray,
                  kinds: np.ndarray) -> Iterator[Finding | FindingBatch | Count]:
        fmt = self.fmt
        lvl = v.level
        hook = getattr(fmt, "reserved_bits_vec", None)
        if hook is not None:
            bits = np.asarray(hook(raw, lvl, kinds)).astype(np.uint64)
        else:
            bits = np.array([fmt.reserved_bits(r, lvl, k) for r, k in zip(raw.tolist(), kinds.tolist())],
                            dtype=np.uint64)
        ks = np.flatnonzero(bits)
        if len(ks) == 0:
            return
        yield from self._some(v, "reserved-bits", ks, raw, idx,
                              [self._kind_names(raw, lvl, kinds, ks), " entry has reserved bits ", bits, " set"])

    def _kind_names(self, raw: np.ndarray, lvl: Any, kinds: np.ndarray,
                    ks: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """kind_name at positions ks, as (codes over every position, words): one call per kind,
        or per entry for a format whose names read the descriptor itself."""
        fmt = self.fmt
        codes = np.zeros(len(raw), dtype=np.intp)
        kk = kinds[ks]
        if not fmt.kind_name_reads_raw:
            present = np.unique(kk)
            words = [fmt.kind_name(int(raw[ks[int(np.argmax(kk == k))]]), lvl, int(k)) for k in present.tolist()]
            codes[ks] = np.searchsorted(present, kk)
            return codes, words
        names = [fmt.kind_name(r, lvl, k) for r, k in zip(raw[ks].tolist(), kk.tolist())]
        words = sorted(set(names))
        at = {w: i for i, w in enumerate(words)}
        codes[ks] = [at[n] for n in names]
        return codes, words

    def _tables(self, v: TableVisit, raw: np.ndarray, idx: np.ndarray) -> Iterator[Finding | FindingBatch | Count]:
        fmt = self.fmt
        lvl = v.level
        child = fmt.levels[v.level_index + 1]
        _, align = fmt.table_alloc(child)
        align = max(int(align), 1)
        nt = np.asarray(fmt.next_table_vec(raw, lvl)).astype(np.uint64)
        bad = (nt % np.uint64(align)) != 0
        if fmt.oas < 64:
            bad |= (nt >> np.uint64(fmt.oas)) != 0
        for k in np.flatnonzero(bad).tolist():  # both rules of an entry, in entry order
            r, i, t = int(raw[k]), int(idx[k]), int(nt[k])
            if t % align:
                yield self._at(v, "misaligned-table", i, r,
                               f"level {child.num} table address {t:#x} is not {align:#x}-aligned")
            if t >> fmt.oas:
                yield self._at(v, "oas", i, r, f"table address {t:#x} is beyond oas ({fmt.oas} bits)")

    def _leaves(self, v: TableVisit, raw: np.ndarray, idx: np.ndarray) -> Iterator[Finding | FindingBatch | Count]:
        fmt = self.fmt
        lvl = v.level
        size = np.asarray(fmt.leaf_size_vec(raw, lvl)).astype(np.uint64)
        phys = np.asarray(fmt.leaf_phys_vec(raw, lvl)).astype(np.uint64)
        bad = bad_leaf_sizes(size, lvl)
        if bad is not None:
            yield from self._some(v, "leaf-size", np.flatnonzero(bad), raw, idx,
                                  ["decodes to a leaf of ", size, " bytes: not a power of two within the level "
                                   f"{lvl.num} table ({lvl.span:#x} bytes)"])
            ok = ~bad
            raw, idx, size, phys = raw[ok], idx[ok], size[ok], phys[ok]
            if not len(raw):
                return
        mis = (phys & (size - np.uint64(1))) != 0
        yield from self._some(v, "misaligned-leaf", np.flatnonzero(mis), raw, idx,
                              ["output address ", phys, " is not aligned to the leaf size ", size])
        if fmt.oas < 64:
            last = phys + (size - np.uint64(1))
            over = ((last >> np.uint64(fmt.oas)) != 0) | (last < phys)
            yield from self._some(v, "oas", np.flatnonzero(over), raw, idx,
                                  ["output ", phys, "+", size, f" is beyond oas ({fmt.oas} bits)"])
        span = (size >> np.uint64(lvl.shift)).astype(np.int64)
        if (span > 1).any():
            yield from self._replicas(v, raw, idx, span)

    def _replicas(self, v: TableVisit, raw: np.ndarray, idx: np.ndarray, span: np.ndarray) -> Iterator[Finding]:
        """Every slot of a replicated leaf's group must decode to the same leaf (the kernel writes
        identical copies; formats that step the address per copy report the group's start)."""
        fmt = self.fmt
        lvl = v.level
        rep = np.flatnonzero(span > 1)
        idx_r = idx[rep].astype(np.int64)
        n_r = span[rep]
        first = idx_r - idx_r % n_r
        groups = sorted(set(zip(first.tolist(), n_r.tolist())))
        done: set[int] = set()
        for g, n in groups:
            if g in done:
                continue
            done.add(g)
            stop = min(g + n, lvl.entries)
            slots = np.asarray(v.entries[g:stop], dtype=np.uint64)
            kinds = np.asarray(fmt.classify_vec(slots, lvl))
            want = (fmt.leaf_size(int(slots[0]), lvl), fmt.leaf_phys(int(slots[0]), lvl),
                    fmt.leaf_prot(int(slots[0]), lvl)) if kinds[0] == LEAF else None
            if want is None:
                # the group's first slot is not the leaf: judge against the first copy in range
                k0 = int(np.flatnonzero(kinds == LEAF)[0])
                r0 = int(slots[k0])
                want = (fmt.leaf_size(r0, lvl), fmt.leaf_phys(r0, lvl), fmt.leaf_prot(r0, lvl))
            size0, phys0, prot0 = want
            sizes = np.asarray(fmt.leaf_size_vec(slots, lvl)).astype(np.uint64)
            physs = np.asarray(fmt.leaf_phys_vec(slots, lvl)).astype(np.uint64)
            prots = np.asarray(fmt.leaf_prot_vec(slots, lvl)).astype(np.int64)
            diff = ((kinds != LEAF) | (sizes != np.uint64(size0)) | (physs != np.uint64(phys0 & U64))
                    | (prots != np.int64(prot0)))
            if stop - g < n:
                yield self._at(v, "replica-mismatch", g, int(slots[0]),
                               f"a {size0:#x} leaf replicated over {n} entries from index {g} runs past the "
                               f"table's {lvl.entries} entries")
            for k in np.flatnonzero(diff).tolist():
                r = int(slots[k])
                if kinds[k] != LEAF:
                    what = "is " + fmt.kind_name(r, lvl, int(kinds[k]))
                else:
                    what = (f"decodes to {int(physs[k]):#x}+{int(sizes[k]):#x} prot {int(prots[k]):#x}, not "
                            f"{phys0:#x}+{size0:#x} prot {prot0:#x}")
                yield self._at(v, "replica-mismatch", g + k, r,
                               f"copy {k + 1} of {n} of the replicated leaf at index {g} {what}")

    def _root(self, v: TableVisit) -> Iterator[Finding]:
        """Live top-level entries whose IOVA lies outside every window this root serves."""
        if not self.whole:
            return
        fmt = self.fmt
        lvl = v.level
        tops = [t for t in self.w.tops if t.table == v.table and t.level_index == v.level_index]
        legal = np.zeros(lvl.entries, dtype=bool)
        for t in tops:
            lo = (t.start - t.base) >> lvl.shift
            hi = min(((t.end - 1 - t.base) >> lvl.shift) + 1, lvl.entries)
            legal[max(lo, 0):max(hi, 0)] = True
        ents = np.asarray(v.entries, dtype=np.uint64)
        # A top level sized to the input space (pgd_bits, vasz) uses part of what the kernel
        # allocates for it: the rest is where the other half (sign-extend, TTBR1) would be.
        extra = self._root_tail(v)
        if len(extra):
            legal = np.concatenate((legal, np.zeros(len(extra), dtype=bool)))
            ents = np.concatenate((ents, extra))
        if legal.all():
            return
        out = np.flatnonzero(~legal & (ents != 0))
        if not len(out):
            return
        kinds = np.asarray(fmt.classify_vec(ents[out], lvl))
        spaces = ", ".join(f"[{s:#x}, {e:#x})" for s, e in fmt.windows)
        for k in np.flatnonzero(kinds != INVALID).tolist():
            i = int(out[k])
            r = int(ents[i])
            where = "" if i < lvl.entries else f" (past the {lvl.entries} entries the input space uses)"
            yield Finding("ias", v.table + i * fmt.entry_size, lvl.num, i, r, v.table, None,
                          f"live {fmt.kind_name(r, lvl, int(kinds[k]))} entry {i} of the top-level table{where} "
                          f"lies outside the input address space {spaces}")

    def _root_tail(self, v: TableVisit) -> np.ndarray:
        """Entries of the root's allocation (root_alloc) beyond the top level's own entries."""
        fmt = self.fmt
        try:
            allocs = fmt.root_alloc()
            k = self.w.roots.index(v.table) if v.table in self.w.roots else 0
            size = int(allocs[min(k, len(allocs) - 1)][0])
        except (ValueError, IndexError, TypeError, NotImplementedError):
            return np.zeros(0, dtype=np.uint64)
        n = size // fmt.entry_size - v.level.entries
        if n <= 0 or n > 1 << 20:
            return np.zeros(0, dtype=np.uint64)
        try:
            tail = self.w.mem.array(v.table + v.level.entries * fmt.entry_size, n, fmt.dtype)
        except MemoryFault:  # the dump holds only the entries in use
            return np.zeros(0, dtype=np.uint64)
        return np.asarray(tail, dtype=np.uint64)


def check_domain(domain: Any, start: int | None = None, end: int | None = None) -> tuple[list[Finding], Stats]:
    """All findings of a loaded Domain (the Python API; the CLI streams instead)."""
    lo = min(s for s, _ in domain.windows)
    hi = max(e for _, e in domain.windows)
    whole = start is None and end is None
    if not domain.fmt.has_tables:
        return [], Stats()
    c = Checker(domain.walker, lo if start is None else start, hi if end is None else end, whole)
    return [f for f in c.findings() if isinstance(f, Finding)], c.stats


@click.command("check")
@click.argument("domain")
@click.option("--range", "range_", metavar="R", help="Only tables and entries in START:END or START+LENGTH.")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="Show at most N findings (all are counted). Default: all with --json, 500 otherwise.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding, then a summary line.")
def check_cmd(domain: str, range_: str | None, limit: int | None, as_json: bool) -> None:
    """Lint the tables: pointers outside memory, misaligned addresses, reserved bits, cycles,
    shared tables, addresses beyond oas, entries beyond ias, replicated entries that disagree.

    Exit status 1 when there are findings, 0 when clean."""
    from .cli import load
    from .output import emit_json, table
    from .walk import parse_range

    dom = load(domain)
    start, end = parse_range(range_, dom)
    if limit is None:
        limit = -1 if as_json else 500
    counts: Counter[str] = Counter()
    rows: list[list[Any]] = []
    stats = Stats()
    if dom.fmt.has_tables:
        # the budget (--limit) is the checker's: past it, findings come as Counts
        checker = Checker(dom.walker, start, end, whole=range_ is None, show=None if limit < 0 else limit,
                          batches=as_json)
        stats = checker.stats

        seen = 0  # findings made; past --limit they are only counted

        def shown(n: int) -> int:
            nonlocal seen
            k = n if limit < 0 else max(0, min(n, limit - seen))
            seen += n
            return k

        def json_chunks() -> Iterator[Any]:
            lines: list[str] = []
            for f in checker.findings():
                if isinstance(f, Count):
                    counts[f.rule] += f.n
                elif isinstance(f, FindingBatch):
                    counts[f.rule] += len(f)
                    k = shown(len(f))
                    if k:
                        if lines:
                            yield "".join(lines).encode()
                            lines.clear()
                        yield f.head(k).json_rows()
                else:
                    counts[f.rule] += 1
                    if shown(1):
                        lines.append(f.json_line())
            if lines:
                yield "".join(lines).encode()

        if as_json:
            from .writer import write_chunks

            write_chunks(json_chunks())
        else:
            for f in checker.findings():
                if isinstance(f, Count):
                    counts[f.rule] += f.n
                    continue
                assert isinstance(f, Finding)  # batches are asked for with --json only
                counts[f.rule] += 1
                if shown(1):
                    rows.append([f.rule, f"{f.address:#x}", f.level, "-" if f.index is None else f.index,
                                 "-" if f.raw is None else f"{f.raw:#x}",
                                 "-" if f.iova is None else f"{f.iova:#x}", f.message])
    total = sum(counts.values())
    if as_json:
        emit_json({"summary": {"findings": total, "rules": dict(sorted(counts.items())), "tables": stats.tables,
                               "entries": stats.entries, "clean": total == 0,
                               "range": {"iova": f"{start:#x}", "end": f"{end:#x}"}}})
    else:
        from .output import say

        if rows:
            table(f"{dom.name}: check ({dom.fmt.name})", ["rule", "address", "level", "index", "raw", "iova",
                                                          "finding"], rows)
        if not dom.fmt.has_tables:
            what = f"{dom.fmt.name} has no page table: nothing to check"
        elif total:
            by = ", ".join(f"{r}: {n}" for r, n in sorted(counts.items()))
            more = f" (first {limit} shown)" if 0 <= limit < total else ""
            what = f"{total} finding(s){more}: {by}"
        else:
            what = "clean"
        say(f"{what}; {stats.tables} tables, {stats.entries} live entries checked in "
                        f"[{start:#x}, {end:#x})")
    if total:
        sys.exit(1)


__all__ = ["Checker", "Count", "Finding", "RULES", "check_domain", "check_cmd"]
