"""columns.py: row selection over parallel arrays, and hold_last's merge across batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iommuctl.columns import Columns, hold_last


@dataclass
class Pairs(Columns):
    start: np.ndarray
    length: np.ndarray


def pairs(*rows: tuple[int, int]) -> Pairs:
    return Pairs(np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int64))


def rows(p: Pairs) -> list[tuple[int, int]]:
    return list(zip(p.start.tolist(), p.length.tolist()))


def test_rows_selected_in_every_column() -> None:
    p = pairs((0, 1), (5, 2), (9, 3))
    assert len(p) == 3
    assert rows(p[1:]) == [(5, 2), (9, 3)]
    assert rows(p[np.array([True, False, True])]) == [(0, 1), (9, 3)]
    assert rows(Pairs.concat([p[:1], p[2:]])) == [(0, 1), (9, 3)]


def join(held: Pairs, nxt: Pairs) -> bool:
    """Intervals that touch are one."""
    if int(held.start[0] + held.length[0]) != int(nxt.start[0]):
        return False
    nxt.start[0] = held.start[0]
    nxt.length[0] += held.length[0]
    return True


def test_hold_last_merges_a_run_cut_by_a_batch_boundary() -> None:
    # [0,4) is cut by the first boundary, [10,12) by the second; an empty batch changes nothing
    batches = [pairs((0, 2)), pairs((2, 2), (6, 1), (10, 1)), pairs(), pairs((11, 1)), pairs((20, 1))]
    out = [rows(b) for b in hold_last(iter(batches), join)]
    assert out == [[(0, 4), (6, 1)], [(10, 2)], [(20, 1)]]
    assert [r for b in out for r in b] == [(0, 4), (6, 1), (10, 2), (20, 1)]
    assert list(hold_last(iter([pairs()]), join)) == []
