"""Domain files (YAML, SPEC section 3) -> Domain: a configured format, its memory and roots.

Validation reports the first problem with its YAML path (`config.granule: ...`), as a UserError
naming the file. With `mappings:` and no root the tables are built by the format's encoder.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from formats import UnknownFormat, get_format
from formats import driver as driver_entry
from formats.base import PHYS_ADDR_MAX, ConfigError, LeafBatch, PageTable, Translation, WalkError, parse_prot
from formats.builder import Arena, Builder
from formats.walker import Walker

from .errors import UserError
from .memory import MemoryConfigError, MemoryFault, PhysMem, load_elf
from .numbers import parse_number

TOP_KEYS = {"format", "driver", "config", "root", "roots", "ttbr", "memory", "mappings", "description",
            "tables_at"}
DEFAULT_TABLES_AT = 0x4000_0000
MAX_YAML_BYTES = 16 << 20
MAX_LEAVES = 1 << 25  # bounds the work a mappings: list can ask for (32 M leaves, 256 MiB of tables)


@dataclass
class Mapping:
    """One `mappings:` item. A scattered one keeps its per-page physical addresses as a numpy
    array (`pages`, each `page` bytes) so 16 M pages are one object, not 16 M."""

    iova: int
    phys: int
    size: int
    prot: int
    pages: Any = None
    page: int = 0

    def pieces(self) -> Iterator[tuple[int, int, int, int]]:
        """(iova, phys, size, prot) of each physically contiguous piece."""
        if self.pages is None:
            yield (self.iova, self.phys, self.size, self.prot)
            return
        for i, p in enumerate(self.pages if isinstance(self.pages, list) else self.pages.tolist()):
            yield (self.iova + i * self.page, p, self.page, self.prot)


SMALL_SCATTER = 1 << 12  # per-page Builder.map costs ~35 us: beyond this the numpy path (map_scattered) wins


def scatter_pages(n: int, seed: int, base: int, page: int) -> Any:
    """Physical page of each of n IOVA pages: slot (a*i + b) mod n of a region twice the size,
    every other slot used, so no two pages are physically adjacent and neighbours in IOVA land
    far apart. An affine permutation is cheap in plain Python (small mappings, no numpy import)
    and in numpy (16 M pages), and both give the same pages for the same seed."""
    a = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % max(n, 1) | 1
    while math.gcd(a, n) != 1:
        a += 2
    b = (seed * 0x5851F42D4C957F2D + 1) % max(n, 1)
    if n <= SMALL_SCATTER:
        return [base + 2 * page * ((a * i + b) % n) for i in range(n)]
    import numpy as np

    i = np.arange(n, dtype=np.uint64)
    # (a*i + b) mod n without overflow: a and i are below n < 2^32
    order = (np.uint64(a) * i + np.uint64(b)) % np.uint64(n)
    return np.uint64(base) + order * np.uint64(2 * page)


def leaf_count(fmt: PageTable, m: Mapping) -> int:
    """Leaves the kernel's split gives a mapping (scattered: one per page at least)."""
    from formats.builder import iommu_pgsize

    if m.pages is not None or not fmt.has_tables or not fmt.page_sizes:
        return m.size // max(m.page, 1) if m.pages is not None else 1
    iova, phys, size, n = m.iova, m.phys, m.size, 0
    while size:
        try:
            pgsize, count = iommu_pgsize(fmt.pgsize_bitmap, iova, phys, size)
        except ValueError:
            return n + 1  # the builder reports the misalignment
        try:  # a contiguous page (v7s/omap/exynos 64K, NAPOT, NL=7) is several entries
            n += count * max(fmt.leaf_placement(pgsize)[1], 1)
        except ValueError:
            n += count
        iova, phys, size = iova + pgsize * count, phys + pgsize * count, size - pgsize * count
    return n


def pieces(mappings: list[Mapping]) -> list[tuple[int, int, int, int]]:
    return [p for m in mappings for p in m.pieces()]


