"""The format protocol: geometry as class/instance attributes, descriptors as construct schemas,
and the few per-entry hooks a format really needs.

A format is a radix tree of tables (flat tables are one level). Everything that walks
(translate, range iteration, explain, check, unmap) lives in `formats.walker` and calls only
the hooks below; everything that builds tables lives in `formats.builder`.

Hooks take the raw descriptor as a Python int. The `*_vec` hooks take a numpy uint array of
descriptors and must return arrays; their defaults loop over the scalar hooks, and formats on
the hot path override them with plain bitwise numpy expressions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from formats.lazy import np

PHYS_ADDR_MAX = (1 << 64) - 1
U64 = (1 << 64) - 1

# Entry kinds returned by `classify`.
INVALID, TABLE, LEAF = 0, 1, 2

# IOMMU_* prot bits (include/linux/iommu.h).
IOMMU_READ, IOMMU_WRITE, IOMMU_CACHE, IOMMU_NOEXEC, IOMMU_MMIO, IOMMU_PRIV = 1, 2, 4, 8, 16, 32
PROT_WORDS = ((IOMMU_CACHE, "cache"), (IOMMU_NOEXEC, "noexec"), (IOMMU_MMIO, "mmio"), (IOMMU_PRIV, "priv"))


def prot_str(prot: int) -> str:
    """IOMMU_* bits as text: "rw", "r", "w" or "-", then ",cache", ",noexec", ... as set."""
    rw = ("r" if prot & IOMMU_READ else "") + ("w" if prot & IOMMU_WRITE else "")
    return ",".join([rw or "-"] + [w for bit, w in PROT_WORDS if prot & bit])


def parse_prot(text: str) -> int:
    """Inverse of prot_str; also accepts "rw" letters alone. Raises ValueError."""
    prot = 0
    parts = [p.strip() for p in str(text).lower().split(",") if p.strip()]
    if not parts:
        raise ValueError("empty prot")
    letters, words = parts[0], parts[1:]
    if letters in {w for _, w in PROT_WORDS}:
        letters, words = "", parts
    for ch in letters:
        if ch == "r":
            prot |= IOMMU_READ
        elif ch == "w":
            prot |= IOMMU_WRITE
        elif ch != "-":
            raise ValueError(f"unknown prot letter {ch!r} (r, w)")
    names = {w: bit for bit, w in PROT_WORDS}
    for w in words:
        if w not in names:
            raise ValueError(f"unknown prot word {w!r} ({', '.join(names)})")
        prot |= names[w]
    return prot


class ConfigError(ValueError):
    """A config value a format does not accept; `key` is the config key (YAML path suffix)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class WalkError(Exception):
    """The tables cannot be walked (pointer outside memory, table reached twice, ...)."""

    def __init__(self, addr: int, message: str) -> None:
        super().__init__(message)
        self.addr = addr


@dataclass(frozen=True)
class Level:
    """One level of a radix table: `num` in the format's own numbering, index = iova bits
    [shift + bits - 1 : shift], one entry maps 1 << shift bytes."""

    num: int
    shift: int
    bits: int

    @property
    def entries(self) -> int:
        return 1 << self.bits

    @property
    def block(self) -> int:
        return 1 << self.shift

    @property
    def span(self) -> int:
        """Bytes of IOVA one table of this level covers."""
        return 1 << (self.shift + self.bits)


@dataclass(frozen=True)
class Translation:
    """What `iova_to_phys_length` says, plus what a front end wants to show."""

    iova: int
    phys: int = PHYS_ADDR_MAX
    size: int = 0
    level: int | None = None  # format's own level number of the leaf
    prot: int = 0
    raw: int | None = None  # the leaf descriptor
    entry: int | None = None  # physical address of the leaf descriptor
    entries_read: int = 0

    @property
    def mapped(self) -> bool:
        return self.size != 0


@dataclass
class Step:
    """One table entry read by a walk, for explain."""

    level: int
    table: int
    index: int
    entry: int
    raw: int
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class LeafBatch:
    """Leaves read from one table, in IOVA order, as parallel numpy arrays (uint64 / int64)."""

    iova: np.ndarray
    phys: np.ndarray
    size: np.ndarray
    prot: np.ndarray
    raw: np.ndarray
    level: int  # format's own level number

    def __len__(self) -> int:
        return len(self.iova)


