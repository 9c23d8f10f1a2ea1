"""numpy, imported on first use: a one-IOVA `translate` never needs it, and importing it costs
more than the rest of the start-up (see bench/startup.py). Use `from formats.lazy import np`."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:

    class _Lazy:
        def __init__(self, name: str) -> None:
            self._name = name

        def __getattr__(self, attr: str) -> Any:
            # Only misses come here: each attribute is cached on the instance after first use.
            value = getattr(importlib.import_module(self._name), attr)
            self.__dict__[attr] = value
            return value

    np = _Lazy("numpy")

__all__ = ["np"]