@dataclass
class Domain:
    """One IOMMU address space: format, memory, roots, and the shared walker over them."""

    name: str
    fmt: PageTable
    mem: PhysMem
    roots: list[int]
    walker: Walker
    description: str = ""
    mappings: list[Mapping] = field(default_factory=list)
    arena: Arena | None = None  # tables built from mappings
    chunks: list[tuple[int, int, int, int]] = field(default_factory=list)  # (iova, phys, pgsize, count)
    source: Path | None = None

    @property
    def windows(self) -> list[tuple[int, int]]:
        return self.fmt.windows

    def translate(self, iova: int) -> Translation:
        try:
            return self.walker.translate(iova)
        except WalkError as e:
            raise UserError(f"{self.name}: walking iova {iova:#x}: {e}") from None

    def iova_to_phys_length(self, iova: int) -> tuple[int, int]:
        t = self.translate(iova)
        return (t.phys, t.size) if t.mapped else (PHYS_ADDR_MAX, 0)

    def iova_to_phys(self, iova: int) -> int:
        """The legacy op, as this format's driver returns it (0 on a miss for most)."""
        return self.fmt.legacy_iova_to_phys(iova, self.translate(iova))

    def leaves(self, start: int, end: int) -> Iterator[LeafBatch]:
        try:
            yield from self.walker.leaves(start, end)
        except WalkError as e:
            raise UserError(f"{self.name}: {e}") from None

    def copy(self) -> Domain:
        """A private writable copy of the tables (the image file is never written)."""
        mem = self.mem.copy()
        if self.fmt.has_tables:
            walker = Walker(self.fmt, mem, self.roots)
        else:
            walker = self.fmt.tableless_walker(pieces(self.mappings))
        return Domain(self.name, self.fmt, mem, list(self.roots), walker, self.description,
                      list(self.mappings), None, list(self.chunks), self.source)


# ---------------------------------------------------------------------------------------------


EXAMPLES = Path(__file__).parent / "examples"  # plain package files (importlib.resources costs 17 ms)


def example_names() -> list[str]:
    return sorted(p.name[:-5] for p in EXAMPLES.iterdir() if p.name.endswith(".yaml"))


def load_domain(spec: str | Path) -> Domain:
    """A domain from a YAML file path or `example:NAME`."""
    text_spec = str(spec)
    if text_spec.startswith("example:"):
        name = text_spec[len("example:"):]
        p = EXAMPLES / f"{name}.yaml"
        if "/" in name or not p.is_file():
            raise UserError(f"no bundled example {name!r} (iommuctl examples lists them: "
                            f"{', '.join(example_names())})")
        return load_domain_text(p.read_text(), p.parent, text_spec)
    path = Path(spec)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"{path}: {path.stat().st_size} bytes is too large for a domain file")
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a YAML text file (binary content)") from None
    if "\x00" in text:
        raise UserError(f"{path}: not a YAML text file (binary content)")
    return load_domain_text(text, path.parent, str(path))


SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's: a fifth of the pure-Python parse
MAX_FLOW_DEPTH = 64  # PyYAML's scanner is quadratic in flow nesting: 2,000 `[` take seconds


def flow_depth(text: str) -> int:
    """Deepest nesting of flow collections ([...] / {...}) outside quoted strings: checked
    before parsing, so a hostile file is refused in linear time."""
    if text.count("[") + text.count("{") <= MAX_FLOW_DEPTH:
        return 0
    import re

    bare = re.sub(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\n]|\'\')*\'', "", text)
    depth = deepest = 0
    for m in re.finditer(r"[\[\]{}]", bare):
        depth = depth + 1 if m.group() in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


def load_domain_text(text: str, base_dir: Path | str = ".", name: str = "<domain>") -> Domain:
    if flow_depth(text) > MAX_FLOW_DEPTH:
        raise UserError(f"{name}: YAML nested too deeply (more than {MAX_FLOW_DEPTH} levels of [ ] or {{ }})")
    try:
        doc = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{name}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise UserError(f"{name}: YAML nested too deeply") from None
    return Loader(name, Path(base_dir)).load(doc)


