"""Memory images: raw files (mmapped, windowed), ELF cores by p_paddr, hex, zero, faults."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from iommuctl.memory import MemoryConfigError, MemoryFault, PhysMem, load_elf


def test_file_segment_window_and_reads(tmp_path: Path) -> None:
    f = tmp_path / "img.bin"
    f.write_bytes(bytes(range(256)) * 64)
    mem = PhysMem()
    mem.add_file(f, base=0x8000_0000, offset=0x100, length=0x200)
    assert mem.read_uint(0x8000_0000, 8) == int.from_bytes(bytes(range(8)), "little")
    assert mem.read_uint(0x8000_0000, 4, "big") == 0x00010203
    arr = mem.array(0x8000_0008, 2, np.dtype("<u8"))
    assert [int(x) for x in arr] == [int.from_bytes(bytes(range(8, 16)), "little"),
                                     int.from_bytes(bytes(range(16, 24)), "little")]
    with pytest.raises(MemoryFault, match="0x800001fc"):
        mem.read_uint(0x8000_01FC, 8)  # crosses the end of the window
    with pytest.raises(MemoryFault, match="0x7ffffff8"):
        mem.read_uint(0x7FFF_FFF8, 8)


def test_overlap_and_short_file_are_errors(tmp_path: Path) -> None:
    f = tmp_path / "img.bin"
    f.write_bytes(bytes(4096))
    mem = PhysMem()
    mem.add_file(f, base=0x1000)
    with pytest.raises(MemoryConfigError, match="overlaps"):
        mem.add_zero(0x1800, 0x1000)
    with pytest.raises(MemoryConfigError, match="file has 0x1000"):
        mem.add_file(f, base=0x10000, length=0x2000)
    with pytest.raises(MemoryConfigError, match="No such file"):
        mem.add_file(tmp_path / "missing.bin", base=0x20000)


def test_zero_and_bytes_and_copy_on_write(tmp_path: Path) -> None:
    f = tmp_path / "img.bin"
    f.write_bytes(b"\x11" * 4096)
    mem = PhysMem()
    mem.add_file(f, base=0)
    mem.add_zero(0x10000, 0x1000)
    mem.add_bytes(0x20000, b"\x01\x02\x03\x04")
    assert mem.read_uint(0x10FF8, 8) == 0
    assert mem.read_uint(0x20000, 4) == 0x04030201
    cp = mem.copy()
    cp.write_uint(0x0, 8, 0xDEADBEEF)
    cp.write_uint(0x10000, 8, 7)
    assert cp.read_uint(0, 8) == 0xDEADBEEF and cp.read_uint(0x10000, 8) == 7
    assert mem.read_uint(0, 8) == 0x1111111111111111 and mem.read_uint(0x10000, 8) == 0
    assert f.read_bytes() == b"\x11" * 4096  # the image file is never written


def _elf_core(path: Path, loads: list[tuple[int, bytes]]) -> None:
    """A minimal ELF64 core: header, program headers (PT_LOAD with p_paddr), data."""
    ehsize, phsize = 64, 56
    off = ehsize + phsize * len(loads)
    phdrs, data = b"", b""
    for paddr, blob in loads:
        phdrs += struct.pack("<IIQQQQQQ", 1, 4, off + len(data), 0xFFFF_0000_0000 + paddr, paddr,
                             len(blob), len(blob), 0x1000)
        data += blob
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    hdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, ehsize, 0, 0, ehsize, phsize, len(loads), 0, 0, 0)
    path.write_bytes(hdr + phdrs + data)


def test_elf_core_segments_by_paddr(tmp_path: Path) -> None:
    core = tmp_path / "vmcore"
    _elf_core(core, [(0x4000_0000, b"\xaa" * 16), (0x9000_0000, struct.pack("<Q", 0x1234))])
    mem = PhysMem()
    load_elf(mem, core)
    assert mem.read_uint(0x9000_0000, 8) == 0x1234
    assert mem.read_uint(0x4000_0008, 8) == 0xAAAAAAAAAAAAAAAA
    with pytest.raises(MemoryFault):
        mem.read_uint(0x4000_0010, 8)


def test_junk_elf_is_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELFjunkjunk")
    with pytest.raises(MemoryConfigError, match="not a usable ELF core"):
        load_elf(PhysMem(), junk)
