"""The click front end. Every command takes --json; errors are one line and exit status 2.

Commands living in other modules are imported only when invoked, so a `translate` pays for
nothing it does not use.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from .errors import UserError
from .numbers import parse_number

LAZY_COMMANDS = {
    "unmap-sim": "iommuctl.sim.command:unmap_sim",
    "check": "iommuctl.check:check_cmd",
    "diff": "iommuctl.analysis:diff_cmd",
    "reverse": "iommuctl.analysis:reverse_cmd",
}
CORE_ORDER = ["translate", "walk", "explain", "build", "unmap-sim", "check", "diff", "reverse", "formats",
              "examples"]


class Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(self.commands) | set(LAZY_COMMANDS)
        return sorted(names, key=lambda n: CORE_ORDER.index(n) if n in CORE_ORDER else 99)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = LAZY_COMMANDS.get(name)
        if target is None:
            return None
        mod, attr = target.split(":")
        try:
            cmd = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError):
            return None
        return cmd  # type: ignore[no-any-return]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="iommuctl", message="iommuctl %(version)s")
def cli() -> None:
    """Decode Linux IOMMU page-table images as the kernel lays them out.

    DOMAIN is a domain YAML file (see the README) or example:NAME for a bundled one.
    """


json_option = click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")


def load(spec: str) -> Any:
    from .domain import load_domain

    return load_domain(spec)


def parse_iova(text: str) -> int:
    try:
        n = parse_number(text)
    except ValueError as e:
        raise UserError(f"IOVA {text!r}: {e}") from None
    if not 0 <= n < 1 << 64:
        raise UserError(f"IOVA {text!r} is not a 64-bit address")
    return n


def check_iova(domain: Any, iova: int) -> None:
    if not domain.fmt.in_windows(iova):
        spaces = ", ".join(f"[{s:#x}, {e:#x})" for s, e in domain.windows)
        raise UserError(f"IOVA {iova:#x} is outside the input address space {spaces} of {domain.name}")


def iter_iovas(args: tuple[str, ...]) -> Any:
    """The IOVAs of the arguments, `-` being stdin (one per line, `#` comments): a list, or a
    uint64 array when a large stdin was plain numbers (parsed with numpy, see bulk.py)."""
    out: list[int] = []
    for a in args:
        if a != "-":
            out.append(parse_iova(a))
            continue
        stream = getattr(sys.stdin, "buffer", None)  # a test's StringIO stdin has no bytes layer
        data = stream.read() if stream is not None else sys.stdin.read().encode()
        if len(data) >= BULK_INPUT and args == ("-",):
            from .bulk import parse_numbers

            arr = parse_numbers(data)
            if arr is not None:
                return arr
        lines = data.decode(errors="replace").splitlines()
        try:  # the common case, plain hex or decimal numbers, in one pass
            vals = [int(x, 0) for x in lines]
            if vals and (min(vals) < 0 or max(vals) >= 1 << 64):
                raise ValueError
            out.extend(vals)
            continue
        except ValueError:
            pass
        for lineno, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if text:
                try:
                    out.append(parse_iova(text))
                except UserError as e:
                    raise UserError(f"<stdin> line {lineno}: {e}") from None
    return out


BULK_INPUT = 1 << 14  # below this many bytes of stdin, numpy's import costs more than it saves


def translation_row(t: Any, legacy: int | None) -> dict[str, Any]:
    from formats.base import PHYS_ADDR_MAX, prot_str

    row: dict[str, Any] = {"iova": f"{t.iova:#x}", "mapped": t.mapped}
    if t.mapped:
        row.update(phys=f"{t.phys:#x}", size=t.size, level=t.level, prot=prot_str(t.prot),
                   raw=f"{t.raw:#x}", entry=f"{t.entry:#x}")
    else:
        row.update(phys=f"{PHYS_ADDR_MAX:#x}", size=0)
    if legacy is not None:
        row["legacy"] = f"{legacy:#x}"
    return row


@cli.command()
@click.argument("domain")
@click.argument("iovas", nargs=-1, required=True)
@click.option("--legacy", is_flag=True, help="Also show the legacy iova_to_phys result (0 on a miss).")
@json_option
def translate(domain: str, iovas: tuple[str, ...], legacy: bool, as_json: bool) -> None:
    """Per IOVA: phys and the page size of the PTE backing it (iova_to_phys_length).

    IOVA `-` reads IOVAs from stdin, one per line. Exit status 1 when some IOVA is unmapped.
    """

    dom = load(domain)
    values = iter_iovas(iovas)
    if len(values) >= BATCH_MIN:
        _check_iovas(dom, values)
        missed = _translate_batch(dom, values, legacy, as_json)
    else:
        for iova in values:
            check_iova(dom, iova)
        missed = _translate_each(dom, values, legacy, as_json)
    if missed:
        sys.exit(1)


BATCH_MIN = 256  # below this, one walk per IOVA is cheaper than importing numpy


def _check_iovas(dom: Any, values: Any) -> None:
    import numpy as np

    arr = np.asarray(values, dtype=np.uint64)
    inside = np.zeros(len(arr), dtype=bool)
    for s, e in dom.windows:
        inside |= (arr >= np.uint64(s)) & (arr <= np.uint64(e - 1))
    if not inside.all():
        check_iova(dom, int(arr[int(np.flatnonzero(~inside)[0])]))


def _translate_each(dom: Any, values: list[int], legacy: bool, as_json: bool) -> bool:
    from .numbers import fmt_size
    from .output import emit_json, table

    rows = []
    missed = False
    for iova in values:
        t = dom.translate(iova)
        missed |= not t.mapped
        row = translation_row(t, dom.fmt.legacy_iova_to_phys(iova, t) if legacy else None)
        if as_json:
            emit_json(row)
        else:
            rows.append(row)
    if not as_json:
        cols = ["iova", "phys", "size", "level", "prot", "raw"] + (["legacy"] if legacy else [])
        table(None, cols, ([r["iova"], r["phys"] if r["mapped"] else "unmapped",
                            fmt_size(r["size"]) if r["mapped"] else "-", r.get("level", "-"),
                            r.get("prot", "-"), r.get("raw", "-")] + ([r["legacy"]] if legacy else [])
                           for r in rows), justify_right=("size",))
    return missed


def _translate_batch(dom: Any, values: Any, legacy: bool, as_json: bool) -> bool:
    """Many IOVAs: translated level by level with numpy; JSON rows formatted with numpy too
    (bulk.Rows), in chunks so memory stays small and is reused."""
    import numpy as np

    from formats.base import WalkError
    from formats.batch import translate_many

    try:
        r = translate_many(dom.walker, np.asarray(values, dtype=np.uint64))
    except WalkError as e:
        raise UserError(f"{dom.name}: {e}") from None
    legs = _legacy_values(dom, r) if legacy else None
    if not as_json:
        _table_rows(r, legs)
    else:
        write_overlapped(_json_rows(r, slice(k, k + CHUNK), legs) for k in range(0, len(r.iova), CHUNK))
    return bool((r.size == 0).any())


CHUNK = 1 << 16


def write_overlapped(chunks: Any) -> None:
    """Write each chunk of bytes to stdout while the next is made: the write (a syscall, no GIL)
    runs in a thread, so the consumer's pace and our formatting overlap."""
    out = getattr(sys.stdout, "buffer", None)
    if out is None:  # a test's text stream
        for c in chunks:
            sys.stdout.write(c.decode())
        return
    import threading

    sys.stdout.flush()
    widen_pipe(sys.stdout)
    writer: threading.Thread | None = None
    failed: list[BaseException] = []

    def put(data: bytes) -> None:
        try:
            out.write(data)
        except BaseException as e:  # re-raised in the main thread (a closed pipe, say)
            failed.append(e)

    for c in chunks:
        if writer is not None:
            writer.join()
        if failed:
            raise failed[0]
        writer = threading.Thread(target=put, args=(c,))
        writer.start()
    if writer is not None:
        writer.join()
    if failed:
        raise failed[0]


