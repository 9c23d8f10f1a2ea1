"""Batches of rows held as parallel numpy arrays (leaf pieces, runs, changed runs): the row
selection they all share, and the merge of a run that a batch boundary cut in two."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from typing import Any, ClassVar, TypeVar

import numpy as np

C = TypeVar("C", bound="Columns")


class Columns:
    """Base of a dataclass whose fields are equal-length arrays, one row per index."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # what @dataclass gives each subclass

    def __len__(self) -> int:
        return len(getattr(self, fields(self)[0].name))

    def __getitem__(self: C, k: Any) -> C:
        """The rows k selects (a slice, a mask or indices), in every column."""
        return type(self)(*(getattr(self, f.name)[k] for f in fields(self)))

    @classmethod
    def concat(cls: type[C], parts: Sequence[C]) -> C:
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(x, f.name) for x in parts])
                     for f in fields(cls)))


def hold_last(batches: Iterable[C], join: Callable[[C, C], bool]) -> Iterator[C]:
    """The batches, each one's last row held back until the next batch shows whether its run
    goes on: join(held, nxt) merges the held row into nxt's first row (in place) and says so,
    or leaves both as they are and says no."""
    held: C | None = None
    for b in batches:
        if not len(b):
            continue
        if held is not None and not join(held, b):
            yield held
        if len(b) > 1:
            yield b[:-1]
        held = b[-1:]
    if held is not None:
        yield held