@dataclass(frozen=True)
class TopTable:
    """A root table and the IOVA window it serves (for formats with several roots or halves)."""

    table: int
    level_index: int  # index into PageTable.levels where the walk starts
    base: int  # IOVA of entry 0 of this table
    start: int  # first legal IOVA served by it
    end: int  # exclusive


class PageTable:
    """A configured format. Subclasses set the class attributes and implement the hooks."""

    # -- declarative description (class attributes) ------------------------------------------
    name: ClassVar[str]
    description: ClassVar[str] = ""
    kernel_source: ClassVar[str] = ""
    entry_size: ClassVar[int] = 8
    byteorder: ClassVar[str] = "little"
    #: config keys with their defaults; `None` default = required or derived
    config_defaults: ClassVar[dict[str, Any]] = {}
    #: the name of the raw root register for `ttbr:` (None: the format has none)
    root_register: ClassVar[str | None] = "ttbr"
    #: number of roots `roots:` takes (1 for most)
    max_roots: ClassVar[int] = 1
    #: formats with no page table (virtio, fsl-pamu) set this False
    has_tables: ClassVar[bool] = True
    # kind_name reads more of the descriptor than its kind and level (v7s supersection/section):
    # check then names each entry by a call of its own, not one per kind
    kind_name_reads_raw: ClassVar[bool] = False
    #: map writes a leaf over an existing table (freeing it) instead of refusing with -EEXIST
    leaf_replaces_table: ClassVar[bool] = False
    #: map writes a leaf over a table only when no leaf lies below it (else -EADDRINUSE)
    leaf_replaces_empty_table: ClassVar[bool] = False
    #: descriptor bits that decide leaf_prot (all but the address bits); lets the walker compute
    #: prot once for a batch of leaves whose attribute bits are all the same (the usual case)
    prot_key_mask: ClassVar[int | None] = None
    #: every leaf maps exactly its level's block (no contiguous hints, large pages or replicated
    #: entries): the walker then skips per-leaf sizes (tests hold leaf_size to it on every image)
    leaf_size_is_block: ClassVar[bool] = False
    #: unmap frees a lower-level table left all zero and zeroes its parent entry (omap
    #: iopgtable_clear_entry_core, tegra-smmu tegra_smmu_pte_put_use)
    frees_empty_tables: ClassVar[bool] = False

    # -- instance geometry, set by __init__ ---------------------------------------------------
    levels: list[Level]  # top first
    page_sizes: list[int]  # ascending, what map may use (pgsize_bitmap)
    oas: int  # output address bits
    windows: list[tuple[int, int]]  # legal IOVA ranges [start, end)
    config: dict[str, Any]

    def __init__(self, config: dict[str, Any]) -> None:
        """Validate `config` (already number-parsed, defaults filled) and derive geometry.
        Raise ConfigError(key, message) on anything the kernel would refuse."""
        self.config = config

    # -- roots ----------------------------------------------------------------------------------
    def root_from_register(self, value: int) -> list[int]:
        """The table address(es) the hardware takes from the raw root register value."""
        return [value]

    def top_tables(self, roots: Sequence[int]) -> list[TopTable]:
        """Root tables with the IOVA window each serves. Default: one root, every window."""
        top = self.levels[0]
        out = []
        for start, end in self.windows:
            base = start & ~(top.span - 1) & U64
            out.append(TopTable(roots[0], 0, base, start, end))
        return out

    def root_alloc(self) -> list[tuple[int, int]]:
        """(bytes, alignment) of each root table the kernel allocates at domain init."""
        top = self.levels[0]
        size = max(top.entries * self.entry_size, 64)
        return [(size, max(size, 4096) if size >= 4096 else 4096)]

    # -- per-entry hooks ---------------------------------------------------------------------
    def index(self, iova: int, lvl: Level) -> int:
        return (iova >> lvl.shift) & (lvl.entries - 1)

    def classify(self, raw: int, lvl: Level) -> int:
        raise NotImplementedError

    def next_table(self, raw: int, lvl: Level) -> int:
        raise NotImplementedError

    def leaf_size(self, raw: int, lvl: Level) -> int:
        """Bytes the leaf maps (a contiguous/replicated leaf reports its whole size)."""
        return lvl.block

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        """Output address of the start of the leaf (aligned to leaf_size)."""
        raise NotImplementedError

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        """IOMMU_* bits the leaf grants (best inverse of the kernel's prot_to_pte)."""
        return IOMMU_READ | IOMMU_WRITE

    def kind_name(self, raw: int, lvl: Level, kind: int) -> str:
        """The word explain shows: table, block, page, invalid, or the format's own."""
        if kind == TABLE:
            return "table"
        if kind == LEAF:
            return "page" if lvl is self.levels[-1] else "block"
        return "invalid"

    def fields(self, raw: int, lvl: Level, kind: int) -> dict[str, Any]:
        """Decoded descriptor fields for explain: from the format's construct schema."""
        schema = self.schema(lvl, kind)
        if schema is None:
            return {}
        return schema.decode(raw)

    def schema(self, lvl: Level, kind: int) -> Descriptor | None:
        return None

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        """One line saying what the entry means (explain)."""
        return ""

    def legacy_iova_to_phys(self, iova: int, t: Translation) -> int:
        """What this format's (driver's) legacy iova_to_phys returns, quirks included."""
        return t.phys if t.mapped else 0

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        """Bits set in `raw` that the format never sets for this kind (check)."""
        return 0

    def legacy_iova_to_phys_vec(self, iova: np.ndarray, phys: np.ndarray, size: np.ndarray, level: np.ndarray,
                                raw: np.ndarray) -> np.ndarray | None:
        """legacy_iova_to_phys over a batch translation (size 0 = a miss); None when the format's
        quirks have no vector form here (the caller then asks the scalar hook per IOVA)."""
        if type(self).legacy_iova_to_phys is PageTable.legacy_iova_to_phys:
            return np.where(size != 0, phys, np.uint64(0)).astype(np.uint64)  # type: ignore[no-any-return]
        return None

    # -- vectorised hooks (override on the hot path) ------------------------------------------
    def classify_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.fromiter((self.classify(int(r), lvl) for r in raw), dtype=np.int8, count=len(raw))

    def reserved_bits_vec(self, raw: np.ndarray, lvl: Level, kinds: np.ndarray) -> np.ndarray:
        """reserved_bits over a table's entries (check's hot path). Most formats' reserved bits
        are `raw & mask(level, kind)`: the mask is learnt from the scalar hook, trusted only if
        the hook is bitwise linear on every single bit (once per level and kind) and agrees on a
        sample of the real entries; otherwise the per-entry loop."""
        out = np.zeros(len(raw), dtype=np.uint64)
        for kind in np.unique(kinds).tolist():
            sel = np.flatnonzero(kinds == kind)
            mask = self._reserved_mask(lvl, kind)
            vals = raw[sel]
            sample = vals[:: max(1, len(sel) // 16)].tolist()
            if mask is not None and all(self.reserved_bits(int(r), lvl, kind) == int(r) & mask for r in sample):
                out[sel] = vals.astype(np.uint64, copy=False) & np.uint64(mask)
            else:
                out[sel] = [self.reserved_bits(int(r), lvl, kind) for r in vals.tolist()]
        return out

    def _reserved_mask(self, lvl: Level, kind: int) -> int | None:
        cache = self.__dict__.setdefault("_reserved_masks", {})
        key = (lvl.num, lvl.shift, kind)
        if key not in cache:
            bits = 8 * self.entry_size
            mask = self.reserved_bits((1 << bits) - 1, lvl, kind)
            linear = all(self.reserved_bits(1 << k, lvl, kind) == (1 << k) & mask for k in range(bits))
            cache[key] = mask if linear else None
        return cache[key]  # type: ignore[no-any-return]

    def index_vec(self, iova: np.ndarray, lvl: Level) -> np.ndarray:
        """index() over a uint64 array (batch translation)."""
        if type(self).index is PageTable.index:
            return (iova >> np.uint64(lvl.shift)) & np.uint64(lvl.entries - 1)  # type: ignore[no-any-return]
        return np.fromiter((self.index(int(v), lvl) for v in iova), dtype=np.uint64, count=len(iova))

    def next_table_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.fromiter((self.next_table(int(r), lvl) for r in raw), dtype=np.uint64, count=len(raw))

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.fromiter((self.leaf_phys(int(r), lvl) for r in raw), dtype=np.uint64, count=len(raw))

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.fromiter((self.leaf_size(int(r), lvl) for r in raw), dtype=np.uint64, count=len(raw))

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return np.fromiter((self.leaf_prot(int(r), lvl) for r in raw), dtype=np.int64, count=len(raw))

    # -- encoder hooks (formats.builder drives them) ------------------------------------------
    def table_alloc(self, lvl: Level) -> tuple[int, int]:
        """(bytes, alignment) of a table at `lvl` that the kernel allocates on demand."""
        size = lvl.entries * self.entry_size
        return size, size

    def encode_table(self, table: int, lvl: Level) -> int:
        """Descriptor at `lvl` pointing to a next-level table at `table`."""
        raise NotImplementedError

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        """Descriptor at `lvl` for a leaf of `pgsize` bytes at `phys` (one copy)."""
        raise NotImplementedError

    def encode_leaf_vec(self, phys: np.ndarray, pgsize: int, lvl: Level, prot: int) -> np.ndarray:
        """encode_leaf over an array of addresses (the builder's bulk path for scattered pages).

        Every kernel format packs the output address bit by bit (in place, shifted, or moved like
        MTK's PA[34:32]), so encode_leaf(p) = encode_leaf(base) | OR of one pattern per set bit.
        The patterns are learnt from encode_leaf itself and checked on a sample of the real
        addresses; a format where that does not hold gets the plain per-page loop."""
        n = len(phys)
        if n < 256:
            return np.fromiter((self.encode_leaf(int(p), pgsize, lvl, prot) for p in phys), dtype=np.uint64,
                               count=n)
        template = self.encode_leaf(0, pgsize, lvl, prot)
        out = np.full(n, template, dtype=np.uint64)
        for k in range(pgsize.bit_length() - 1, int(phys.max()).bit_length()):
            pattern = self.encode_leaf(1 << k, pgsize, lvl, prot) & ~template
            if pattern:
                out |= np.where(phys & np.uint64(1 << k), np.uint64(pattern), np.uint64(0))
        sample = np.random.default_rng(0).integers(0, n, 32)
        if any(int(out[i]) != self.encode_leaf(int(phys[i]), pgsize, lvl, prot) for i in sample.tolist()):
            return np.fromiter((self.encode_leaf(int(p), pgsize, lvl, prot) for p in phys), dtype=np.uint64,
                               count=n)
        return out

    def leaf_placement(self, pgsize: int) -> tuple[int, int]:
        """(level index, number of identical entries) the kernel writes for one page of pgsize."""
        for i, lvl in enumerate(self.levels):
            if lvl.block == pgsize:
                return i, 1
        for i, lvl in enumerate(self.levels):
            if pgsize > lvl.block and pgsize < lvl.span and pgsize % lvl.block == 0:
                return i, pgsize // lvl.block
        raise ValueError(f"{self.name}: page size {pgsize:#x} has no level")

    def invalidate(self, raw: int, lvl: Level) -> int:
        """The value an unmapped leaf entry is left with (0 for most; rockchip keeps the address)."""
        return 0

    def table_fill(self, lvl: Level) -> int:
        """The value every entry of a table at `lvl` holds when the kernel allocates it (0 for
        most; s390 fills region/segment tables with ZPCI_TABLE_INVALID and page tables with
        ZPCI_PTE_INVALID, since 0 is a valid entry there). The builder writes it."""
        return 0

    def encode_leaves(self, phys: int, pgsize: int, lvl: Level, prot: int, n: int) -> list[int]:
        """The `n` descriptors one page of `pgsize` is written as (see leaf_placement). Default:
        `n` identical copies; a format whose map steps the address per entry (rockchip writes
        pgsize/4K PTEs of consecutive pages) overrides it."""
        return [self.encode_leaf(phys, pgsize, lvl, prot)] * n

    def init_tables(self, mem: Any, roots: Sequence[int], alloc: Any) -> None:
        """Called by the builder after it allocated fresh root tables (zeroed), with
        `alloc(size, align) -> phys`: a format whose domain init writes more than zeros
        (exynos fills its L1 table with ZERO_LV2LINK) does it here."""

    def bind(self, mem: Any, roots: Sequence[int]) -> None:
        """Called when a Walker binds this format to memory and roots: a format whose decoding
        depends on a domain-wide value only the tables show (exynos ZERO_LV2LINK) learns it
        here. Must not raise on unreadable memory (the walk reports that)."""

    def grow_top(self, mem: Any, roots: Sequence[int], alloc: Any, iova: int, size: int,
                 pgsize: int) -> list[int] | None:
        """Called by the builder before it maps [iova, iova+size) starting with `pgsize` pages: a
        format whose top table grows on demand (generic_pt PT_FEAT_DYNAMIC_TOP, increase_top)
        allocates the new top tables with `alloc(size, align)`, updates its own levels and
        returns the new roots; None when nothing changed (every other format)."""
        return None

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        """Raise ValueError when the kernel's map would refuse this mapping."""
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            raise ValueError("prot needs r or w (the kernel's map refuses neither)")
        if phys >> self.oas:
            raise ValueError(f"phys {phys:#x}+{size:#x} is beyond oas ({self.oas} bits)")

    # -- table-less formats ---------------------------------------------------------------------
    def tableless_walker(self, mappings: list[tuple[int, int, int, int]]) -> Any:
        """For formats with has_tables False (virtio, fsl-pamu): an object with the Walker
        interface (translate, leaves, iter_leaves, unmap_leaf, top_for, entries_read) over the
        domain's mappings [(iova, phys, size, prot)] or the format's own window."""
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------
    @property
    def pgsize_bitmap(self) -> int:
        bm = 0
        for s in self.page_sizes:
            bm |= s
        return bm

    @property
    def dtype(self) -> np.dtype:
        kind = {1: "u1", 2: "u2", 4: "u4", 8: "u8"}[self.entry_size]
        return np.dtype(("<" if self.byteorder == "little" else ">") + kind)

    def in_windows(self, iova: int) -> bool:
        return any(s <= iova < e for s, e in self.windows)



# ---------------------------------------------------------------------------------------------
# Declarative descriptor fields on top of construct.


class Descriptor:
    """A named descriptor layout: (field, hi, lo) bit ranges of an N-bit word, MSB first,
    as the kernel's GENMASK/BIT macros give them. Backed by a construct BitStruct, so
    `decode`/`encode` go through construct and gaps become padding."""

    def __init__(self, name: str, width: int, *fields: tuple[str, int, int]) -> None:
        self.name = name
        self.width = width
        self.fields = sorted(fields, key=lambda f: -f[1])
        pos = width - 1
        for fname, hi, lo in self.fields:
            if hi > pos or lo > hi:
                raise ValueError(f"{name}: field {fname} [{hi}:{lo}] overlaps or is reversed")
            pos = lo - 1
        self._struct: Any = None

    @property
    def struct(self) -> Any:
        """The construct BitStruct, built on first use (construct is only imported by explain,
        check and the tests, not by a plain translate)."""
        if self._struct is None:
            import construct as cs

            parts: list[Any] = []
            pos = self.width - 1
            for fname, hi, lo in self.fields:
                if hi < pos:
                    parts.append(cs.Padding(pos - hi))
                parts.append(fname / (cs.Flag if hi == lo else cs.BitsInteger(hi - lo + 1)))
                pos = lo - 1
            if pos >= 0:
                parts.append(cs.Padding(pos + 1))
            self._struct = cs.BitStruct(*parts)
        return self._struct

    def decode(self, raw: int) -> dict[str, Any]:
        parsed = self.struct.parse((raw & ((1 << self.width) - 1)).to_bytes(self.width // 8, "big"))
        return {k: (bool(v) if isinstance(v, bool) else int(v)) for k, v in parsed.items() if not k.startswith("_")}

    def encode(self, **values: int) -> int:
        """The descriptor with these field values (others 0). Plain shifts: the encoder runs on
        the map path, so it does not pay for construct; `build` is the construct route and the
        tests hold the two equal."""
        raw = 0
        for name, hi, lo in self.fields:
            v = int(values.pop(name, 0))
            width = hi - lo + 1
            if v >> width:
                raise ValueError(f"{self.name}.{name}: {v:#x} does not fit in {width} bits")
            raw |= v << lo
        if values:
            raise KeyError(f"{self.name}: no field {next(iter(values))}")
        return raw

    def build(self, **values: int) -> int:
        """encode() through the construct BitStruct."""
        full: dict[str, Any] = {f[0]: 0 for f in self.fields}
        full.update(values)
        for f in self.fields:
            if f[1] == f[2]:
                full[f[0]] = bool(full[f[0]])
        return int.from_bytes(self.struct.build(full), "big")

    def mask(self, fname: str) -> int:
        for n, hi, lo in self.fields:
            if n == fname:
                return ((1 << (hi - lo + 1)) - 1) << lo
        raise KeyError(fname)

    def defined_mask(self) -> int:
        m = 0
        for _, hi, lo in self.fields:
            m |= ((1 << (hi - lo + 1)) - 1) << lo
        return m


def iter_bits(value: int) -> Iterator[int]:
    while value:
        low = value & -value
        yield low
        value ^= low
