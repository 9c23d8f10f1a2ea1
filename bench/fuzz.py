#!/usr/bin/env python3
"""Fuzz corpus: hostile page-table images and domain files through every command.

Cases (deterministic from --seed):
  image   a real table image (kernel conformance vectors, bundled examples built by the encoders)
          with 1-4 mutations: bit flips in live descriptors, junk and all-ones entries, tables
          pointing at themselves / the root / another table / far outside memory, zeroed
          tables, truncated images, random roots; then one command on it.
  yaml    a domain file for every format id with wrong types, missing keys, huge numbers,
          unknown keys, deep nesting, alias bombs, binary junk; then one command on it.

Each case runs in a forked child (the modules are imported once, before forking), with its own
stdout/stderr files, a wall-clock limit (killed past it: a hang) and an address-space limit.
A case fails when its exit status is not 0, 1 or 2, or its stderr shows a traceback or the
CLI's "internal error" line (an exception the CLI did not expect), or it hangs. Failures are
saved with their files and argv under --out for reproduction.

Prints: cases, tracebacks, hangs, the slowest case, the peak RSS (children's ru_maxrss).
Run: python bench/fuzz.py [--cases 2400] [--jobs 4] [--seed 1] [--timeout 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

import formats  # noqa: E402
from formats.base import U64  # noqa: E402

U32 = (1 << 32) - 1
SLOW_LIMIT_S = 5.0
RSS_LIMIT_MIB = 500


# ---------------------------------------------------------------------------------------------
# bases: clean images to mutate


@dataclass
class Base:
    """A clean domain: its format and config, roots, one image segment, and what lives in it."""

    name: str
    fmt_id: str
    config: dict[str, Any]
    roots: list[int]
    image: bytes
    base: int
    entries: list[tuple[int, int, int, int]]  # live entries: (address, table, level index, raw)
    tables: list[tuple[int, int]]  # (table address, level index)
    iovas: list[int]  # mapped IOVAs
    pas: list[int]  # mapped physical addresses
    windows: list[tuple[int, int]]

    def fmt(self) -> Any:
        return formats.get_format(self.fmt_id)(dict(self.config))


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _base_from_domain(name: str, dom: Any, image: bytes, base: int, limit: int = 4096) -> Base:
    from formats.walker import TableVisit

    entries: list[tuple[int, int, int, int]] = []
    tables: list[tuple[int, int]] = []
    lo = min(s for s, _ in dom.windows)
    hi = max(e for _, e in dom.windows)
    for ev in dom.walker.visit_tables(lo, hi):
        if not isinstance(ev, TableVisit):
            continue
        tables.append((ev.table, ev.level_index))
        ents = ev.entries
        for i in ents.nonzero()[0].tolist()[:512]:
            entries.append((ev.table + i * dom.fmt.entry_size, ev.table, ev.level_index, int(ents[i])))
            if len(entries) >= limit:
                break
    iovas, pas = [], []
    for b in dom.walker.leaves(lo, hi):
        iovas += b.iova[:4].tolist()
        pas += b.phys[:2].tolist()
        if len(iovas) > 64:
            break
    return Base(name, dom.fmt.name, _plain(dict(dom.fmt.config)), list(dom.roots), image, base, entries, tables,
                iovas, pas, list(dom.windows))


def make_bases(per_format: int = 3) -> list[Base]:
    """Bundled examples (built tables) and a few kernel conformance images per format
    (per_format 1: the examples only)."""
    from iommuctl.domain import example_names, load_domain

    out: list[Base] = []
    for name in example_names():
        dom = load_domain(f"example:{name}")
        if not dom.fmt.has_tables or dom.arena is None:
            continue
        out.append(_base_from_domain(f"example:{name}", dom, dom.arena.image(), dom.arena.base))
    if per_format <= 1:
        return out
    conf = ROOT / "fixtures" / "conformance"
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_conformance import available, domain_for
    except ImportError:
        return out
    taken: Counter[str] = Counter()
    for c in sorted(p for p in conf.iterdir() if (p / "case.json").exists()):
        case = json.loads((c / "case.json").read_text())
        if not available(case):
            continue
        try:
            dom = domain_for(case, c / "image.bin", "root")
        except Exception:  # noqa: BLE001 - a format that cannot load a case is not ours to judge here
            continue
        if taken[dom.fmt.name] >= per_format - 1:
            continue
        taken[dom.fmt.name] += 1
        out.append(_base_from_domain(f"conformance:{c.name}", dom, (c / "image.bin").read_bytes(),
                                     case["image_base"]))
    return out


# ---------------------------------------------------------------------------------------------
# cases


@dataclass
class Case:
    id: int
    kind: str  # image | yaml
    desc: str
    argv: list[str]
    files: dict[str, bytes] = field(default_factory=dict)
    stdin: bytes = b""


def domain_text(fmt_id: str, config: dict[str, Any], roots: list[int], image_base: int,
                ttbr: int | None = None, extra_memory: list[dict[str, Any]] | None = None) -> str:
    doc: dict[str, Any] = {"format": fmt_id, "config": config}
    if ttbr is not None:
        doc["ttbr"] = f"{ttbr:#x}"
    elif len(roots) == 1:
        doc["root"] = f"{roots[0]:#x}"
    else:
        doc["roots"] = [f"{r:#x}" for r in roots]
    doc["memory"] = [{"file": "image.bin", "base": f"{image_base:#x}"}] + (extra_memory or [])
    return yaml.safe_dump(doc, sort_keys=False)


def hostile_doc(rng: random.Random, b: Base, roots: list[int], image_len: int) -> tuple[str, str]:
    """The domain file around a (mutated) image, itself sometimes hostile: the image read as
    another format (format confusion), a junk root register value, or a sea of zero memory
    around the image that far pointers land in. Returns (yaml text, what was done)."""
    r = rng.random()
    if r < 0.15:
        # another table format (defaults) over the same bytes and root
        others = [f for f in formats.available() if f != b.fmt_id and formats.get_format(f).has_tables]
        fid = rng.choice(others)
        cls = formats.get_format(fid)
        return domain_text(fid, {}, roots[:cls.max_roots], b.base), f"read as {fid}"
    if r < 0.3:
        cls = formats.get_format(b.fmt_id)
        if cls.root_register is not None:
            reg = rng.choice([roots[0] | rng.getrandbits(12), rng.getrandbits(64), rng.getrandbits(32),
                              roots[0] >> 12, roots[0] | (1 << 63), 0])
            return domain_text(b.fmt_id, b.config, roots, b.base, ttbr=reg), f"ttbr {reg:#x}"
    if r < 0.45:
        end = b.base + image_len
        sea = [{"zero": {"base": f"{end:#x}", "length": rng.choice(["1G", "1T", "4K", "64M"])}}]
        if b.base >= 1 << 30:
            sea.append({"zero": {"base": f"{b.base - (1 << 30):#x}", "length": "1G"}})
        return domain_text(b.fmt_id, b.config, roots, b.base, extra_memory=sea), "zero sea"
    return domain_text(b.fmt_id, b.config, roots, b.base), ""


def _rand_value(rng: random.Random, bits: int) -> int:
    return rng.choice([rng.getrandbits(bits), (1 << bits) - 1, 1 << rng.randrange(bits), rng.getrandbits(bits) | 3,
                       rng.getrandbits(bits) & ~3, rng.getrandbits(bits) | 1, rng.getrandbits(bits) | 2])


def mutate_image(rng: random.Random, b: Base) -> tuple[bytearray, list[int], list[str]]:
    """1-4 mutations of a base image; returns (image, roots, what was done)."""
    fmt = b.fmt()
    es = fmt.entry_size
    bits = es * 8
    img = bytearray(b.image)
    roots = list(b.roots)
    done: list[str] = []

    def put(addr: int, value: int) -> None:
        off = addr - b.base
        if 0 <= off and off + es <= len(img):
            img[off:off + es] = (value & ((1 << bits) - 1)).to_bytes(es, fmt.byteorder)

    def enc_table(addr: int, li: int) -> int:
        try:
            return int(fmt.encode_table(addr, fmt.levels[li])) if li < len(fmt.levels) else addr | 3
        except Exception:  # noqa: BLE001 - encoders may refuse addresses they cannot hold
            return addr | 1

    ops = ["flip", "flip", "junk", "ones", "self", "root", "share", "far", "zero-table", "truncate", "rand-root",
           "replicate", "table-to-leaf-level"]
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(ops)
        if not b.entries:
            op = rng.choice(["truncate", "rand-root"])
        e_addr, e_table, e_li, e_raw = rng.choice(b.entries) if b.entries else (b.base, b.base, 0, 0)
        if op == "flip":
            for _ in range(rng.randint(1, 3)):
                e_raw ^= 1 << rng.randrange(bits)
            put(e_addr, e_raw)
        elif op == "junk":
            put(e_addr, _rand_value(rng, bits))
        elif op == "ones":
            put(e_addr, (1 << bits) - 1)
        elif op == "self":
            put(e_addr, enc_table(e_table, e_li))
        elif op == "root":
            put(e_addr, enc_table(roots[0], e_li))
        elif op == "share":
            other = rng.choice(b.entries)
            put(e_addr, other[3])
        elif op == "far":
            far = rng.choice([1 << (fmt.oas - 1) if fmt.oas < 64 else 1 << 63, b.base + len(img) + 0x10000,
                              rng.getrandbits(min(fmt.oas, 64)) & ~0xFFF, 0])
            put(e_addr, enc_table(far, e_li))
        elif op == "zero-table":
            t, li = rng.choice(b.tables)
            n = fmt.levels[li].entries * es
            off = t - b.base
            if 0 <= off < len(img):
                img[off:off + n] = bytes(min(n, len(img) - off))
        elif op == "truncate":
            img = img[:rng.randrange(max(1, len(img)))]
        elif op == "rand-root":
            i = rng.randrange(len(roots))
            roots[i] = rng.choice([b.base + rng.randrange(max(1, len(img))), b.base + len(img) - es,
                                   roots[i] + rng.choice([1, es, 0x400, 0x1000]), rng.getrandbits(64),
                                   b.base + len(img), 0])
        elif op == "replicate":
            # copy one live entry over the next 1..32 slots (replica groups that disagree or overlap)
            for k in range(1, rng.randint(2, 32)):
                put(e_addr + k * es, e_raw + (k if rng.random() < 0.3 else 0))
        elif op == "table-to-leaf-level":
            # a table pointer written where the last level is
            last = [x for x in b.entries if x[2] == len(fmt.levels) - 1]
            if last:
                a, t, li, _ = rng.choice(last)
                put(a, enc_table(t, max(li - 1, 0)))
        done.append(op)
    return img, roots, done


def _iovas(rng: random.Random, b: Base, n: int) -> list[int]:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.5 and b.iovas:
            v = rng.choice(b.iovas) + rng.randrange(0x2000)
        elif r < 0.85:
            s, e = rng.choice(b.windows)
            v = rng.randrange(s, e)
        else:
            v = rng.choice([rng.getrandbits(64), (1 << 64) - 1, max(e for _, e in b.windows), 0])
        out.append(v & U64)
    return out


def _range(rng: random.Random, b: Base) -> str:
    s, e = rng.choice(b.windows)
    r = rng.random()
    if r < 0.3 and b.iovas:
        start = rng.choice(b.iovas) & ~0xFFF
        return f"{start:#x}+{rng.choice(['4K', '2M', '1G', '64M', '1T']) }"
    if r < 0.6:
        a = rng.randrange(s, e)
        return f"{a:#x}:{rng.randrange(a, e) + 1:#x}"
    if r < 0.8:
        return f"{s:#x}:{e:#x}"
    return rng.choice([f"{e:#x}+1", "0:0", "5:3", "junk", f"0+{1 << 70}", f"{s}+{(1 << 64) - 1}", "0x1000:"])


def _stdin_junk(rng: random.Random, text: bytes) -> bytes:
    """IOVA lists as they arrive from other tools: CRLF, blanks, comments, decimal, huge or
    negative numbers, non-UTF-8 bytes, no final newline (bulk.parse_numbers hands these on)."""
    if rng.random() < 0.5:
        return text
    lines = text.split(b"\n")
    for _ in range(rng.randint(1, 4)):
        k = rng.randrange(len(lines))
        lines[k] = rng.choice([b"", b"# comment", lines[k] + b"\r", b"0x" + b"f" * rng.randint(17, 40),
                               b"-1", b"\xff\xfe", str(rng.getrandbits(64)).encode(), b"0X10", b"4K",
                               b"0x", b"x", lines[k] + b" # tail", b"0" * rng.randint(2, 30)])
    return b"\n".join(lines)


def commands(rng: random.Random, b: Base, dom: str, available: set[str]) -> Iterator[tuple[list[str], bytes]]:
    """(argv, stdin) for every command on one domain."""
    yield ["translate", dom, *[f"{v:#x}" for v in _iovas(rng, b, rng.randint(1, 6))],
           *(["--legacy"] if rng.random() < 0.5 else []), *(["--json"] if rng.random() < 0.5 else [])], b""
    many = "\n".join(f"{v:#x}" for v in _iovas(rng, b, rng.choice([300, 2500]))).encode()
    yield ["translate", dom, "-", *(["--json"] if rng.random() < 0.6 else []),  # the numpy batch, parse, rows
           *(["--legacy"] if rng.random() < 0.5 else [])], _stdin_junk(rng, many)
    walk_opts = rng.choice([[], ["--leaves"], ["--holes"], ["--summary"], ["--leaves", "--holes"]])
    rng_opt = ["--range", _range(rng, b)] if rng.random() < 0.6 else []
    yield ["walk", dom, *walk_opts, *rng_opt, *(["--json"] if rng.random() < 0.7 else [])], b""
    yield ["explain", dom, f"{_iovas(rng, b, 1)[0]:#x}", *(["--json"] if rng.random() < 0.5 else [])], b""
    yield ["check", dom, *(["--range", _range(rng, b)] if rng.random() < 0.3 else []),
           *(["--json"] if rng.random() < 0.7 else [])], b""
    if "build" in available:
        yield ["build", dom, "-o", "out.bin", "--yaml", "out.yaml"], b""
    if "unmap-sim" in available:
        yield ["unmap-sim", dom, "--caller", rng.choice(["vfio", "iommufd", "all"]),
               *(["--range", _range(rng, b)] if rng.random() < 0.7 else []), "--json"], b""
    if "diff" in available:
        yield ["diff", "clean.yaml", dom, *(["--json"] if rng.random() < 0.6 else [])], b""
    if "reverse" in available:
        pas = [rng.choice(b.pas) if b.pas and rng.random() < 0.7 else rng.getrandbits(48) for _ in range(3)]
        yield ["reverse", dom, *[f"{p:#x}" for p in pas], "--json"], b""
        if b.pas:  # a physical window around a mapped PA: runs, holes, coverage
            pa = rng.choice(b.pas)
            yield ["reverse", dom, "--range", f"{max(0, pa - rng.choice([0, 0x1000, 0x200000])):#x}+"
                   f"{rng.choice([0x1000, 0x3000, 0x400000, 1 << 30])}", *(["--holes"] if rng.random() < 0.6 else []),
                   *(["--json"] if rng.random() < 0.5 else [])], b""


# -- YAML ---------------------------------------------------------------------------------------


_EXAMPLE_DOCS: list[Any] = []


def base_doc(fid: str) -> dict[str, Any]:
    """A valid-looking domain document for a format id (its bundled example when there is one)."""
    from importlib import resources

    from iommuctl.domain import example_names

    if not _EXAMPLE_DOCS:
        for name in example_names():
            _EXAMPLE_DOCS.append(yaml.safe_load((resources.files("iommuctl.examples") / f"{name}.yaml").read_text()))
    for doc in _EXAMPLE_DOCS:
        if isinstance(doc, dict) and doc.get("format") == fid:
            return doc
    return {"format": fid, "config": {}, "mappings": [{"iova": "0x100000", "phys": "0x80000000", "size": "64K",
                                                       "prot": "rw"}]}


JUNK: list[Any] = [None, True, False, 3.5, -1, 0, [], {}, "", "junk", "0x", "-0x10", "1e400", 2 ** 64, 2 ** 200,
                   -(2 ** 70), "0xffffffffffffffffffff", "99999999T", "4X", "1K" * 30, "\u2603", [1, [2, [3]]],
                   {"a": {"b": 1}}, ".inf", "nan", "0b101", "0o777", "  ", "~", "1_0_0_0", "4096.0"]
HUGE = [2 ** 64 - 1, 2 ** 64, 2 ** 63, 2 ** 100, "16E", "1T", "0xfffffffffffff000", 1 << 52, (1 << 48) - 4096]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        doc = doc[p]
    doc[path[-1]] = value


def _del(doc: Any, path: tuple[Any, ...]) -> None:
    for p in path[:-1]:
        doc = doc[p]
    del doc[path[-1]]


def mutate_yaml(rng: random.Random, fid: str) -> tuple[bytes, str]:
    """A hostile domain file for format `fid`: (bytes, what was done)."""
    import copy

    op = rng.choice(["type", "type", "missing", "huge", "huge", "unknown", "nest", "bomb", "binary", "mappings",
                     "memory", "config", "roots", "format"])
    doc = copy.deepcopy(base_doc(fid))
    paths = list(_paths(doc))
    if op == "type" and paths:
        p = rng.choice(paths)
        _set(doc, p, rng.choice(JUNK))
        what = f"type {p}"
    elif op == "missing" and paths:
        p = rng.choice(paths)
        _del(doc, p)
        what = f"missing {p}"
    elif op == "huge":
        nums = [p for p in paths if p and p[-1] in ("iova", "phys", "size", "root", "base", "length", "offset",
                                                      "scatter", "seed", "ias", "oas", "pa_bits", "tables_at",
                                                      "levels", "vasz", "oasz", "address_bits")]
        p = rng.choice(nums) if nums else ("root",)
        _set(doc, p, rng.choice(HUGE))
        what = f"huge {p}"
    elif op == "unknown":
        target = rng.choice([doc] + [v for v in (doc.get("config"), *(doc.get("mappings") or [])) if
                                     isinstance(v, dict)])
        key: Any = rng.choice(["bogus", "Format", "granule ", 7, "__class__"])  # 7: a non-string key
        target[key] = rng.choice(JUNK)
        what = "unknown key"
    elif op == "nest":
        depth = rng.choice([50, 500, 5000, 100000])
        key = rng.choice(["config", "mappings", "memory", "root", "description"])
        text = yaml.safe_dump({k: v for k, v in doc.items() if k != key}, sort_keys=False)
        opener, closer = rng.choice([("[", "]"), ("{a: ", "}")])
        return (text + f"{key}: " + opener * depth + "1" + closer * depth + "\n").encode(), f"nest {key} {depth}"
    elif op == "bomb":
        lines = ["a: &a [1,1,1,1,1,1,1,1,1]"] + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}" +
                                                    f",*{chr(97 + i)}" * 8 + "]" for i in range(8)]
        key = rng.choice(["mappings", "config", "memory", "roots"])
        text = "\n".join(lines).replace("a: &a", "x_: &a") + "\n"
        doc2 = yaml.safe_dump({k: v for k, v in doc.items() if k != key}, sort_keys=False)
        # the anchors live under an unknown key, so the loader must refuse it without expanding
        return (doc2 + text.replace("\n", "\n", 1) + f"{key}: *i\n").encode(), f"alias bomb in {key}"
    elif op == "binary":
        kind = rng.random()
        if kind < 0.3:
            data = rng.randbytes(rng.randint(1, 4096))
        elif kind < 0.6:
            data = yaml.safe_dump(doc).encode() + rng.randbytes(rng.randint(1, 64))
        elif kind < 0.8:
            data = b"\x7fELF" + rng.randbytes(200)
        else:
            data = yaml.safe_dump(doc).encode().replace(b":", b"\x00", 1)
        return data, "binary junk"
    elif op == "mappings":
        maps = doc.setdefault("mappings", []) if "root" not in doc else doc.setdefault("mappings", [])
        if not isinstance(maps, list):
            maps = doc["mappings"] = []
        m = {"iova": rng.choice([0, "0x1000", 2 ** 40, 2 ** 64 - 4096, "0x7fff_f000"]),
             "phys": rng.choice([0, "0x1000", 2 ** 52, {"scatter": rng.choice(["4K", "2M", 3, 0, "1G"]),
                                                         "seed": rng.choice([0, -1, 2 ** 70, "x"]),
                                                         "base": rng.choice([0, 2 ** 63, "0x1_0000_0000"])}]),
             "size": rng.choice(["4K", "64G", "1T", 4095, 0, 2 ** 40 + 4096, "16M", "128G"]),
             "prot": rng.choice(["rw", "r", "", "x", "rw,cache,noexec", 7, None])}
        maps.append(m)
        if rng.random() < 0.3:
            maps.append(dict(m))  # overlapping: -EEXIST
        what = f"mapping {m}"
    elif op == "memory":
        seg = rng.choice([{"file": "/dev/null", "base": 0}, {"file": "nonexistent.bin", "base": 0},
                          {"file": ".", "base": 0}, {"file": "a\x00b", "base": 0}, {"elf": "junk.elf"},
                          {"elf": "/dev/null"}, {"hex": {"0x1000": "zz"}}, {"hex": {2 ** 64: "00"}},
                          {"hex": {"0x1000": "00 11 22"}, "zero": {"base": 0, "length": 1}},
                          {"zero": {"base": 0, "length": 2 ** 64}}, {"zero": {"base": 2 ** 63, "length": 2 ** 63}},
                          {"zero": {"base": 0, "length": "1T"}}, {"file": "junk.bin", "base": 0, "offset": 2 ** 40},
                          {"file": "junk.bin", "base": 2 ** 64 - 16}, {"file": "junk.bin", "base": 0, "length": 0}])
        doc["memory"] = [seg]
        doc.pop("mappings", None)
        doc["root"] = rng.choice([0, "0x1000", 2 ** 63, "junk"])
        what = f"memory {seg}"
    elif op == "config":
        cls = formats.get_format(fid) if fid in formats.available() else None
        keys = (list(cls.config_defaults) if cls is not None else []) or ["granule", "ias"]
        cfg = doc.setdefault("config", {})
        if not isinstance(cfg, dict):
            cfg = doc["config"] = {}
        k = rng.choice(keys)
        cfg[k] = rng.choice(JUNK + HUGE + [["arm-ns", "bogus"], "arm-ttbr1", ["no-perms", "arm-mtk-ext"], 1, 2, 3,
                                           "3.3", "9.9", 12, 36, 52, 64, 65])
        what = f"config.{k} = {cfg[k]!r}"
    elif op == "roots":
        doc.pop("mappings", None)
        key = rng.choice(["root", "roots", "ttbr"])
        doc[key] = rng.choice([[], [0] * 100, 2 ** 64, -1, "0x80000000", ["x"], {"a": 1}, 0x4000_0000])
        doc["memory"] = [{"zero": {"base": 0x4000_0000, "length": "2M"}}]
        what = f"{key} = {doc[key]!r}"
    else:
        doc["format" if rng.random() < 0.5 else "driver"] = rng.choice(JUNK + ["arm-lpae-s9", fid.upper(),
                                                                              "arm_smmu_v3", "ARM-SMMU-V3"])
        what = "format/driver junk"
    try:
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        text = "format: " + fid + "\n"
    return text.encode(), f"{op}: {what}"


# ---------------------------------------------------------------------------------------------


def build_corpus(n: int, seed: int, available: set[str]) -> Iterator[Case]:
    rng = random.Random(seed)
    bases = make_bases()
    fids = list(formats.FORMATS)
    cid = 0
    n_image = n * 11 // 20
    while cid < n_image and bases:
        b = rng.choice(bases)
        img, roots, done = mutate_image(rng, b)
        text, how = hostile_doc(rng, b, roots, len(img))
        if how:
            done.append(how)
        files = {"image.bin": bytes(img),
                 "clean.yaml": domain_text(b.fmt_id, b.config, b.roots, b.base).encode(),
                 "d.yaml": text.encode()}
        files["clean.yaml"] = files["clean.yaml"].replace(b"image.bin", b"clean.bin")
        files["clean.bin"] = b.image
        for argv, stdin in commands(rng, b, "d.yaml", available):
            if rng.random() < 0.55 and argv[0] not in ("check", "walk", "translate"):
                continue
            yield Case(cid, "image", f"{b.name} {'+'.join(done)}", argv, files, stdin)
            cid += 1
    while cid < n:
        fid = fids[cid % len(fids)]
        data, what = mutate_yaml(rng, fid)
        cmd = rng.choice([["check"], ["translate", "0x1000"], ["walk", "--summary"], ["explain", "0x0"],
                          ["build", "-o", "o.bin"], ["walk", "--json"], ["check", "--json"]])
        files = {"d.yaml": data, "junk.bin": rng.randbytes(4096),
                 "junk.elf": b"\x7fELF\x02\x01\x01" + rng.randbytes(120)}
        yield Case(cid, "yaml", f"{fid} {what}", [cmd[0], "d.yaml", *cmd[1:]], files)
        cid += 1


# ---------------------------------------------------------------------------------------------
# running


@dataclass
class Result:
    case: Case
    code: int
    seconds: float
    maxrss_kib: int
    hang: bool
    stderr: str
    failure: str = ""
    cpu: float = 0.0  # user + system seconds of the case's process (wall time depends on the machine's load)


def _child(case: Case, workdir: Path, as_limit: int) -> None:
    """In the forked child: run the CLI in-process on the case's files."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
    except (ValueError, OSError):
        pass
    os.chdir(workdir)
    fd_in = os.open(workdir / "stdin", os.O_RDONLY)
    fd_out = os.open(workdir / "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    fd_err = os.open(workdir / "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd_in, 0)
    os.dup2(fd_out, 1)
    os.dup2(fd_err, 2)
    os.environ.pop("IOMMUCTL_DEBUG", None)
    os.environ["NO_COLOR"] = "1"
    code = 0
    try:
        from iommuctl.cli import main

        main(list(case.argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except BaseException:  # noqa: BLE001 - anything escaping main() is a failure to report
        import traceback

        traceback.print_exc()
        code = 3
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass
    os._exit(code)


def run_cases(cases: Iterator[Case], jobs: int, timeout: float, scratch: Path, as_limit: int,
              progress: Callable[[int], None] | None = None) -> list[Result]:
    results: list[Result] = []
    running: dict[int, tuple[Case, float, Path]] = {}
    it = iter(cases)
    exhausted = False
    killed: set[int] = set()
    while True:
        while not exhausted and len(running) < jobs:
            try:
                case = next(it)
            except StopIteration:
                exhausted = True
                break
            wd = scratch / f"c{case.id}"
            wd.mkdir()
            for name, data in case.files.items():
                (wd / name).write_bytes(data)
            (wd / "stdin").write_bytes(case.stdin)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(case, wd, as_limit)
            running[pid] = (case, time.monotonic(), wd)
        if not running:
            break
        pid, status, ru = os.wait4(-1, os.WNOHANG)
        now = time.monotonic()
        if pid == 0:
            for p, (_case, t0, _) in running.items():
                if now - t0 > timeout and p not in killed:
                    os.kill(p, signal.SIGKILL)
                    killed.add(p)
            time.sleep(0.002)
            continue
        case, t0, wd = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        err = (wd / "stderr").read_text(errors="replace")
        r = Result(case, code, now - t0, ru.ru_maxrss, pid in killed, err, cpu=ru.ru_utime + ru.ru_stime)
        if r.hang:
            r.failure = "hang"
        elif "Traceback (most recent call last)" in err or "internal error" in err:
            r.failure = "traceback"
        elif code not in (0, 1, 2):
            r.failure = f"exit status {code}"
        if r.failure:
            keep = scratch / "failures" / f"c{case.id}"
            keep.parent.mkdir(exist_ok=True)
            shutil.copytree(wd, keep)
            (keep / "argv").write_text(json.dumps(case.argv) + "\n" + case.desc + "\n")
        shutil.rmtree(wd, ignore_errors=True)
        results.append(r)
        if progress:
            progress(len(results))
    return results


def subprocess_sample(cases: list[Case], scratch: Path, timeout: float) -> list[Result]:
    """A few cases through the real entry point (`python -m iommuctl`), as a user runs it."""
    out = []
    for case in cases:
        wd = scratch / f"s{case.id}"
        wd.mkdir()
        for name, data in case.files.items():
            (wd / name).write_bytes(data)
        t0 = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k != "IOMMUCTL_DEBUG"}
        try:
            p = subprocess.run([sys.executable, "-m", "iommuctl", *case.argv], cwd=wd, input=case.stdin,
                               capture_output=True, timeout=timeout, env=env)
            code, err, hang = p.returncode, p.stderr.decode(errors="replace"), False
        except subprocess.TimeoutExpired:
            code, err, hang = -9, "", True
        r = Result(case, code, time.monotonic() - t0, 0, hang, err)
        if hang:
            r.failure = "hang"
        elif "Traceback (most recent call last)" in err or "internal error" in err:
            r.failure = "traceback"
        elif code not in (0, 1, 2):
            r.failure = f"exit status {code}"
        shutil.rmtree(wd, ignore_errors=True)
        out.append(r)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=2400)
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    ap.add_argument("--as-limit", type=int, default=4096, help="address-space limit per case, MiB")
    ap.add_argument("--subprocess", type=int, default=20, help="also run this many cases via python -m iommuctl")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "iommuctl-fuzz")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = ap.parse_args()

    # import everything a case can touch before forking, so a child pays for none of it
    import numpy  # noqa: F401

    import iommuctl.check  # noqa: F401
    import iommuctl.cli as cli_mod
    from iommuctl import domain, walk  # noqa: F401

    for fid in formats.available():
        formats.get_format(fid)
    import click

    ctx = click.Context(cli_mod.cli)
    available = {n for n in cli_mod.cli.list_commands(ctx) if cli_mod.cli.get_command(ctx, n) is not None}
    for mod in ("construct", "rich.console", "rich.table", "elftools.elf.elffile"):
        __import__(mod)

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    t0 = time.monotonic()
    corpus = list(build_corpus(args.cases, args.seed, available))
    t_gen = time.monotonic() - t0

    def tick(n: int) -> None:
        if sys.stderr.isatty() and n % 50 == 0:
            sys.stderr.write(f"\r{n}/{len(corpus)}")
            sys.stderr.flush()

    results = run_cases(iter(corpus), args.jobs, args.timeout, args.out, args.as_limit << 20, tick)
    if sys.stderr.isatty():
        sys.stderr.write("\r")
    step = max(1, len(corpus) // max(1, args.subprocess))
    sub = subprocess_sample(corpus[::step][:args.subprocess], args.out, args.timeout) if args.subprocess else []
    wall = time.monotonic() - t0

    everything = results + sub
    fails = [r for r in everything if r.failure]
    slow = max(results, key=lambda r: r.seconds)
    slow_cpu = max(results, key=lambda r: r.cpu)
    peak = max(r.maxrss_kib for r in results) / 1024
    by_cmd = Counter(r.case.argv[0] for r in results)
    codes = Counter(r.code for r in results)
    summary: dict[str, Any] = {
        "cases": len(results), "subprocess_cases": len(sub),
        "kinds": dict(Counter(r.case.kind for r in results)), "commands": dict(sorted(by_cmd.items())),
        "exit_status": {str(k): v for k, v in sorted(codes.items())},
        "tracebacks": sum(r.failure == "traceback" for r in everything),
        "hangs": sum(r.failure == "hang" for r in everything),
        "bad_exit": sum(r.failure.startswith("exit status") for r in everything),
        "slowest": {"seconds": round(slow.seconds, 3), "cpu_seconds": round(slow.cpu, 3), "argv": slow.case.argv,
                    "case": slow.case.desc},
        "slowest_cpu": {"cpu_seconds": round(slow_cpu.cpu, 3), "seconds": round(slow_cpu.seconds, 3),
                        "argv": slow_cpu.case.argv, "case": slow_cpu.case.desc},
        "load_average": os.getloadavg()[0],
        "peak_rss_mib": round(peak, 1), "generate_s": round(t_gen, 1), "wall_s": round(wall, 1),
        "failures_dir": str(args.out / "failures") if fails else None,
    }
    # the time bound is judged on CPU seconds: wall time on a shared, loaded machine is not the tool's
    ok = not fails and slow_cpu.cpu < SLOW_LIMIT_S and peak < RSS_LIMIT_MIB and len(results) >= 2000
    summary["ok"] = ok
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"cases        {len(results)} ({', '.join(f'{k} {v}' for k, v in summary['kinds'].items())}) "
              f"+ {len(sub)} through python -m iommuctl")
        print(f"commands     {', '.join(f'{k} {v}' for k, v in sorted(by_cmd.items()))}")
        print(f"exit status  {', '.join(f'{k}: {v}' for k, v in sorted(codes.items()))}")
        print(f"tracebacks   {summary['tracebacks']}")
        print(f"hangs        {summary['hangs']} (limit {args.timeout:g} s)")
        print(f"bad exits    {summary['bad_exit']}")
        print(f"slowest      {slow.seconds:.2f} s wall ({slow.cpu:.2f} s CPU): iommuctl "
              f"{' '.join(slow.case.argv)[:110]}  [{slow.case.desc[:70]}]")
        print(f"slowest CPU  {slow_cpu.cpu:.2f} s CPU ({slow_cpu.seconds:.2f} s wall): iommuctl "
              f"{' '.join(slow_cpu.case.argv)[:110]}  [{slow_cpu.case.desc[:70]}]")
        print(f"load average {summary['load_average']:.1f} on {os.cpu_count()} CPUs")
        print(f"peak RSS     {peak:.1f} MiB")
        print(f"time         {wall:.1f} s ({t_gen:.1f} s generating, {args.jobs} jobs)")
        for r in fails[:15]:
            last = [ln for ln in r.stderr.strip().splitlines() if ln.strip()][-1:] or [""]
            print(f"FAIL {r.failure}: case {r.case.id} [{r.case.kind}: {r.case.desc[:100]}] "
                  f"iommuctl {' '.join(r.case.argv)[:100]}\n     {last[0][:300]}")
        if fails:
            print(f"failing cases saved under {args.out / 'failures'}")
        print("OK" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