def widen_pipe(stream: Any) -> None:
    """A pipe on stdout takes 1 MiB at a time instead of 64 KiB: a million rows are 150 MB, and
    at 64 KiB the reader and writer spend most of the time waking each other (Linux only)."""
    try:
        import fcntl
        import stat

        fd = stream.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, ValueError, AttributeError, ImportError):  # not a real fd, or the limit is lower
        pass


def _legacy_values(dom: Any, r: Any) -> Any:
    """What the format's legacy iova_to_phys returns per IOVA (its own hook, one call each)."""
    import numpy as np

    from formats.base import Translation

    legacy_of = dom.fmt.legacy_iova_to_phys
    cols = (r.iova.tolist(), r.phys.tolist(), r.size.tolist(), r.level.tolist(), r.prot.tolist(),
            r.raw.tolist(), r.entry.tolist())
    return np.array([legacy_of(v, Translation(v, ph, sz, lv, pr, rw, en) if sz else Translation(v))
                     for v, ph, sz, lv, pr, rw, en in zip(*cols)], dtype=np.uint64)


def _prot_words(prot: Any) -> tuple[Any, list[str]]:
    from formats.base import prot_str

    from .bulk import small_codes

    codes, words = small_codes(prot)
    return codes, [prot_str(int(w)) for w in words]


