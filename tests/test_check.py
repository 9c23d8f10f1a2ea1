"""`iommuctl check`: one test per rule on crafted images, for a format of each family.

Images are built by the format's own encoder from `mappings:` (so they start clean: the first
tests prove it, also on every kernel conformance image), then one descriptor is rewritten by
hand, and the finding must name exactly that entry: address, level, index, raw value, rule.
Rules a family's descriptors cannot express (e.g. no LPAE format replicates leaves, omap masks
every table address to its alignment) are skipped with that reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import formats
from formats.base import TABLE, Level, Step, WalkError
from formats.walker import Walker
from iommuctl.check import RULES, Checker, Finding, check_domain
from iommuctl.domain import Domain, load_domain_text

HERE = Path(__file__).resolve().parent
CONFORMANCE = HERE.parent / "fixtures" / "conformance"


def have(fid: str) -> bool:
    try:
        formats.get_format(fid)
    except (ImportError, AttributeError):
        return False
    return True


def needs(fid: str) -> Any:
    return pytest.mark.skipif(not have(fid), reason=f"format {fid} has not landed yet")


# -- crafting helpers -------------------------------------------------------------------------------


def build(fmt: str, mappings: list[str], config: dict[str, Any] | None = None) -> Domain:
    lines = [f"format: {fmt}"]
    if config:
        lines.append("config:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in config.items()]
    lines.append("mappings:")
    lines += [f"  - {m}" for m in mappings]
    return load_domain_text("\n".join(lines) + "\n", ".", f"crafted-{fmt}")


def steps(dom: Domain, iova: int) -> list[Step]:
    out: list[Step] = []
    dom.walker.translate(iova, out)
    return out


def lvl_of(dom: Domain, num: int) -> Level:
    return next(lv for lv in dom.fmt.levels if lv.num == num)


def poke(dom: Domain, addr: int, value: int) -> None:
    dom.mem.write_uint(addr, dom.fmt.entry_size, value, dom.fmt.byteorder)


def peek(dom: Domain, addr: int) -> int:
    return dom.mem.read_uint(addr, dom.fmt.entry_size, dom.fmt.byteorder)


def check(dom: Domain, start: int | None = None, end: int | None = None) -> list[Finding]:
    """Check the (rewritten) tables with a fresh walker, as a fresh load would see them."""
    w = Walker(dom.fmt, dom.mem, dom.roots)
    lo = min(s for s, _ in dom.windows) if start is None else start
    hi = max(e for _, e in dom.windows) if end is None else end
    found = list(Checker(w, lo, hi, whole=start is None and end is None).findings())
    assert all(isinstance(f, Finding) for f in found)  # no budget: every finding is made
    return found  # type: ignore[return-value]


def only(findings: list[Finding], rule: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule]


def expect_one(findings: list[Finding], rule: str, address: int, level: int, index: int | None,
               raw: int | None) -> Finding:
    hits = only(findings, rule)
    assert len(hits) == 1, findings
    f = hits[0]
    assert (f.address, f.level, f.index, f.raw) == (address, level, index, raw), f
    return f


# -- one domain per family --------------------------------------------------------------------------


@dataclass
class Fam:
    """A format of one family, a few mappings, an IOVA reached through a table and one mapped by
    a small leaf, and the far address no image holds."""

    fmt: str
    mappings: list[str]
    via_table: int
    config: dict[str, Any] | None = None
    far: int = 0xF000_0000

    def dom(self) -> Domain:
        return build(self.fmt, self.mappings, self.config)


FAMILIES = {
    # LPAE: arm-lpae-s1, 4K granule, 48-bit: levels 0..3 (io-pgtable-arm.c)
    "lpae": Fam("arm-lpae-s1", ["{iova: 0x40000000, phys: 0x80000000, size: 2M, prot: rw}",
                                "{iova: 0x40200000, phys: 0x90000000, size: 64K, prot: r}"],
                0x40200000, far=0x7F00_0000_0000),
    # v7s / DART: arm-v7s (io-pgtable-arm-v7s.c), 2 levels of 32-bit entries
    "v7s": Fam("arm-v7s", ["{iova: 0x10000000, phys: 0x20000000, size: 16M, prot: rw}",
                           "{iova: 0x11000000, phys: 0x21000000, size: 64K, prot: rw}",
                           "{iova: 0x11010000, phys: 0x22000000, size: 8K, prot: r}"], 0x11010000),
    # driver-private: omap (omap-iommu.c / omap-iopgtable.h)
    "omap": Fam("omap", ["{iova: 0x60000000, phys: 0x90000000, size: 16M, prot: rw}",
                         "{iova: 0x70000000, phys: 0x8c000000, size: 64K, prot: rw}",
                         "{iova: 0x70010000, phys: 0x8d000000, size: 8K, prot: rw}"], 0x70010000),
    # generic_pt: x86-64 (generic_pt/fmt/x86_64.h)
    "generic_pt": Fam("x86-64", ["{iova: 0x40000000, phys: 0x80000000, size: 2M, prot: rw}",
                                 "{iova: 0x40200000, phys: 0x90000000, size: 8K, prot: rw}"],
                      0x40200000, config={"levels": 4, "vasz": 48, "oasz": 52, "features": []},
                      far=0x7F00_0000_0000),
}


def fam(name: str) -> Fam:
    f = FAMILIES[name]
    if not have(f.fmt):
        pytest.skip(f"format {f.fmt} ({name} family) has not landed yet")
    return f


ALL = list(FAMILIES)


def first_table_step(dom: Domain, iova: int, deepest: bool = False) -> Step:
    ss = [s for s in steps(dom, iova) if s.kind == "table"]
    assert ss, "the crafted domain has no table on this walk"
    return ss[-1] if deepest else ss[0]


# -- clean images -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_built_domains_are_clean(name: str) -> None:
    f = fam(name)
    findings, stats = check_domain(f.dom())
    assert findings == []
    assert stats.tables >= 2


def conformance_cases() -> list[Path]:
    return sorted(p for p in CONFORMANCE.iterdir() if (p / "case.json").exists())


def test_every_kernel_image_is_clean() -> None:
    """The kernel's own tables (fixtures/conformance) must raise no finding at all."""
    sys.path.insert(0, str(HERE))
    from test_conformance import available, domain_for

    checked = 0
    for c in conformance_cases():
        case = json.loads((c / "case.json").read_text())
        if not available(case):
            continue
        dom = domain_for(case, c / "image.bin", "root")
        findings, _ = check_domain(dom)
        assert findings == [], (c.name, findings[:3])
        checked += 1
    assert checked > 0


