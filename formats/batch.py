"""Batch translation: the shared walk, one level at a time over an array of IOVAs.

Each level is a handful of numpy operations over all IOVAs still walking (index, gather the
entries, classify, follow tables), so a million IOVAs cost a few dozen array passes instead of a
million Python walks. The per-entry hooks are the format's own `*_vec` hooks; answers are the
same as Walker.translate's, which the tests check on random domains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import LEAF, PHYS_ADDR_MAX, TABLE, WalkError
from .lazy import np
from .walker import Walker, bad_leaf_sizes


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


def translate_many(walker: Walker, iovas: np.ndarray) -> BatchResult:
    fmt = walker.fmt
    n = len(iovas)
    iovas = iovas.astype(np.uint64)
    res = BatchResult(iovas, np.full(n, PHYS_ADDR_MAX, dtype=np.uint64), np.zeros(n, dtype=np.uint64),
                      np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.uint64),
                      np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.int64))
    if not fmt.has_tables:
        batch = getattr(walker, "translate_batch", None)
        if batch is not None:
            batch(iovas, res)
            return res
        for i, v in enumerate(iovas.tolist()):
            t = walker.translate(v)
            if t.mapped:
                res.phys[i], res.size[i], res.level[i], res.prot[i] = t.phys, t.size, t.level or 0, t.prot
                res.raw[i], res.entry[i] = t.raw, t.entry
        return res
    for top in walker.tops:
        inside = (iovas >= np.uint64(top.start)) & (iovas <= np.uint64(top.end - 1))
        lanes = None if inside.all() else np.flatnonzero(inside)  # None: every IOVA, no index arrays
        va = iovas if lanes is None else iovas[lanes]
        tables = np.full(len(va), top.table, dtype=np.uint64)
        for li in range(top.level_index, len(fmt.levels)):
            if len(va) == 0:
                break
            lvl = fmt.levels[li]
            depth = li - top.level_index + 1
            entry = tables + fmt.index_vec(va, lvl).astype(np.uint64, copy=False) * np.uint64(fmt.entry_size)
            raw, fault = walker.mem.gather(entry, fmt.dtype)
            if fault is not None:
                raise WalkError(fault, f"table entry at {fault:#x} is outside memory")
            kinds = fmt.classify_vec(raw, lvl)
            last = li == len(fmt.levels) - 1
            go = kinds == TABLE
            if not last and go.all():
                tables = fmt.next_table_vec(raw, lvl).astype(np.uint64, copy=False)
                continue
            done = ~go if not last else np.ones(len(va), dtype=bool)
            ll = np.flatnonzero(done) if lanes is None else lanes[done]
            res.entries_read[ll] = depth
            leaf = kinds == LEAF
            if leaf.any():
                if leaf.all():
                    lr, lva, lentry = raw, va, entry
                    lanes_leaf: Any = slice(None) if lanes is None else lanes
                else:
                    lr, lva, lentry = raw[leaf], va[leaf], entry[leaf]
                    lanes_leaf = np.flatnonzero(leaf) if lanes is None else lanes[leaf]
                if fmt.leaf_size_is_block:
                    size = np.broadcast_to(np.uint64(lvl.block), (len(lr),))
                    bad = None
                else:
                    size = fmt.leaf_size_vec(lr, lvl).astype(np.uint64, copy=False)
                    bad = bad_leaf_sizes(size, lvl)
                if bad is not None:  # as Walker.translate: a hostile size is refused, not used
                    k = int(np.flatnonzero(bad)[0])
                    at = int(lentry[k])
                    raise WalkError(at, f"level {lvl.num} entry at {at:#x} ({int(lr[k]):#x}) decodes to a leaf "
                                        f"of {int(size[k]):#x} bytes, not a power of two within its table")
                res.phys[lanes_leaf] = (fmt.leaf_phys_vec(lr, lvl).astype(np.uint64, copy=False)
                                        + (lva & (size - np.uint64(1))))
                res.size[lanes_leaf] = size
                res.level[lanes_leaf] = lvl.num
                res.prot[lanes_leaf] = walker._prot(lr, lvl)
                res.raw[lanes_leaf] = lr
                res.entry[lanes_leaf] = lentry
            if last:
                break
            lanes = np.flatnonzero(go) if lanes is None else lanes[go]
            va, tables = va[go], fmt.next_table_vec(raw[go], lvl).astype(np.uint64, copy=False)
    walker.entries_read += int(res.entries_read.sum())
    return res