def _json_rows(r: Any, part: slice, legs: Any) -> bytes:
    """The translate JSON rows of r[part], in the shape translation_row gives."""
    from .bulk import Rows, pow2_codes, small_codes

    size = r.size[part]
    n = len(size)
    hit = size != 0
    rows = Rows(n)
    rows.text('{"iova": "0x')
    rows.hex(r.iova[part])
    rows.words(hit.astype(int), ['", "mapped": false, "phys": "0x', '", "mapped": true, "phys": "0x'])
    rows.hex(r.phys[part])  # PHYS_ADDR_MAX on a miss
    rows.text('", "size": ')
    rows.words(*pow2_codes(size))
    rows.text(', "level": ', hit)
    rows.words(*small_codes(r.level[part]), where=hit)
    rows.text(', "prot": "', hit)
    rows.words(*_prot_words(r.prot[part]), where=hit)
    rows.text('", "raw": "0x', hit)
    rows.hex(r.raw[part], hit)
    rows.text('", "entry": "0x', hit)
    rows.hex(r.entry[part], hit)
    rows.text('"', hit)
    if legs is not None:
        rows.text(', "legacy": "0x')
        rows.hex(legs[part])
        rows.text('"')
    rows.text("}\n")
    return rows.tobytes()


def _table_rows(r: Any, legs: Any) -> None:
    from formats.base import prot_str

    from .numbers import fmt_size
    from .output import table

    size, prot = r.size.tolist(), r.prot.tolist()
    words = {p: prot_str(p) for p in set(prot)}
    rows = [[f"{v:#x}", f"{ph:#x}", fmt_size(sz), lv, words[pr], f"{rw:#x}"] if sz else
            [f"{v:#x}", "unmapped", "-", "-", "-", "-"]
            for v, ph, sz, lv, pr, rw in zip(r.iova.tolist(), r.phys.tolist(), size, r.level.tolist(), prot,
                                             r.raw.tolist())]
    if legs is not None:
        for row, leg in zip(rows, legs.tolist()):
            row.append(f"{leg:#x}")
    table(None, ["iova", "phys", "size", "level", "prot", "raw"] + (["legacy"] if legs is not None else []), rows,
          justify_right=("size",))


@cli.command()
@click.argument("domain")
@click.option("--range", "range_", metavar="R", help="START:END (exclusive) or START+LENGTH.")
@click.option("--leaves", is_flag=True, help="One row per leaf instead of coalesced runs.")
@click.option("--holes", is_flag=True, help="Also list the unmapped gaps.")
@click.option("--summary", is_flag=True, help="Only the totals.")
@click.option("--phys-range", metavar="R",
              help="Only leaves whose output overlaps the physical range R (START:END or START+LENGTH). A table "
                   "entry does not bound its subtree's outputs, so every leaf table in --range is still read; "
                   "each is filtered with one numpy mask.")