def test_bundled_examples_are_clean() -> None:
    from iommuctl.domain import example_names, load_domain

    for name in example_names():
        findings, _ = check_domain(load_domain(f"example:{name}"))
        assert findings == [], (name, findings[:3])


# -- pointer rules (every family) ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_outside_memory(name: str) -> None:
    f = fam(name)
    dom = f.dom()
    s = first_table_step(dom, f.via_table)
    lvl = lvl_of(dom, s.level)
    bad = dom.fmt.encode_table(f.far, lvl)
    assert not dom.mem.contains(f.far)
    poke(dom, s.entry, bad)
    out = expect_one(check(dom), "outside-memory", s.entry, s.level, s.index, bad)
    assert f"{f.far:#x}" in out.message
    # the other rules still ran over the rest of the tables: nothing else is wrong
    assert {x.rule for x in check(dom)} == {"outside-memory"}


@pytest.mark.parametrize("name", ALL)
def test_cycle_to_own_table(name: str) -> None:
    """A table descriptor pointing at the table that holds it."""
    f = fam(name)
    dom = f.dom()
    s = first_table_step(dom, f.via_table, deepest=True)
    bad = dom.fmt.encode_table(s.table, lvl_of(dom, s.level))
    poke(dom, s.entry, bad)
    expect_one(check(dom), "cycle", s.entry, s.level, s.index, bad)
    # translate and walk stay bounded: one entry per level, each table once
    with pytest.raises(WalkError):
        list(Walker(dom.fmt, dom.mem, dom.roots).leaves(*dom.windows[0]))
    assert Walker(dom.fmt, dom.mem, dom.roots).translate(f.via_table).entries_read <= len(dom.fmt.levels)


@pytest.mark.parametrize("name", ALL)
def test_cycle_to_root(name: str) -> None:
    """The deepest table descriptor pointing back at the root table (an ancestor)."""
    f = fam(name)
    dom = f.dom()
    s = first_table_step(dom, f.via_table, deepest=True)
    bad = dom.fmt.encode_table(dom.roots[0], lvl_of(dom, s.level))
    poke(dom, s.entry, bad)
    expect_one(check(dom), "cycle", s.entry, s.level, s.index, bad)