class Loader:
    def __init__(self, name: str, base_dir: Path) -> None:
        self.name = name
        self.base_dir = base_dir

    def err(self, path: str, message: str) -> UserError:
        return UserError(f"{self.name}: {path}: {message}" if path else f"{self.name}: {message}")

    def num(self, value: Any, path: str) -> int:
        try:
            n = parse_number(value)
        except ValueError as e:
            raise self.err(path, str(e)) from None
        if n < 0:
            raise self.err(path, f"{n} is negative")
        if n >= 1 << 64:
            raise self.err(path, f"{n:#x} does not fit in 64 bits")
        return n

    # -- the document ------------------------------------------------------------------------
    def load(self, doc: Any) -> Domain:
        if not isinstance(doc, dict):
            raise self.err("", "a domain file is a YAML mapping with a `format:` or `driver:` key")
        for key in doc:
            if key not in TOP_KEYS:
                raise self.err(str(key), f"unknown key (known: {', '.join(sorted(TOP_KEYS))})")
        fmt_cls, driver_cfg = self.pick_format(doc)
        fmt = self.configure(fmt_cls, driver_cfg, doc.get("config"))
        description = doc.get("description", "")
        if not isinstance(description, str):
            raise self.err("description", "must be text")
        mem = self.memory(doc.get("memory"))
        mappings = self.mappings(doc.get("mappings"), fmt)
        given = [k for k in ("root", "roots", "ttbr") if k in doc]
        if len(given) > 1:
            raise self.err(given[1], f"give only one of root, roots, ttbr (also has {given[0]})")
        dom = Domain(self.name, fmt, mem, [], Walker(fmt, mem, []), description, mappings)
        if not fmt.has_tables:
            if given:
                raise self.err(given[0], f"{fmt.name} has no page table; describe it by `mappings:`")
            dom.walker = self.tableless(fmt, mappings)
            return dom
        if given:
            if mappings:
                raise self.err("mappings", "a domain with a root takes its mappings from the tables; "
                                           "drop `mappings:` or the root")
            dom.roots = self.roots(doc, given[0], fmt)
            for r in dom.roots:
                if not mem.contains(r, fmt.entry_size):
                    raise self.err(given[0], f"root table {r:#x} is outside memory")
        elif mappings:
            at = self.num(doc.get("tables_at", DEFAULT_TABLES_AT), "tables_at")
            self.build(dom, at)
        else:
            raise self.err("", "needs a root (`root:`, `roots:` or `ttbr:`) or `mappings:`")
        try:
            dom.walker = Walker(fmt, mem, dom.roots)
        except (ValueError, WalkError) as e:
            raise self.err(given[0] if given else "mappings", str(e)) from None
        return dom

    def pick_format(self, doc: dict[str, Any]) -> tuple[type[PageTable], dict[str, Any]]:
        if "format" in doc and "driver" in doc:
            raise self.err("driver", "give either format or driver, not both")
        if "driver" in doc:
            did = doc["driver"]
            if not isinstance(did, str):
                raise self.err("driver", "must be a driver id")
            d = driver_entry(did)
            if d is None:
                raise self.err("driver", f"unknown driver {did!r} (iommuctl formats --drivers lists them)")
            return get_format(d["format"]), dict(d.get("config", {}))
        fid = doc.get("format")
        if not isinstance(fid, str):
            raise self.err("format", "missing: a format id from `iommuctl formats` (or `driver:`)")
        try:
            return get_format(fid), {}
        except UnknownFormat:
            from formats import FORMATS

            raise self.err("format", f"unknown format {fid!r} (known: {', '.join(FORMATS)})") from None
        except (ImportError, AttributeError) as e:
            raise self.err("format", f"format {fid!r} is not available in this build ({e})") from None

    def configure(self, cls: type[PageTable], driver_cfg: dict[str, Any], user: Any) -> PageTable:
        if user is None:
            user = {}
        if not isinstance(user, dict):
            raise self.err("config", "must be a mapping of config keys")
        defaults = cls.config_defaults
        cfg: dict[str, Any] = dict(defaults)
        cfg.update(driver_cfg)
        for key, value in user.items():
            if key not in defaults:
                known = ", ".join(defaults) or "none"
                raise self.err(f"config.{key}", f"unknown key for {cls.name} (known: {known})")
            cfg[key] = value
        for key, value in list(cfg.items()):
            cfg[key] = self.config_value(value, defaults.get(key), f"config.{key}")
        try:
            return cls(cfg)
        except ConfigError as e:
            raise self.err(f"config.{e.key}" if e.key else "config", str(e)) from None
        except (ValueError, TypeError) as e:
            raise self.err("config", str(e)) from None

    def config_value(self, value: Any, default: Any, path: str) -> Any:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise self.err(path, f"{value!r} is not true/false")
            return value
        if isinstance(default, int) or (default is None and isinstance(value, int)):
            return self.num(value, path)
        if isinstance(default, list | tuple):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list | tuple):
                raise self.err(path, f"{value!r} is not a list")
            out = []
            for i, v in enumerate(value):
                if isinstance(v, dict | list):
                    raise self.err(f"{path}[{i}]", f"{v!r} is not a name or number")
                out.append(v.strip().lower() if isinstance(v, str) else v)
            return out
        if isinstance(default, str):
            if isinstance(value, int | float) and not isinstance(value, bool):
                return str(value)
            if not isinstance(value, str):
                raise self.err(path, f"{value!r} is not text")
        if isinstance(value, dict):
            raise self.err(path, f"{value!r} is not a value")
        return value

    # -- memory ----------------------------------------------------------------------------------
    def memory(self, entries: Any) -> PhysMem:
        mem = PhysMem()
        if entries is None:
            return mem
        if not isinstance(entries, list):
            raise self.err("memory", "must be a list of segments (file:, elf:, hex:, zero:)")
        for i, ent in enumerate(entries):
            path = f"memory[{i}]"
            if not isinstance(ent, dict):
                raise self.err(path, "must be a mapping with file:, elf:, hex: or zero:")
            try:
                self.segment(mem, ent, path)
            except MemoryConfigError as e:
                raise self.err(path, str(e)) from None
        return mem

    def segment(self, mem: PhysMem, ent: dict[str, Any], path: str) -> None:
        kinds = [k for k in ("file", "elf", "hex", "zero") if k in ent]
        if len(kinds) != 1:
            raise self.err(path, "needs exactly one of file:, elf:, hex:, zero:")
        kind = kinds[0]
        allowed = {"file": {"file", "base", "offset", "length"}, "elf": {"elf"}, "hex": {"hex"},
                   "zero": {"zero"}}[kind]
        for k in ent:
            if k not in allowed:
                raise self.err(f"{path}.{k}", f"unknown key for a {kind}: segment")
        if kind in ("file", "elf"):
            fname = ent[kind]
            if not isinstance(fname, str) or not fname or "\x00" in fname:
                raise self.err(f"{path}.{kind}", "must be a file name")
            fpath = self.base_dir / fname
            if kind == "elf":
                load_elf(mem, fpath, origin=str(fpath))
                return
            if "base" not in ent:
                raise self.err(f"{path}.base", "missing: the physical address of the file's first byte")
            base = self.num(ent["base"], f"{path}.base")
            offset = self.num(ent.get("offset", 0), f"{path}.offset")
            length = self.num(ent["length"], f"{path}.length") if "length" in ent else None
            mem.add_file(fpath, base, offset, length, origin=str(fpath))
        elif kind == "hex":
            blob = ent["hex"]
            if not isinstance(blob, dict):
                raise self.err(f"{path}.hex", "must map addresses to hex byte strings")
            for addr, data in blob.items():
                a = self.num(addr, f"{path}.hex")
                if not isinstance(data, str):
                    raise self.err(f"{path}.hex.{addr}", "must be a string of hex bytes")
                try:
                    raw = bytes.fromhex(data.replace("_", " "))
                except ValueError:
                    raise self.err(f"{path}.hex.{addr}", f"{data!r} is not hex bytes") from None
                mem.add_bytes(a, raw, origin=f"{path}.hex")
        else:
            z = ent["zero"]
            if not isinstance(z, dict) or set(z) - {"base", "length"} or "base" not in z or "length" not in z:
                raise self.err(f"{path}.zero", "must be {base: ..., length: ...}")
            mem.add_zero(self.num(z["base"], f"{path}.zero.base"), self.num(z["length"], f"{path}.zero.length"),
                         origin=f"{path}.zero")

    # -- roots -----------------------------------------------------------------------------------
    def roots(self, doc: dict[str, Any], key: str, fmt: PageTable) -> list[int]:
        value = doc[key]
        if key == "roots":
            if not isinstance(value, list) or not value:
                raise self.err("roots", "must be a non-empty list of table addresses")
            if len(value) > fmt.max_roots:
                raise self.err("roots", f"{fmt.name} takes at most {fmt.max_roots} root(s)")
            return [self.num(v, f"roots[{i}]") for i, v in enumerate(value)]
        n = self.num(value, key)
        if key == "root":
            return [n]
        if fmt.root_register is None:
            raise self.err("ttbr", f"{fmt.name} has no root register; give root:")
        try:
            return fmt.root_from_register(n)
        except (ValueError, ConfigError) as e:
            raise self.err("ttbr", str(e)) from None

    # -- mappings --------------------------------------------------------------------------------
    def mappings(self, items: Any, fmt: PageTable) -> list[Mapping]:
        if items is None:
            return []
        if not isinstance(items, list):
            raise self.err("mappings", "must be a list of {iova, phys, size, prot}")
        out: list[Mapping] = []
        pages = 0
        for i, m in enumerate(items):
            path = f"mappings[{i}]"
            if not isinstance(m, dict):
                raise self.err(path, "must be a mapping {iova, phys, size, prot}")
            for k in m:
                if k not in ("iova", "phys", "size", "prot"):
                    raise self.err(f"{path}.{k}", "unknown key (iova, phys, size, prot)")
            for k in ("iova", "phys", "size"):
                if k not in m:
                    raise self.err(f"{path}.{k}", "missing")
            iova = self.num(m["iova"], f"{path}.iova")
            size = self.num(m["size"], f"{path}.size")
            if size == 0:
                raise self.err(f"{path}.size", "must be positive")
            try:
                prot = parse_prot(m.get("prot", "rw"))
            except ValueError as e:
                raise self.err(f"{path}.prot", str(e)) from None
            # the space first: a scattered mapping's page list is built next, and 64G of 4K pages
            # is 16 M addresses to learn the mapping never fitted
            if not any(lo <= iova and iova + size <= hi for lo, hi in fmt.windows):
                raise self.err(path, f"iova range {iova:#x}+{size:#x} is outside the input address space")
            phys = m["phys"]
            if isinstance(phys, dict):
                out.append(self.scatter(phys, iova, size, prot, f"{path}.phys", MAX_LEAVES - pages))
            else:
                out.append(Mapping(iova, self.num(phys, f"{path}.phys"), size, prot))
            pages += leaf_count(fmt, out[-1])
            if pages > MAX_LEAVES:
                raise self.err(path, f"the mappings need more than {MAX_LEAVES} leaf entries")
        return out

    def scatter(self, spec: dict[str, Any], iova: int, size: int, prot: int, path: str,
                room: int = MAX_LEAVES) -> Mapping:
        for k in spec:
            if k not in ("scatter", "seed", "base"):
                raise self.err(f"{path}.{k}", "unknown key (scatter, seed, base)")
        if "scatter" not in spec:
            raise self.err(path, "needs scatter: PAGE (or a plain physical address)")
        page = self.num(spec["scatter"], f"{path}.scatter")
        seed = self.num(spec.get("seed", 0), f"{path}.seed")
        base = self.num(spec.get("base", 0), f"{path}.base")
        if page == 0 or page & (page - 1):
            raise self.err(f"{path}.scatter", f"{page:#x} is not a power of two")
        if size % page:
            raise self.err(f"{path}.scatter", f"size {size:#x} is not a multiple of {page:#x}")
        n = size // page
        if n > room:  # before the page array is built: 1T of 4K pages is 2 GiB of addresses
            raise self.err(path, f"{n} scattered pages is more than the {room} leaf entries left of {MAX_LEAVES}"
                           if room < MAX_LEAVES else f"{n} scattered pages is more than {MAX_LEAVES} leaf entries")
        if base + 2 * n * page > 1 << 64:
            raise self.err(f"{path}.base", "the scattered pages pass 2^64")
        pages = scatter_pages(n, seed, base, page)
        return Mapping(iova, int(pages[0]), size, prot, pages, page)

    # -- building --------------------------------------------------------------------------------
    def build(self, dom: Domain, tables_at: int) -> None:
        arena = Arena(dom.mem, tables_at)
        try:
            builder = Builder(dom.fmt, arena)
        except MemoryConfigError as e:
            raise self.err("tables_at", str(e)) from None
        for i, m in enumerate(dom.mappings):
            try:
                if isinstance(m.pages, list):
                    for k, p in enumerate(m.pages):
                        dom.chunks.extend(builder.map(m.iova + k * m.page, p, m.page, m.prot))
                elif m.pages is not None:
                    builder.map_scattered(m.iova, m.pages, m.page, m.prot)
                else:
                    dom.chunks.extend(builder.map(m.iova, m.phys, m.size, m.prot))
            except (ValueError, WalkError, MemoryFault, MemoryConfigError) as e:
                raise self.err(f"mappings[{i}]", str(e)) from None
        dom.roots = builder.roots
        dom.arena = arena

    def tableless(self, fmt: PageTable, mappings: list[Mapping]) -> Any:
        try:
            return fmt.tableless_walker(pieces(mappings))
        except ValueError as e:
            raise self.err("mappings", str(e)) from None