@click.option("--aliases", is_flag=True,
              help="Physical ranges mapped at more than one IOVA, and page tables the domain itself maps.")
@json_option
def walk(domain: str, range_: str | None, leaves: bool, holes: bool, summary: bool, as_json: bool,
         phys_range: str | None = None, aliases: bool = False) -> None:
    """The leaves in a range, coalesced into runs (IOVA- and PA-contiguous, same size and prot)."""
    from formats.base import prot_str

    from .numbers import fmt_size
    from .output import emit_json, table
    from .walk import Run, Summary, leaf_runs, parse_range, summarise, with_holes

    dom = load(domain)
    start, end = parse_range(range_, dom)
    view: Any = dom  # walk --phys-range: the domain seen through a physical window (iommuctl.analysis)
    if phys_range is not None or aliases:
        from .analysis import PhysWindow, parse_phys_range, print_aliases

        window = parse_phys_range(phys_range) if phys_range is not None else None
        if aliases:
            if leaves or holes or summary:
                raise UserError("--aliases does not combine with --leaves, --holes or --summary")
            print_aliases(dom, start, end, as_json, window)
            return
        if holes:
            raise UserError("--holes does not combine with --phys-range")
        assert window is not None
        view = PhysWindow(dom, *window)
    if summary:
        total = summarise(view, start, end)
    else:
        total = Summary()
        rows: list[list[Any]] = []
        lines: list[str] = []  # JSON rows written as text in chunks: a JSON encoder call per run costs 3x
        prot_text: dict[int, str] = {}
        items: Any = leaf_runs(view, start, end, coalesce=not leaves)
        if holes:
            items = with_holes(items, start, end)
        for item in items:
            if isinstance(item, Run):
                total.runs += 1
                total.leaves[item.pgsize] += item.count
                total.mapped += max(0, min(item.end, end) - max(item.iova, start))
                pt = prot_text.get(item.prot) or prot_text.setdefault(item.prot, prot_str(item.prot))
                if as_json:
                    lines.append(f'{{"iova": "{item.iova:#x}", "end": "{item.end:#x}", "phys": "{item.phys:#x}", '
                                 f'"pgsize": {item.pgsize}, "count": {item.count}, "prot": "{pt}", '
                                 f'"level": {item.level}}}')
                else:
                    rows.append([f"{item.iova:#x}", f"{item.end:#x}", f"{item.phys:#x}", fmt_size(item.pgsize),
                                 item.count, item.level, pt])
            else:
                if as_json:
                    lines.append(f'{{"iova": "{item[0]:#x}", "end": "{item[1]:#x}", "hole": true}}')
                else:
                    rows.append([f"{item[0]:#x}", f"{item[1]:#x}", "hole", "", "", "", ""])
            if len(lines) >= 4096:
                sys.stdout.write("\n".join(lines) + "\n")
                lines.clear()
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
        if not as_json:
            table(None, ["iova", "end", "phys", "pgsize", "count", "level", "prot"], rows,
                  justify_right=("pgsize", "count"))
    total.mapped -= getattr(view, "excess", 0)  # --phys-range: bytes of straddling leaves outside the window
    leaves_by_size = {str(k): v for k, v in sorted(total.leaves.items())}
    if as_json:
        emit_json({"summary": {"mapped": total.mapped, "runs": total.runs, "leaves": leaves_by_size,
                               "range": {"iova": f"{start:#x}", "end": f"{end:#x}"}}})
    else:
        from .output import say

        sizes = ", ".join(f"{fmt_size(int(k))}: {v}" for k, v in leaves_by_size.items()) or "none"
        say(f"mapped {total.mapped:#x} bytes ({fmt_size(total.mapped)}) in {total.runs} runs; "
                        f"leaves {sizes}; range [{start:#x}, {end:#x})")