@pytest.mark.parametrize("name", ALL)
def test_table_reached_from_two_parents(name: str) -> None:
    f = fam(name)
    dom = f.dom()
    s = first_table_step(dom, f.via_table, deepest=True)
    lvl = lvl_of(dom, s.level)
    # a free slot of the same table, after the real one (IOVA order: the copy is reached second)
    j = next(i for i in range(s.index + 1, lvl.entries) if peek(dom, s.table + i * dom.fmt.entry_size) == 0)
    addr = s.table + j * dom.fmt.entry_size
    poke(dom, addr, s.raw)
    out = expect_one(check(dom), "shared-table", addr, s.level, j, s.raw)
    assert f"{dom.fmt.next_table(s.raw, lvl):#x}" in out.message


# -- alignment ----------------------------------------------------------------------------------------


def test_misaligned_table_lpae_16k() -> None:
    """16K granule: arm_lpae tables are granule-sized and aligned (__arm_lpae_alloc_pages), but
    the table descriptor holds address bits [47:12] (ARM_LPAE_PTE_ADDR_MASK), so bit 12 can be
    set: the table at +0x1000 is not where any kernel put one."""
    if not have("arm-lpae-s1"):
        pytest.skip("arm-lpae-s1 has not landed yet")
    dom = build("arm-lpae-s1", ["{iova: 0x40000000, phys: 0x80000000, size: 16K, prot: rw}"],
                {"granule": "16K", "ias": 47, "oas": 48})
    s = first_table_step(dom, 0x40000000, deepest=True)
    bad = s.raw + 0x1000
    poke(dom, s.entry, bad)
    out = expect_one(check(dom), "misaligned-table", s.entry, s.level, s.index, bad)
    assert "0x4000-aligned" in out.message


@needs("apple-dart")
def test_misaligned_table_dart() -> None:
    """DART: 16K tables (dart_alloc_pgtable: granule-sized, aligned), descriptor address in
    bits [35:12] (APPLE_DART1_PADDR_MASK): +0x1000 is representable and wrong."""
    dom = build("apple-dart", ["{iova: 0x100000, phys: 0x80000000, size: 16K, prot: rw}"])
    s = first_table_step(dom, 0x100000)
    bad = s.raw + 0x1000
    poke(dom, s.entry, bad)
    expect_one(check(dom), "misaligned-table", s.entry, s.level, s.index, bad)


@pytest.mark.parametrize("name", ["v7s", "omap"])
def test_misaligned_table_not_expressible(name: str) -> None:
    """v7s (ARM_V7S_TABLE_MASK, 1K) and omap (IOPGD_PAGE_MASK, 1K) mask the table address to
    the table's own alignment: no descriptor can name a misaligned table."""
    f = fam(name)
    fmt = f.dom().fmt
    lvl = fmt.levels[0]
    for raw in (0xFFFF_FFFF, 0xFFFF_FF01, 0x1234_5671):
        if fmt.classify(raw, lvl) == TABLE:
            assert fmt.next_table(raw, lvl) % fmt.table_alloc(fmt.levels[1])[1] == 0


def sloppy(base: type, **over: Any) -> type:
    return type(f"Sloppy{base.__name__}", (base,), over)


@needs("omap")
def test_misaligned_leaf() -> None:
    """No landed format can decode a misaligned leaf (they all mask to the leaf size), so the
    rule is proved with a format whose leaf_phys keeps the low bits of a 1M section."""
    dom = build("omap", ["{iova: 0x60000000, phys: 0x90000000, size: 1M, prot: rw}"])
    cls = sloppy(type(dom.fmt), leaf_phys=lambda self, raw, lvl: raw & 0xFFFF_F000,
                 leaf_phys_vec=lambda self, raw, lvl: raw.astype("uint64") & 0xFFFF_F000)
    dom.fmt = cls(dict(dom.fmt.config))
    s = steps(dom, 0x60000000)[0]
    bad = s.raw | 0x3000  # section 0x90000002 with bits 13:12 set: PA 0x90003000
    poke(dom, s.entry, bad)
    got = check(dom)
    out = expect_one(got, "misaligned-leaf", s.entry, 1, 0x600, bad)
    assert "0x90003000" in out.message


