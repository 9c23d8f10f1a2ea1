"""The vectorised batch translation gives exactly the one-by-one walker's answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from formats.batch import translate_many

from .test_conformance import CASES, available, domain_for


@pytest.mark.parametrize("case_dir", CASES, ids=[c.name for c in CASES])
def test_batch_equals_scalar_on_kernel_images(case_dir: Path) -> None:
    case = json.loads((case_dir / "case.json").read_text())
    if not available(case):
        pytest.skip("format not built yet")
    dom = domain_for(case, case_dir / "image.bin", "root")
    rng = np.random.default_rng(1)
    probes = [p["iova"] for p in case["probes"]]
    lo = min(s for s, _ in dom.windows)
    hi = max(e for _, e in dom.windows)
    extra = [int(x) for x in rng.integers(0, 1 << 62, 200, dtype=np.uint64)]
    iovas = [v for v in probes + [lo + (x % (hi - lo)) for x in extra] if dom.fmt.in_windows(v)]
    res = translate_many(dom.walker, np.array(iovas, dtype=np.uint64))
    for i, v in enumerate(iovas):
        t = dom.walker.translate(v)
        got = (int(res.phys[i]), int(res.size[i]), int(res.entries_read[i]))
        assert got == (t.phys, t.size, t.entries_read), hex(v)
        if t.mapped:
            assert (int(res.level[i]), int(res.prot[i]), int(res.raw[i])) == (t.level, t.prot, t.raw)
