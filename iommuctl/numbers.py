"""Numbers as users write them: 0x8000_0000, 4096, 4K, 2M, 1G, 1T (binary suffixes)."""

from __future__ import annotations

import re

_UNIT = re.compile(r"(\d+)\s*([kmgtpe])(?:i?b)?")
_SUFFIX = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


def parse_number(value: object) -> int:
    """An int from an int or a string; ValueError with a short reason otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a number")
    text = value.strip().replace("_", "")
    if not text:
        raise ValueError("empty number")
    shift = 0
    low = text.lower()
    m = _UNIT.fullmatch(low)
    if m:
        low, shift = m.group(1), _SUFFIX[m.group(2)]
    try:
        n = int(low, 0)
    except ValueError:
        raise ValueError(f"{value!r} is not a number (forms: 4096, 0x1000, 4K, 2M, 1G)") from None
    return n << shift


def fmt_size(n: int) -> str:
    """4096 -> '4K', 2097152 -> '2M'; exact binary multiples only, else hex."""
    for suffix, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n) if n < 1024 else hex(n)