# -- reserved bits --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,level,bit,why", [
    # arm_lpae_prot_to_pte never sets bits 59..62 (PBHA / software bits) of a stage-1 page
    ("lpae", 3, 1 << 60, "stage-1 page bit 60"),
    # v7s table descriptor: ARM_V7S_ATTR_NS_TABLE (bit 3) only with IO_PGTABLE_QUIRK_ARM_NS
    ("v7s", 1, 1 << 3, "table NS_TABLE without arm-ns"),
    # omap iopte small page: bits 31:12 PA, 11/9/5:4 attributes, 1 type; bit 3 is never written
    ("omap", 2, 1 << 3, "small page bit 3"),
])
def test_reserved_bits(name: str, level: int, bit: int, why: str) -> None:
    f = fam(name)
    dom = f.dom()
    s = next(x for x in steps(dom, f.via_table) if x.level == level)
    bad = s.raw | bit
    poke(dom, s.entry, bad)
    out = expect_one(check(dom), "reserved-bits", s.entry, level, s.index, bad)
    assert f"{bit:#x}" in out.message, why


# -- output / input address size -----------------------------------------------------------------------


@pytest.mark.parametrize("name,config,leaf_iova,high", [
    # oas 40: ARM_LPAE_PTE_ADDR_MASK still carries bits 47:40, which a 40-bit SMMU cannot output
    ("lpae", {"oas": 40}, 0x40000000, 1 << 44),
    # omap with pa_bits 30: a section at 0x9000_0000 already has PA bit 31 set
    ("omap", {"pa_bits": 31}, 0x60000000, 1 << 31),
])
def test_output_beyond_oas(name: str, config: dict[str, Any], leaf_iova: int, high: int) -> None:
    f = fam(name)
    size = "2M" if name == "lpae" else "1M"
    mappings = [f"{{iova: {leaf_iova:#x}, phys: 0x10000000, size: {size}, prot: rw}}"]
    dom = build(f.fmt, mappings, config)
    s = [x for x in steps(dom, leaf_iova) if x.kind not in ("table", "invalid")][-1]
    bad = s.raw | high
    poke(dom, s.entry, bad)
    got = check(dom)
    expect_one(got, "oas", s.entry, s.level, s.index, bad)


@needs("apple-dart")
def test_entries_above_ias_dart() -> None:
    """DART with ias 32 and 16K pages: one L1 table of 2048 entries spans 64G (dart_alloc_pgtable
    keeps the whole table), so entries 128.. lie beyond the 4G input window: live ones there are
    unreachable mappings."""
    dom = build("apple-dart", ["{iova: 0x100000, phys: 0x80000000, size: 16K, prot: rw}"])
    s = first_table_step(dom, 0x100000)
    lvl = lvl_of(dom, s.level)
    assert lvl.entries * lvl.block > 1 << 32
    j = (1 << 32) // lvl.block + 5
    addr = s.table + j * dom.fmt.entry_size
    poke(dom, addr, s.raw)
    got = check(dom)
    expect_one(got, "ias", addr, s.level, j, s.raw)
    assert not only(got, "shared-table")  # the walk never follows it: it is outside every window
    # --range limits the lint to the range: the stray entry is not in it
    assert check(dom, 0, 1 << 20) == []


def test_entries_above_ias_generic_pt() -> None:
    """x86-64 without sign-extend, vasz 47: the 4-level top table's upper 256 entries are
    above the input space (they would be the sign-extended half)."""
    f = fam("generic_pt")
    dom = build(f.fmt, f.mappings, {"levels": 4, "vasz": 47, "oasz": 52, "features": []})
    s = first_table_step(dom, f.via_table)
    j = 300
    addr = s.table + j * dom.fmt.entry_size
    poke(dom, addr, s.raw)
    expect_one(check(dom), "ias", addr, s.level, j, s.raw)


def test_entries_above_ias_lpae() -> None:
    """arm-lpae-s1 with ias 32 and 4K pages: the walk starts at level 1 with a 4-entry pgd
    (pgd_bits = 2), which the kernel allocates as at least 64 bytes (ARM_LPAE_PGD_SIZE rounded
    up): a live entry 5 there is beyond the input space, which the walk never reads."""
    if not have("arm-lpae-s1"):
        pytest.skip("arm-lpae-s1 has not landed yet")
    dom = build("arm-lpae-s1", ["{iova: 0x40000000, phys: 0x80000000, size: 2M, prot: rw}"], {"ias": 32})
    s = first_table_step(dom, 0x40000000)
    lvl = lvl_of(dom, s.level)
    assert (s.level, lvl.entries, s.table) == (1, 4, dom.roots[0])
    addr = s.table + 5 * 8
    poke(dom, addr, s.raw)
    got = check(dom)
    out = expect_one(got, "ias", addr, 1, 5, s.raw)
    assert "past the 4 entries" in out.message
    assert check(dom, 0, 1 << 32) == []  # a --range lint only looks inside the range