@cli.command()
@click.argument("domain")
@click.argument("iova")
@json_option
def explain(domain: str, iova: str, as_json: bool) -> None:
    """The walk of one IOVA step by step: every table entry read and what it means."""
    from formats.base import Step, WalkError

    from .output import emit_json, say, table

    dom = load(domain)
    addr = parse_iova(iova)
    check_iova(dom, addr)
    steps: list[Step] = []
    try:
        t = dom.walker.translate(addr, steps)
    except WalkError as e:
        t = None
        err = str(e)
    if as_json:
        for s in steps:
            emit_json({"level": s.level, "table": f"{s.table:#x}", "index": s.index, "entry": f"{s.entry:#x}",
                       "raw": f"{s.raw:#x}", "kind": s.kind, "fields": _jsonable(s.fields), "note": s.note})
    else:
        table(f"{dom.name}: walk of {addr:#x} ({dom.fmt.name})",
              ["level", "table", "index", "entry", "raw", "kind", "fields", "meaning"],
              ([s.level, f"{s.table:#x}", s.index, f"{s.entry:#x}", f"{s.raw:#x}", s.kind,
                " ".join(f"{k}={_fieldtext(v)}" for k, v in s.fields.items()), s.note] for s in steps))
    if t is None:
        raise UserError(f"{dom.name}: walking iova {addr:#x}: {err}")
    row = translation_row(t, dom.fmt.legacy_iova_to_phys(addr, t))
    if as_json:
        emit_json(row)
    else:
        from .numbers import fmt_size

        if t.mapped:
            say(f"{addr:#x} -> {t.phys:#x}, page size {fmt_size(t.size)} (level {t.level}, "
                            f"prot {row['prot']}); legacy iova_to_phys {row['legacy']}")
        else:
            say(f"{addr:#x} is not mapped: iova_to_phys_length gives {row['phys']}, size 0; "
                            f"legacy iova_to_phys {row['legacy']}")
    if not t.mapped:
        sys.exit(1)


def _fieldtext(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int) and v > 9:
        return f"{v:#x}"
    return str(v)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, bool | int | str | float) or v is None else str(v)) for k, v in d.items()}


@cli.command()
@click.argument("domain")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Raw image of the built tables.")
@click.option("--yaml", "yaml_out", type=click.Path(dir_okay=False), help="Write the domain file here.")
@json_option
def build(domain: str, out: str, yaml_out: str | None, as_json: bool) -> None:
    """Build the tables of a `mappings:` domain as the kernel's map would, into OUT.bin."""
    from pathlib import Path

    import yaml

    from .output import emit_json

    dom = load(domain)
    if dom.arena is None:
        raise UserError(f"{dom.name}: build needs a domain described by `mappings:` with no root")
    image = dom.arena.image()
    try:
        Path(out).write_bytes(image)
    except OSError as e:
        raise UserError(f"{out}: {e.strerror or e}") from None
    doc: dict[str, Any] = {"format": dom.fmt.name, "config": _plain(dom.fmt.config)}
    if len(dom.roots) == 1:
        doc["root"] = f"{dom.roots[0]:#x}"
    else:
        doc["roots"] = [f"{r:#x}" for r in dom.roots]
    out_ref = os.path.relpath(out, os.path.dirname(os.path.abspath(yaml_out))) if yaml_out else out
    doc["memory"] = [{"file": out_ref, "base": f"{dom.arena.base:#x}"}]
    if dom.description:
        doc["description"] = dom.description
    text = yaml.safe_dump(doc, sort_keys=False)
    if yaml_out:
        try:
            Path(yaml_out).write_text(text)
        except OSError as e:
            raise UserError(f"{yaml_out}: {e.strerror or e}") from None
    if as_json:
        emit_json({"image": out, "bytes": len(image), "base": f"{dom.arena.base:#x}",
                   "roots": [f"{r:#x}" for r in dom.roots], "tables": len(dom.arena.allocations),
                   "chunks": len(dom.chunks), "yaml": yaml_out})
    elif not yaml_out:
        sys.stdout.write(text)
    else:
        sys.stderr.write(f"wrote {out} ({len(image)} bytes, {len(dom.arena.allocations)} tables) and {yaml_out}\n")


