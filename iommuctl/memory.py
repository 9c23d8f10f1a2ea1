"""Physical address space assembled from segments: raw files (mmap), ELF cores, inline hex, zero.

Reads never copy an image whole: raw files and ELF cores are memory-mapped and tables are
returned as numpy views over the mapping. A read that touches no segment raises
`MemoryFault` naming the address, so a walker can report a pointer outside memory.
"""

from __future__ import annotations

import bisect
import mmap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from formats.lazy import np


class MemoryFault(Exception):
    """A read or write outside every segment (or across a segment's end)."""

    def __init__(self, addr: int, length: int, why: str = "outside memory") -> None:
        super().__init__(f"physical address {addr:#x} (+{length}) is {why}")
        self.addr = addr
        self.length = length


class MemoryConfigError(ValueError):
    """A segment description that cannot be used (missing file, overlap, short file)."""


@dataclass
class Segment:
    base: int
    length: int
    buf: memoryview | None  # None: known to be all zero
    origin: str = ""
    writable: bool = False
    source: tuple[Path, int] | None = None  # (file, offset) of an mmapped segment

    @property
    def end(self) -> int:
        return self.base + self.length




@dataclass
class PhysMem:
    """A sparse physical address space. Segments never overlap."""

    segments: list[Segment] = field(default_factory=list)
    _bases: list[int] = field(default_factory=list)
    _keep: list[object] = field(default_factory=list)  # mmaps / files kept alive

    # -- construction -----------------------------------------------------------------------
    def add(self, seg: Segment) -> None:
        if seg.length <= 0:
            raise MemoryConfigError(f"{seg.origin}: empty segment at {seg.base:#x}")
        if seg.end > 1 << 64:
            raise MemoryConfigError(f"{seg.origin}: segment {seg.base:#x}+{seg.length:#x} passes 2^64")
        i = bisect.bisect_left(self._bases, seg.base)
        for other in self.segments[max(0, i - 1) : i + 1]:
            if seg.base < other.end and other.base < seg.end:
                raise MemoryConfigError(
                    f"{seg.origin}: [{seg.base:#x}, {seg.end:#x}) overlaps {other.origin} "
                    f"[{other.base:#x}, {other.end:#x})"
                )
        self.segments.insert(i, seg)
        self._bases.insert(i, seg.base)

    def add_file(self, path: str | Path, base: int, offset: int = 0, length: int | None = None,
                 origin: str | None = None) -> None:
        path = Path(path)
        origin = origin or str(path)
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise MemoryConfigError(f"{origin}: not a regular file")
        except OSError as e:
            raise MemoryConfigError(f"{origin}: {e.strerror or e}") from None
        if offset < 0 or offset > size:
            raise MemoryConfigError(f"{origin}: offset {offset:#x} is beyond the file's {size:#x} bytes")
        if length is None:
            length = size - offset
        if offset + length > size:
            raise MemoryConfigError(
                f"{origin}: {length:#x} bytes at offset {offset:#x} wanted, the file has {size:#x}")
        if length == 0:
            raise MemoryConfigError(f"{origin}: no bytes to map")
        self.add(Segment(base, length, self._map(path, offset, length), origin, source=(path, offset)))

    def _map(self, path: Path, offset: int, length: int) -> memoryview:
        # ACCESS_COPY: writers (unmap-sim on a copy) change private pages only, never the file.
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        with open(path, "rb") as f:
            m = mmap.mmap(f.fileno(), length + offset - start, offset=start, access=mmap.ACCESS_COPY)
        self._keep.append(m)
        return memoryview(m)[offset - start : offset - start + length]

    def add_bytes(self, base: int, data: bytes | bytearray, origin: str = "bytes") -> None:
        self.add(Segment(base, len(data), memoryview(bytearray(data)), origin, writable=True))

    def add_zero(self, base: int, length: int, origin: str = "zero") -> None:
        self.add(Segment(base, length, None, origin))

    # -- lookup -----------------------------------------------------------------------------
    def _find(self, addr: int, length: int) -> Segment:
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0:
            seg = self.segments[i]
            if addr + length <= seg.end:
                return seg
            if addr < seg.end:
                raise MemoryFault(addr, length, f"past the end of {seg.origin} at {seg.end:#x}")
        raise MemoryFault(addr, length)

    def contains(self, addr: int, length: int = 1) -> bool:
        try:
            self._find(addr, length)
        except MemoryFault:
            return False
        return True

    def read(self, addr: int, length: int) -> bytes:
        seg = self._find(addr, length)
        if seg.buf is None:
            return bytes(length)
        off = addr - seg.base
        return bytes(seg.buf[off : off + length])

    def read_uint(self, addr: int, size: int, byteorder: str = "little") -> int:
        seg = self._find(addr, size)
        if seg.buf is None:
            return 0
        off = addr - seg.base
        return int.from_bytes(seg.buf[off : off + size], byteorder)  # type: ignore[arg-type]

    def array(self, addr: int, count: int, dtype: np.dtype) -> np.ndarray:
        """`count` entries of `dtype` at `addr`: a view over the image, never a copy of it."""
        dtype = np.dtype(dtype)
        nbytes = count * dtype.itemsize
        try:
            seg = self._find(addr, nbytes)
        except MemoryFault:
            return self._spanning_array(addr, count, dtype)
        if seg.buf is None:
            return np.zeros(count, dtype=dtype)
        off = addr - seg.base
        return np.frombuffer(seg.buf, dtype=dtype, count=count, offset=off)

    def table_rows(self, addrs: np.ndarray, count: int, dtype: np.dtype) -> np.ndarray | None:
        """`count` entries at each address of `addrs` as a 2-D array (one row per table), when
        every table lies whole in one segment at an entry-aligned offset; else None."""
        dtype = np.dtype(dtype)
        size = dtype.itemsize
        lo, hi = int(addrs.min()), int(addrs.max())
        try:
            seg = self._find(lo, count * size)
        except MemoryFault:
            return None
        if hi + count * size > seg.end or seg.buf is None or (lo - seg.base) % size or seg.length % size:
            return None
        offs = (addrs - np.uint64(seg.base)).astype(np.int64)
        if (offs % size).any():
            return None
        whole = np.frombuffer(seg.buf, dtype=dtype)
        row = count * size
        if seg.length % row == 0 and not (offs % row).any():  # tables aligned to their size: copy whole rows
            return whole.reshape(-1, count)[offs // row]  # type: ignore[no-any-return]
        return whole[(offs // size)[:, None] + np.arange(count)]  # type: ignore[no-any-return]

    def gather(self, addrs: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, int | None]:
        """The `dtype` value at each address of `addrs` (uint64 array), read with numpy per segment.
        Returns (values, first faulting address or None); faulting lanes read as 0."""
        dtype = np.dtype(dtype)
        size = dtype.itemsize
        out = np.zeros(len(addrs), dtype=np.uint64)
        if len(addrs) == 0:
            return out, None
        covered = np.zeros(len(addrs), dtype=bool)
        # Walks stay within very few segments: test each segment as a range, no per-lane search.
        for seg in self.segments:
            off = addrs - np.uint64(seg.base)  # below the base wraps to a huge offset
            hit = off <= np.uint64(seg.length - size) if seg.length >= size else np.zeros(len(addrs), bool)
            if not hit.any():
                continue
            covered |= hit
            if seg.buf is None:
                continue
            lanes: Any
            if hit.all():
                lanes, o = slice(None), off
            else:
                lanes = np.flatnonzero(hit)
                o = off[lanes]
            if seg.length % size == 0 and not (o % np.uint64(size)).any():
                out[lanes] = np.frombuffer(seg.buf, dtype=dtype)[(o // np.uint64(size)).astype(np.intp)]
            else:  # unaligned entries: assemble from bytes
                byts = np.frombuffer(seg.buf, dtype=np.uint8)[o.astype(np.intp)[:, None] + np.arange(size)]
                out[lanes] = np.frombuffer(np.ascontiguousarray(byts).tobytes(), dtype=dtype)
        fault = None
        if not covered.all():
            fault = int(addrs[int(np.flatnonzero(~covered)[0])])
        return out, fault

    def _spanning_array(self, addr: int, count: int, dtype: np.dtype) -> np.ndarray:
        """A table that runs across adjacent segments (an image window with `zero:` memory around
        it, as the mtk-v1 4 MiB flat table): a read-only copy of the pieces; a gap still faults."""
        nbytes = count * dtype.itemsize
        pieces = []
        at, end = addr, addr + nbytes
        while at < end:
            seg = self._find(at, 1)  # MemoryFault on a gap
            n = min(seg.end, end) - at
            if n % dtype.itemsize:
                raise MemoryFault(addr, nbytes, "split across segments inside an entry")
            pieces.append(self.array(at, n // dtype.itemsize, dtype))
            at += n
        out = np.concatenate(pieces) if len(pieces) > 1 else pieces[0].copy()
        out.flags.writeable = False  # a copy: writes through it would be lost, so refuse them
        return out

    def write_uint(self, addr: int, size: int, value: int, byteorder: str = "little") -> None:
        seg = self._find(addr, size)
        if seg.buf is None or seg.buf.readonly:
            self._materialise(seg)
        off = addr - seg.base
        assert seg.buf is not None
        seg.buf[off : off + size] = value.to_bytes(size, "big" if byteorder == "big" else "little")

    def _materialise(self, seg: Segment) -> None:
        # Only zero segments lack a buffer; a zero region written to becomes real bytes.
        if seg.buf is None:
            seg.buf = memoryview(bytearray(seg.length))

    def copy(self) -> PhysMem:
        """A private, writable copy: file segments are mapped again copy-on-write, so it is cheap."""
        out = PhysMem()
        for seg in self.segments:
            if seg.source is not None:
                path, offset = seg.source
                buf = out._map(path, offset, seg.length)
            elif seg.buf is not None:
                buf = memoryview(bytearray(seg.buf))
            else:
                buf = None
            out.add(Segment(seg.base, seg.length, buf, seg.origin, seg.writable, seg.source))
        return out



def load_elf(mem: PhysMem, path: str | Path, origin: str | None = None) -> None:
    """Add every PT_LOAD segment of an ELF core at its physical address (p_paddr)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    path = Path(path)
    origin = origin or str(path)
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            loads = [(s["p_paddr"], s["p_offset"], s["p_filesz"]) for s in elf.iter_segments()
                     if s["p_type"] == "PT_LOAD" and s["p_filesz"] > 0]
    except OSError as e:
        raise MemoryConfigError(f"{origin}: {e.strerror or e}") from None
    except (ELFError, Exception) as e:  # pyelftools raises a variety of errors on junk
        raise MemoryConfigError(f"{origin}: not a usable ELF core ({e})") from None
    if not loads:
        raise MemoryConfigError(f"{origin}: no PT_LOAD segments with file bytes")
    for paddr, offset, filesz in loads:
        mem.add_file(path, paddr, offset, filesz, origin=f"{origin} PT_LOAD@{paddr:#x}")