# -- replicated leaves -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name,iova,k,delta,why", [
    # v7s 16M supersection: ARM_V7S_CONT_PAGES = 16 identical level-1 entries
    ("v7s", 0x10000000, 7, 1 << 24, "supersection copy 8 names another 16M"),
    # v7s 64K large page: 16 identical level-2 entries
    ("v7s", 0x11000000, 15, 1 << 16, "large page copy 16 names another 64K"),
    # omap 16M supersection (iopgd_alloc_super: 16 identical iopgd entries)
    ("omap", 0x60000000, 3, 1 << 24, "supersection copy 4"),
    # omap 64K large page (iopte_alloc_large: 16 identical iopte entries)
    ("omap", 0x70000000, 9, 1 << 16, "large page copy 10"),
])
def test_replica_mismatch(name: str, iova: int, k: int, delta: int, why: str) -> None:
    f = fam(name)
    dom = f.dom()
    s = [x for x in steps(dom, iova) if x.kind not in ("table", "invalid")][-1]
    assert s.index % 16 == 0
    addr = s.entry + k * dom.fmt.entry_size
    assert peek(dom, addr) == s.raw  # the kernel's copies are identical
    bad = s.raw + delta
    poke(dom, addr, bad)
    got = check(dom)
    out = expect_one(got, "replica-mismatch", addr, s.level, s.index + k, bad)
    assert f"copy {k + 1} of 16" in out.message, why


@pytest.mark.parametrize("name", ["v7s", "omap"])
def test_replica_missing_copy(name: str) -> None:
    """A replicated leaf with one slot cleared (a half-written map in a crash dump)."""
    f = fam(name)
    dom = f.dom()
    iova = 0x11000000 if name == "v7s" else 0x70000000
    s = [x for x in steps(dom, iova) if x.kind not in ("table", "invalid")][-1]
    addr = s.entry + 4 * dom.fmt.entry_size
    poke(dom, addr, 0)
    expect_one(check(dom), "replica-mismatch", addr, s.level, s.index + 4, 0)


def test_replicas_not_used_by_lpae() -> None:
    """io-pgtable-arm writes one descriptor per page (no contiguous hint): leaf size = block."""
    f = fam("lpae")
    dom = f.dom()
    for lvl in dom.fmt.levels:
        assert dom.fmt.leaf_size(0x3 | 1 << 52, lvl) == lvl.block


# -- hostile hooks: absurd leaf sizes, last-level tables, undecodable entries ----------------------------


@needs("omap")
@pytest.mark.parametrize("size", [0, 3 << 12, 1 << 40, 1 << 70])
def test_absurd_leaf_size_is_caught(size: int) -> None:
    """A leaf_size hook (or a hostile descriptor it decodes) giving a size that is not a power of
    two within its table: check reports it, translate and walk refuse with a WalkError instead of
    inflating the work."""
    dom = build("omap", ["{iova: 0x60000000, phys: 0x90000000, size: 1M, prot: rw}"])
    cls = sloppy(type(dom.fmt), leaf_size=lambda self, raw, lvl: size,
                 leaf_size_vec=lambda self, raw, lvl: __import__("numpy").full(len(raw), size & ((1 << 64) - 1),
                                                                                dtype="uint64"))
    dom.fmt = cls(dict(dom.fmt.config))
    w = Walker(dom.fmt, dom.mem, dom.roots)
    with pytest.raises(WalkError):
        w.translate(0x60000000)
    with pytest.raises(WalkError):
        list(w.leaves(0, 1 << 32))
    from formats.batch import translate_many

    with pytest.raises(WalkError):  # the numpy batch path (translate of 256+ IOVAs) refuses it too
        translate_many(w, __import__("numpy").array([0x60000000, 0x60001000], dtype="uint64"))
    got = check(dom)
    assert {x.rule for x in got} == {"leaf-size"}
    assert got[0].address == dom.roots[0] + 0x600 * 4 and got[0].index == 0x600


@needs("omap")
def test_last_level_table() -> None:
    dom = build("omap", ["{iova: 0x70000000, phys: 0x8c000000, size: 4K, prot: rw}"])
    base = type(dom.fmt)
    cls = sloppy(base, classify=lambda self, raw, lvl: TABLE if raw & 3 == 3 else base.classify(self, raw, lvl))
    cls.classify_vec = lambda self, raw, lvl: __import__("numpy").fromiter(  # type: ignore[attr-defined]
        (self.classify(int(r), lvl) for r in raw), dtype="int8", count=len(raw))
    dom.fmt = cls(dict(dom.fmt.config))
    s = steps(dom, 0x70000000)[-1]
    bad = s.raw | 3
    poke(dom, s.entry, bad)
    got = check(dom)
    expect_one(got, "last-level-table", s.entry, 2, s.index, bad)
    # the walk ignores it (not a translation) and translate stops there
    assert not Walker(dom.fmt, dom.mem, dom.roots).translate(0x70000000).mapped


