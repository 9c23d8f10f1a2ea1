"""numpy, imported on first use: a one-IOVA `translate` never needs it, and importing it costs
more than the rest of the start-up (see bench/startup.py). Use `from formats.lazy import np`."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:

    class _Lazy:
        __slots__ = ("_name", "_mod")

        def __init__(self, name: str) -> None:
            self._name = name
            self._mod = None

        def __getattr__(self, attr: str) -> Any:
            mod = self._mod
            if mod is None:
                mod = self._mod = importlib.import_module(self._name)
            return getattr(mod, attr)

    np = _Lazy("numpy")

__all__ = ["np"]
