"""Batch translation: the shared walk, one level at a time over an array of IOVAs.

Each level is a handful of numpy operations over all IOVAs still walking (index, gather the
entries, classify, follow tables), so a million IOVAs cost a few dozen array passes instead of a
million Python walks. The per-entry hooks are the format's own `*_vec` hooks; answers are the
same as Walker.translate's, which the tests check on random domains.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import LEAF, PHYS_ADDR_MAX, TABLE, Level, PageTable, WalkError
from .lazy import np
from .walker import Walker


@dataclass
class BatchResult:
    iova: np.ndarray
    phys: np.ndarray  # PHYS_ADDR_MAX on a miss
    size: np.ndarray  # 0 on a miss
    level: np.ndarray  # format level number, -1 on a miss
    prot: np.ndarray
    raw: np.ndarray
    entry: np.ndarray
    entries_read: np.ndarray


def index_vec(fmt: PageTable, iovas: np.ndarray, lvl: Level) -> np.ndarray:
    if type(fmt).index is PageTable.index:
        return (iovas >> np.uint64(lvl.shift)) & np.uint64(lvl.entries - 1)
    return np.fromiter((fmt.index(int(v), lvl) for v in iovas), dtype=np.uint64, count=len(iovas))


def next_table_vec(fmt: PageTable, raw: np.ndarray, lvl: Level) -> np.ndarray:
    hook = getattr(fmt, "next_table_vec", None)
    if hook is not None:
        return hook(raw, lvl).astype(np.uint64)  # type: ignore[no-any-return]
    return np.fromiter((fmt.next_table(int(r), lvl) for r in raw), dtype=np.uint64, count=len(raw))


def translate_many(walker: Walker, iovas: np.ndarray) -> BatchResult:
    fmt = walker.fmt
    n = len(iovas)
    iovas = iovas.astype(np.uint64)
    res = BatchResult(iovas, np.full(n, PHYS_ADDR_MAX, dtype=np.uint64), np.zeros(n, dtype=np.uint64),
                      np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.uint64),
                      np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.int64))
    if not fmt.has_tables:
        for i, v in enumerate(iovas.tolist()):
            t = walker.translate(v)
            if t.mapped:
                res.phys[i], res.size[i], res.level[i], res.prot[i] = t.phys, t.size, t.level or 0, t.prot
        return res
    for top in walker.tops:
        lanes = np.flatnonzero((iovas >= np.uint64(top.start)) & (iovas <= np.uint64(top.end - 1)))
        tables = np.full(len(lanes), top.table, dtype=np.uint64)
        for li in range(top.level_index, len(fmt.levels)):
            if len(lanes) == 0:
                break
            lvl = fmt.levels[li]
            va = iovas[lanes]
            entry = tables + index_vec(fmt, va, lvl) * np.uint64(fmt.entry_size)
            raw, fault = walker.mem.gather(entry, fmt.dtype)
            if fault is not None:
                raise WalkError(fault, f"table entry at {fault:#x} is outside memory")
            res.entries_read[lanes] += 1
            kinds = fmt.classify_vec(raw, lvl)
            leaf = kinds == LEAF
            if leaf.any():
                lr = raw[leaf]
                size = fmt.leaf_size_vec(lr, lvl).astype(np.uint64)
                ll = lanes[leaf]
                res.phys[ll] = fmt.leaf_phys_vec(lr, lvl).astype(np.uint64) + (va[leaf] & (size - np.uint64(1)))
                res.size[ll] = size
                res.level[ll] = lvl.num
                res.prot[ll] = fmt.leaf_prot_vec(lr, lvl)
                res.raw[ll] = lr
                res.entry[ll] = entry[leaf]
            go = kinds == TABLE
            if li == len(fmt.levels) - 1:
                break
            lanes, tables = lanes[go], next_table_vec(fmt, raw[go], lvl)
    walker.entries_read += int(res.entries_read.sum())
    return res
