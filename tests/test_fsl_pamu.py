"""fsl-pamu (drivers/iommu/fsl_pamu_domain.c, fsl_pamu.c): the identity window of its geometry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formats.base import IOMMU_READ, IOMMU_WRITE, Step
from formats.fsl_pamu import ADDR_BITFIELDS, PAACE_ADDR, FslPamu, map_addrspace_size_to_wse
from iommuctl.domain import load_domain_text
from iommuctl.errors import UserError

U64 = (1 << 64) - 1


def test_paace_by_hand() -> None:
    # map_addrspace_size_to_wse(1ULL << 36) = fls64 - 2 = 37 - 2 = 35: 2^(35+1) = 64 GiB
    assert map_addrspace_size_to_wse(1 << 36) == 35
    # addr_bitfields: WBAL 0 | WSE 35 << PPAACE_AF_WSE_SHIFT (6) | AP (QUERY|UPDATE) 3 << 3 | V 1
    assert PAACE_ADDR == (35 << 6) | (3 << 3) | 1 == 0x8D9
    assert ADDR_BITFIELDS.decode(PAACE_ADDR) == {"wbal": 0, "wse": 35, "mw": False, "ap": 3, "dd": False,
                                                 "pt": False, "v": True}
    with pytest.raises(ValueError):
        map_addrspace_size_to_wse(3 << 30)


def test_identity_window() -> None:
    dom = load_domain_text("format: fsl-pamu\n")
    assert dom.windows == [(0, 1 << 36)]
    # fsl_pamu_iova_to_phys: iova itself within [0, 2^36 - 1], else 0
    t = dom.translate(0x9_8765_4321)
    assert (t.phys, t.size, t.prot) == (0x9_8765_4321, 1 << 36, IOMMU_READ | IOMMU_WRITE)
    assert dom.iova_to_phys(0x9_8765_4321) == 0x9_8765_4321
    assert dom.iova_to_phys_length(1 << 36) == (U64, 0) and dom.iova_to_phys(1 << 36) == 0
    assert dom.iova_to_phys(0) == 0  # the identity of 0 is 0 either way
    assert [(i, p, s) for i, p, s, *_ in dom.walker.iter_leaves(0, 1 << 64)] == [(0, 0, 1 << 36)]
    steps: list[Step] = []
    dom.walker.translate(0x1234, steps)
    assert steps[0].kind == "window" and steps[0].fields["wse"] == 35 and steps[0].raw == 0x8D9
    assert dom.walker.unmap_leaf(0, 1 << 36) == 0  # no unmap_pages op
    assert dom.copy().translate(5).phys == 5


def test_no_map_op() -> None:
    with pytest.raises(UserError, match="no map op"):
        load_domain_text("format: fsl-pamu\nmappings:\n  - {iova: 0, phys: 0, size: 4K}\n")
    with pytest.raises(UserError):
        load_domain_text("format: fsl-pamu\nroot: 0x1000\n")
    with pytest.raises(ValueError):
        FslPamu({}).check_map(0, 0, 4096, 3)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, U64))
def test_identity_property(iova: int) -> None:
    f = FslPamu({})
    w = f.tableless_walker([])
    t = w.translate(iova)
    inside = iova < 1 << 36
    assert t.mapped == inside and (t.phys == iova if inside else t.phys == U64)
    assert f.legacy_iova_to_phys(iova, t) == (iova if inside else 0)


def test_batch_is_the_identity_window() -> None:
    from formats.batch import translate_many

    f = FslPamu({})
    w = f.tableless_walker([])
    iova = np.array([0, 0x1234_5678, (1 << 36) - 1, 1 << 36, U64], dtype=np.uint64)
    res = translate_many(w, iova)  # type: ignore[arg-type]
    assert res.phys.tolist() == [0, 0x1234_5678, (1 << 36) - 1, U64, U64]
    assert res.size.tolist() == [1 << 36, 1 << 36, 1 << 36, 0, 0]  # the window is the one "page"
    legacy = f.legacy_iova_to_phys_vec(res.iova, res.phys, res.size, res.level, res.raw)
    assert legacy.tolist() == [0, 0x1234_5678, (1 << 36) - 1, 0, 0]  # fsl_pamu_iova_to_phys