@needs("omap")
def test_undecodable_entry() -> None:
    """A format hook that gives up (ValueError) on a junk entry becomes a finding, not a crash."""
    dom = build("omap", ["{iova: 0x60000000, phys: 0x90000000, size: 1M, prot: rw}"])

    def picky(self: Any, raw: Any, lvl: Level) -> Any:
        raise ValueError("junk entry")

    dom.fmt = sloppy(type(dom.fmt), leaf_phys_vec=picky)(dict(dom.fmt.config))
    got = check(dom)
    assert [x.rule for x in got] == ["undecodable"]
    assert got[0].address == dom.roots[0] and "junk entry" in got[0].message


def test_rules_are_documented() -> None:
    import iommuctl.check as mod

    for r in RULES:
        assert f"  {r}" in (mod.__doc__ or ""), r


# -- the command -------------------------------------------------------------------------------------------


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(*args: str) -> Result:
    """The CLI in-process (main() maps every error to a status, as `iommuctl` does)."""
    from iommuctl.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code
    return Result(code if isinstance(code, int) else 2, out.getvalue(), err.getvalue())


@needs("omap")
def test_cli_clean_and_json(tmp_path: Path) -> None:
    r = run("check", "example:omap")
    assert r.returncode == 0, r.stderr
    assert "clean" in r.stdout
    r = run("check", "example:omap", "--json")
    assert r.returncode == 0
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 1 and lines[0]["summary"]["findings"] == 0 and lines[0]["summary"]["clean"]


@needs("omap")
def test_cli_findings_exit_1(tmp_path: Path) -> None:
    """A crafted image on disk: the omap example's tables with a cycle and a reserved bit."""
    dom = build("omap", FAMILIES["omap"].mappings)
    assert dom.arena is not None
    s = first_table_step(dom, 0x70010000)
    poke(dom, s.entry, dom.fmt.encode_table(dom.roots[0], lvl_of(dom, 1)))  # cycle to the root
    sec = steps(dom, 0x60000000)[0]
    poke(dom, sec.entry + 16 * 4, 0)  # not a copy: the supersection covers 16 slots, this is the next
    image = tmp_path / "omap.bin"
    image.write_bytes(dom.arena.image())
    (tmp_path / "d.yaml").write_text(f"format: omap\nroot: {dom.roots[0]:#x}\nmemory:\n"
                                     f"  - file: omap.bin\n    base: {dom.arena.base:#x}\n")
    r = run("check", str(tmp_path / "d.yaml"), "--json")
    assert r.returncode == 1, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert rows[-1]["summary"]["findings"] == len(rows) - 1 == 1
    f = rows[0]
    assert f == {"rule": "cycle", "address": f"{s.entry:#x}", "level": 1, "index": s.index,
                 "raw": f"{dom.fmt.encode_table(dom.roots[0], lvl_of(dom, 1)):#x}", "table": f"{s.table:#x}",
                 "iova": f"{0x70000000:#x}", "message": f["message"]}
    r = run("check", str(tmp_path / "d.yaml"))
    assert r.returncode == 1 and "cycle" in r.stdout
    r = run("check", str(tmp_path / "d.yaml"), "--range", "0x60000000+16M")
    assert r.returncode == 0, r.stdout
    r = run("check", str(tmp_path / "d.yaml"), "--range", "0x1:0x0")
    assert r.returncode == 2 and "Traceback" not in r.stderr


@needs("omap")
def test_cli_limit() -> None:
    r = run("check", "example:omap", "--limit", "0")
    assert r.returncode == 0