def _plain(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


@cli.command()
@click.argument("format_id", required=False)
@click.option("--drivers", "show_drivers", is_flag=True, help="The driver -> format table.")
@json_option
def formats(format_id: str | None, show_drivers: bool, as_json: bool) -> None:
    """The formats, their page sizes, levels and config keys with defaults."""
    import formats as registry

    from .numbers import fmt_size
    from .output import emit_json, table

    if show_drivers:
        drv = registry.drivers()
        if as_json:
            for did, d in drv.items():
                emit_json({"driver": did, "format": d["format"], "config": _plain(d.get("config", {})),
                           "description": d.get("description", "")})
        else:
            table(None, ["driver", "format", "config", "description"],
                  ([did, d["format"], " ".join(f"{k}={v}" for k, v in d.get("config", {}).items()),
                    d.get("description", "")] for did, d in drv.items()))
        return
    ids = [format_id] if format_id else list(registry.FORMATS)
    rows = []
    for fid in ids:
        try:
            cls = registry.get_format(fid)
        except registry.UnknownFormat:
            raise UserError(f"unknown format {fid!r} (known: {', '.join(registry.FORMATS)})") from None
        except (ImportError, AttributeError):
            if format_id:
                raise UserError(f"format {fid!r} is not available in this build") from None
            continue
        try:
            inst = cls(dict(cls.config_defaults))
            sizes, levels = list(inst.page_sizes), len(inst.levels) if cls.has_tables else 0
        except Exception:  # a format whose defaults need a required key still lists its keys
            sizes, levels = [], 0
        rec = {"format": fid, "page_sizes": sizes, "levels": levels, "config": _plain(cls.config_defaults),
               "description": cls.description, "kernel_source": cls.kernel_source}
        if as_json:
            emit_json(rec)
        else:
            rows.append([fid, " ".join(fmt_size(s) for s in sizes), levels,
                         " ".join(f"{k}={v}" for k, v in cls.config_defaults.items()), cls.description])
    if not as_json:
        table(None, ["format", "page sizes", "levels", "config (defaults)", "description"], rows)


@cli.command()
@json_option
def examples(as_json: bool) -> None:
    """The bundled example domains (use them as example:NAME)."""
    import yaml

    import formats as registry

    from .domain import EXAMPLES, example_names
    from .output import emit_json, table

    rows = []
    for name in example_names():
        doc = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text()) or {}
        fid = doc.get("format")
        if fid is None and "driver" in doc:
            fid = (registry.driver(str(doc["driver"])) or {}).get("format")
        rec = {"name": name, "format": fid, "description": doc.get("description", "")}
        if as_json:
            emit_json(rec)
        else:
            rows.append([name, fid, rec["description"]])
    if not as_json:
        table(None, ["name", "format", "description"], rows)


def main(argv: list[str] | None = None) -> None:
    """Entry point: click's own errors and ours become one `iommuctl: error:` line, status 2."""
    try:
        rv = cli.main(args=argv, prog_name="iommuctl", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.Abort:
        sys.stderr.write("iommuctl: error: aborted\n")
        code = 2
    except click.ClickException as e:
        sys.stderr.write(f"iommuctl: error: {e.format_message()}\n")
        code = 2
    except UserError as e:
        sys.stderr.write(f"iommuctl: error: {e}\n")
        code = 2
    except BrokenPipeError:
        _quiet_stdout()
        code = 0
    except KeyboardInterrupt:
        code = 130
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except Exception as e:  # never a traceback; IOMMUCTL_DEBUG=1 shows it
        if os.environ.get("IOMMUCTL_DEBUG"):
            raise
        sys.stderr.write(f"iommuctl: error: internal error ({type(e).__name__}: {e}); "
                         f"rerun with IOMMUCTL_DEBUG=1 and report it\n")
        code = 2
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    sys.exit(code)


def _quiet_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
