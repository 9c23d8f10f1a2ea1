"""iova_to_phys_length and the legacy iova_to_phys, as the kernel series defines them.

The length-aware op answers (phys, size of the backing PTE), PHYS_ADDR_MAX on a miss, so a
physical address 0 is a mapping like any other. The legacy op is built on it, the way the
series re-implements iova_to_phys: 0 on a miss, plus whatever quirk the format's driver had.
"""

from __future__ import annotations

from formats.base import PHYS_ADDR_MAX, Translation

from .domain import Domain

__all__ = ["PHYS_ADDR_MAX", "iova_to_phys_length", "iova_to_phys", "translate"]


def translate(domain: Domain, iova: int) -> Translation:
    return domain.translate(iova)


def iova_to_phys_length(domain: Domain, iova: int) -> tuple[int, int]:
    return domain.iova_to_phys_length(iova)


def iova_to_phys(domain: Domain, iova: int) -> int:
    return domain.iova_to_phys(iova)
