"""The random mapping layout the format round-trip tests share: per slot of the IOVA window,
either a head of small pages up to a block boundary, blocks and a tail of small pages, or small
pages only with the PA sometimes not congruent to the IOVA (so no block is possible)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def draw_layout(draw: st.DrawFn, f: Any, start: int, region: int, prots: st.SearchStrategy[int],
                max_mappings: int, max_small: int) -> list[tuple[int, int, int, int]]:
    small = f.page_sizes[0]
    bigs = [s for s in f.page_sizes if 3 * s + 2 * max_small * small <= region] or [small]
    maps = []
    for k in draw(st.lists(st.integers(0, 7), min_size=1, max_size=max_mappings, unique=True)):
        big = draw(st.sampled_from(bigs))
        n_big, n_small = draw(st.integers(0, 2)), draw(st.integers(0, max_small))
        if n_big:
            head = draw(st.integers(0, min(max_small, big // small - 1)))
            off, size, skew = big - head * small if head else 0, (head + n_small) * small + n_big * big, 0
        else:
            off, size = draw(st.integers(0, 63)) * small, max(n_small, 1) * small
            skew = draw(st.sampled_from([0, 0, small]))
        iova = start + k * region + off
        phys = draw(st.integers(0, ((1 << f.oas) - region) // region - 1)) * region + off + skew
        maps.append((iova, phys, size, draw(prots)))
    return maps
