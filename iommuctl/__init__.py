"""iommuctl: decode Linux IOMMU page-table images; iova_to_phys_length in user space.

Public API:
    load_domain(path_or_"example:NAME") -> Domain
    iova_to_phys_length(domain, iova) -> (phys, size)   # (PHYS_ADDR_MAX, 0) on a miss
    iova_to_phys(domain, iova) -> phys                  # the legacy op: 0 on a miss
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

PHYS_ADDR_MAX = (1 << 64) - 1
__version__ = "0.1.0"
__all__ = ["PHYS_ADDR_MAX", "load_domain", "iova_to_phys_length", "iova_to_phys", "Domain"]

if TYPE_CHECKING:
    from .domain import Domain, load_domain
    from .resolver import iova_to_phys, iova_to_phys_length


def __getattr__(name: str) -> Any:
    # Lazy: `iommuctl --help` and small commands should not pay for numpy/construct imports.
    if name in ("load_domain", "Domain"):
        from . import domain

        return getattr(domain, name)
    if name in ("iova_to_phys_length", "iova_to_phys"):
        from . import resolver

        return getattr(resolver, name)
    raise AttributeError(name)