@pytest.mark.parametrize("fid", ["fsl-pamu", "virtio"])
def test_tableless_formats_have_nothing_to_check(fid: str) -> None:
    if not have(fid):
        pytest.skip(f"{fid} has not landed yet")
    from iommuctl.domain import example_names

    if fid not in example_names():
        pytest.skip(f"no bundled {fid} example")
    r = run("check", f"example:{fid}", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["summary"]["tables"] == 0


# -- the vectorised reserved-bits hooks agree with the scalar ones -----------------------------------------


def _table_formats() -> list[str]:
    out = []
    for fid in formats.available():
        cls = formats.get_format(fid)
        if cls.has_tables and hasattr(cls, "reserved_bits_vec"):
            try:
                cls(dict(cls.config_defaults))
            except Exception:  # noqa: BLE001 - a format whose defaults need a key
                continue
            out.append(fid)
    return out


@pytest.mark.parametrize("fid", _table_formats())
def test_reserved_bits_vec_matches_scalar(fid: str) -> None:
    """check uses reserved_bits_vec when a format has it: it must say what reserved_bits says,
    entry by entry, on junk as on real descriptors."""
    import numpy as np

    cls = formats.get_format(fid)
    fmt = cls(dict(cls.config_defaults))
    rng = np.random.default_rng(7)
    bits = fmt.entry_size * 8
    raw = rng.integers(0, 1 << 63, size=2000, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 2000, np.uint64)
    raw &= np.uint64((1 << bits) - 1)
    raw[:16] = np.arange(16, dtype=np.uint64)  # every low type encoding with nothing else
    raw = raw.astype(fmt.dtype).astype(np.uint64)
    for lvl in fmt.levels:
        kinds = np.asarray(fmt.classify_vec(raw, lvl))
        got = np.asarray(fmt.reserved_bits_vec(raw, lvl, kinds)).astype(np.uint64)
        want = [fmt.reserved_bits(int(r), lvl, int(k)) for r, k in zip(raw.tolist(), kinds.tolist())]
        bad = [(hex(int(raw[i])), hex(int(got[i])), hex(w)) for i, w in enumerate(want) if int(got[i]) != w]
        assert not bad, (fid, lvl.num, bad[:5])


@pytest.mark.parametrize("finding", [
    Finding("reserved-bits", 0x4000_1008, 3, 1, 0x80_0000_0000_0743, 0x4000_1000, 0x20_1000,
            "page entry has reserved bits 0x800000000000 set"),
    Finding("outside-memory", 0x4000_0000, 0, None, None, 0x4000_0000, None, 'root "table" \\ at 0x4000_0000'),
    Finding("ias", 0x4000_0ff8, 1, 511, 0x3, 0x4000_0000, 0xFFFF_FFFF_C000_0000, "entry beyond ias\u00e9"),
])
def test_json_line_is_json_dumps_of_as_json(finding: Finding) -> None:
    # check --json writes Finding.json_line (no encoder call per finding): the same text
    import json

    assert finding.json_line() == json.dumps(finding.as_json()) + "\n"


@pytest.mark.parametrize("show", [0, 1, 5, 40, 1000])
def test_counted_past_the_limit_as_made(show: int) -> None:
    # A finding per leaf (stage-1 page bit 60, never written by arm_lpae_prot_to_pte) and some
    # outputs beyond oas: past `show` the rules yield Counts; the findings made are the first ones
    # of the full list, in order, and every rule's total is the same.
    from collections import Counter

    from iommuctl.check import Count

    dom = build("arm-lpae-s1", ["{iova: 0x100000, phys: 0x80000000, size: 64K, prot: rw}",
                                "{iova: 0x40000000, phys: 0x90000000, size: 16K, prot: r}"], {"oas": 40})
    for iova in list(range(0x100000, 0x110000, 0x1000)) + list(range(0x40000000, 0x40004000, 0x1000)):
        s = steps(dom, iova)[-1]
        poke(dom, s.entry, s.raw | (1 << 60) | ((1 << 45) if iova & 0x2000 else 0))  # PA bit 45: beyond oas 40
    full = check(dom)
    w = Walker(dom.fmt, dom.mem, dom.roots)
    got = list(Checker(w, 0, 1 << 48, whole=True, show=show).findings())
    made = [f for f in got if isinstance(f, Finding)]
    assert made == full[:len(made)] and len(made) >= min(show, len(full))
    totals: Counter[str] = Counter()
    for f in got:
        totals[f.rule] += f.n if isinstance(f, Count) else 1
    assert totals == Counter(f.rule for f in full) == Counter({"reserved-bits": 20, "oas": 10})


@pytest.mark.parametrize("show", [None, 3])
def test_batches_are_the_findings_as_arrays(show: int | None) -> None:
    # check --json asks for FindingBatches (one per rule and table, written with numpy): each
    # batch's findings, and its JSON text, are what the per-finding path makes
    from iommuctl.check import Count, FindingBatch

    dom = build("arm-lpae-s1", ["{iova: 0x100000, phys: 0x80000000, size: 64K, prot: rw}",
                                "{iova: 0x40000000, phys: 0x90000000, size: 16K, prot: r}"], {"oas": 40})
    for iova in list(range(0x100000, 0x110000, 0x1000)) + list(range(0x40000000, 0x40004000, 0x1000)):
        s = steps(dom, iova)[-1]
        poke(dom, s.entry, s.raw | (1 << 60) | ((1 << 45) if iova & 0x2000 else 0) | (0x800 if iova & 0x1000 else 0))
    plain = list(Checker(Walker(dom.fmt, dom.mem, dom.roots), 0, 1 << 48, show=show).findings())
    got = list(Checker(Walker(dom.fmt, dom.mem, dom.roots), 0, 1 << 48, show=show, batches=True).findings())
    assert any(isinstance(g, FindingBatch) for g in got)
    flat: list[Any] = []
    for g in got:
        if isinstance(g, FindingBatch):
            made = list(g.findings())
            assert bytes(g.json_rows()).decode() == "".join(f.json_line() for f in made)
            assert list(g.head(2).findings()) == made[:2]
            flat += made
        else:
            flat.append(g)
    assert flat == plain
    assert sum(g.n for g in got if isinstance(g, Count)) == sum(g.n for g in plain if isinstance(g, Count))


def test_batch_json_by_hand_with_an_iova_past_2_64() -> None:
    # a TTBR1-style base: base + (index << shift) wraps as the per-finding path's & U64 does
    import numpy as np

    from iommuctl.check import FindingBatch

    b = FindingBatch("misaligned-leaf", 2, 0x4000_1000, 8, 0xFFFF_FFFF_FFE0_0000, 21,
                     np.array([0, 511], dtype=np.int64), np.array([0x743, 0xFFFF_FFFF_FFFF_FFFF], dtype=np.uint64),
                     ["output address ", np.array([0x1234, 0], dtype=np.uint64), " is \"odd\" ",
                      (np.array([1, 0]), ["a\\b", "c"])])
    lines = bytes(b.json_rows()).decode().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"rule": "misaligned-leaf", "address": "0x40001000", "level": 2, "index": 0, "raw": "0x743",
         "table": "0x40001000", "iova": "0xffffffffffe00000", "message": 'output address 0x1234 is "odd" c'},
        {"rule": "misaligned-leaf", "address": "0x40001ff8", "level": 2, "index": 511, "raw": "0xffffffffffffffff",
         "table": "0x40001000", "iova": "0x3fc00000",  # 0xffffffffffe00000 + (511 << 21) - 2^64
         "message": 'output address 0x0 is "odd" a\\b'},
    ]
    assert lines == [f.json_line().rstrip("\n") for f in b.findings()]


def test_kind_names_read_the_descriptor_only_where_declared() -> None:
    # check names the kind of a whole batch with one kind_name call per kind unless the format
    # says its names read the descriptor (kind_name_reads_raw): every other format's names must
    # not change with the raw bits
    import random

    from formats.base import INVALID, LEAF
    from iommuctl.domain import example_names, load_domain

    rng = random.Random(3)
    for name in example_names():
        fmt = load_domain(f"example:{name}").fmt
        if not fmt.has_tables or fmt.kind_name_reads_raw:
            continue
        bits = fmt.entry_size * 8
        for lvl in fmt.levels:
            for kind in (TABLE, LEAF, INVALID):
                names = set()
                for _ in range(200):
                    with contextlib.suppress(ValueError, ArithmeticError):  # a hostile entry may not decode
                        names.add(fmt.kind_name(rng.getrandbits(bits), lvl, kind))
                assert len(names) <= 1, (name, lvl.num, kind, names)


def test_next_table_vec_is_next_table_on_any_table_entry() -> None:
    # check judges table pointers with next_table_vec: it must say what next_table says for any
    # entry a format classifies as a table, junk included (an image read with the wrong format)
    import numpy as np

    from iommuctl.domain import example_names, load_domain

    rng = np.random.default_rng(9)
    for name in example_names():
        fmt = load_domain(f"example:{name}").fmt
        if not fmt.has_tables:
            continue
        for lvl in fmt.levels[:-1]:
            raw = np.frombuffer(rng.bytes(8 * 4000), dtype=np.uint64).copy()  # every bit random
            raw &= np.uint64((1 << (8 * fmt.entry_size)) - 1)
            raw = raw[np.asarray(fmt.classify_vec(raw, lvl)) == TABLE]
            got = np.asarray(fmt.next_table_vec(raw, lvl)).astype(np.uint64).tolist()
            assert got == [fmt.next_table(int(r), lvl) for r in raw.tolist()], (name, lvl.num)
