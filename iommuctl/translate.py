"""`iommuctl translate`: per IOVA, the physical address and the page size of the PTE backing it
(iova_to_phys_length), one walk each for a few IOVAs, level by level with numpy for many."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from functools import partial
from itertools import chain
from typing import Any

import click

from .cli import check_iova, json_option, load, parse_iova
from .errors import UserError
from .writer import Job, write_chunks


def iter_iovas(args: tuple[str, ...]) -> Any:
    """The IOVAs of the arguments, `-` being stdin (one per line, `#` comments): a list, or a
    uint64 array when a large stdin was plain numbers (parsed with numpy, see bulk.py)."""
    out: list[int] = []
    for a in args:
        if a != "-":
            out.append(parse_iova(a))
            continue
        data = b"".join(block for block, _ in stdin_blocks())
        values = parse_lines(data, 1, bulk=len(data) >= BULK_INPUT)
        if args == ("-",):
            return values
        out.extend(int(v) for v in values)
    return out


def stdin_blocks(block: int = 1 << 21) -> Iterator[tuple[bytes, int]]:
    """stdin as blocks of whole lines, about `block` bytes each: (bytes, number of the first line)."""
    stream = getattr(sys.stdin, "buffer", None)  # a test's StringIO stdin has no bytes layer
    read = stream.read if stream is not None else (lambda n: sys.stdin.read(n).encode())
    rest, lineno = b"", 1
    while True:
        data = read(block)
        if not data:
            if rest:
                yield rest, lineno
            return
        data = rest + data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > 4 * block:
                raise UserError(f"<stdin> line {lineno}: longer than {4 * block} bytes, not an IOVA")
            rest = data
            continue
        yield data[:cut], lineno
        lineno += data.count(b"\n", 0, cut)
        rest = data[cut:]


def parse_lines(data: bytes, lineno: int, bulk: bool) -> Any:
    """The IOVAs of a block of stdin whose first line is number `lineno`: with `bulk`, plain
    numbers are parsed with numpy (a uint64 array); else, or for any other form, a list."""
    if bulk:
        from .bulk import parse_numbers

        arr = parse_numbers(data)
        if arr is not None:
            return arr
    lines = data.decode(errors="replace").splitlines()
    try:  # the common case, plain hex or decimal numbers, in one pass
        vals = [int(x, 0) for x in lines]
        if vals and (min(vals) < 0 or max(vals) >= 1 << 64):
            raise ValueError
        return vals
    except ValueError:
        pass
    out: list[int] = []
    for k, line in enumerate(lines):
        text = line.split("#", 1)[0].strip()
        if text:
            try:
                out.append(parse_iova(text))
            except UserError as e:
                raise UserError(f"<stdin> line {lineno + k}: {e}") from None
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


@click.command()
@click.argument("domain")
@click.argument("iovas", nargs=-1, required=True)
@click.option("--legacy", is_flag=True, help="Also show the legacy iova_to_phys result (0 on a miss).")
@json_option
def translate(domain: str, iovas: tuple[str, ...], legacy: bool, as_json: bool) -> None:
    """Per IOVA: phys and the page size of the PTE backing it (iova_to_phys_length).

    IOVA `-` reads IOVAs from stdin, one per line. Exit status 1 when some IOVA is unmapped.
    """

    dom = load(domain)
    if iovas == ("-",) and as_json:
        missed = _translate_stream(dom, legacy)
        if missed:
            sys.exit(1)
        return
    if _translate_values(dom, iter_iovas(iovas), legacy, as_json):
        sys.exit(1)


BATCH_MIN = 256  # below this, one walk per IOVA is cheaper than importing numpy


def _translate_values(dom: Any, values: Any, legacy: bool, as_json: bool) -> bool:
    """Translate and print a list (or array) of IOVAs: in batch, or one walk each for a few.
    Whether some IOVA is unmapped."""
    if len(values) >= BATCH_MIN:
        _check_iovas(dom, values)
        return _translate_batch(dom, values, legacy, as_json)
    for iova in values:
        check_iova(dom, iova)
    return _translate_each(dom, values, legacy, as_json)


def _translate_stream(dom: Any, legacy: bool) -> bool:
    """`translate --json DOMAIN -`: read, translate and write stdin a block of lines at a time,
    so memory stays bounded by the block however long the list. A bad line stops the command
    (exit status 2) after the rows of the blocks before it."""
    blocks = stdin_blocks()
    head = [b for b in (next(blocks, None), next(blocks, None)) if b is not None]
    if len(head) < 2 and (not head or len(head[0][0]) < BULK_INPUT):  # a short list: no numpy
        return _translate_values(dom, parse_lines(head[0][0], 1, bulk=False) if head else [], legacy, True)
    missed = False

    def rows() -> Iterator[Job]:
        nonlocal missed
        for data, lineno in chain(head, blocks):
            values = parse_lines(data, lineno, bulk=True)
            if not len(values):
                continue
            _check_iovas(dom, values)
            r = _walk(dom, values)
            missed |= bool((r.size == 0).any())
            legs = _legacy_values(dom, r) if legacy else None
            for k in range(0, len(r.iova), CHUNK):
                yield partial(_json_rows, r, slice(k, k + CHUNK), legs)

    write_chunks(rows())
    return missed


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
    r = _walk(dom, values)
    legs = _legacy_values(dom, r) if legacy else None
    if not as_json:
        _table_rows(r, legs)
    else:
        write_chunks(partial(_json_rows, r, slice(k, k + CHUNK), legs) for k in range(0, len(r.iova), CHUNK))
    return bool((r.size == 0).any())


CHUNK = 1 << 16


def _walk(dom: Any, values: Any) -> Any:
    import numpy as np

    from formats.base import WalkError
    from formats.batch import translate_many

    try:
        return translate_many(dom.walker, np.asarray(values, dtype=np.uint64))
    except WalkError as e:
        raise UserError(f"{dom.name}: {e}") from None


def _legacy_values(dom: Any, r: Any) -> Any:
    """What the format's legacy iova_to_phys returns per IOVA: its vector hook, or else its own
    scalar hook, one call each."""
    import numpy as np

    from formats.base import Translation

    vec = dom.fmt.legacy_iova_to_phys_vec(r.iova, r.phys, r.size, r.level, r.raw)
    if vec is not None:
        return vec
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


def _json_rows(r: Any, part: slice, legs: Any) -> Any:
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
    return rows.array()


def _table_rows(r: Any, legs: Any) -> None:
    from formats.base import prot_str

    from .numbers import fmt_size
    from .output import PLAIN_ROWS, plain_line, styled, table

    cols = ["iova", "phys", "size", "level", "prot", "raw"] + (["legacy"] if legs is not None else [])
    if len(r.iova) > PLAIN_ROWS or not styled():
        widths = _text_widths(r, legs)
        body = (partial(_text_rows, r, slice(k, k + CHUNK), legs, widths) for k in range(0, len(r.iova), CHUNK))
        write_chunks(chain([plain_line(cols, cols, widths, ("size",)).encode()], body))
        return

    size, prot = r.size.tolist(), r.prot.tolist()
    words = {p: prot_str(p) for p in set(prot)}
    rows = [[f"{v:#x}", f"{ph:#x}", fmt_size(sz), lv, words[pr], f"{rw:#x}"] if sz else
            [f"{v:#x}", "unmapped", "-", "-", "-", "-"]
            for v, ph, sz, lv, pr, rw in zip(r.iova.tolist(), r.phys.tolist(), size, r.level.tolist(), prot,
                                             r.raw.tolist())]
    if legs is not None:
        for row, leg in zip(rows, legs.tolist()):
            row.append(f"{leg:#x}")
    table(None, cols, rows, justify_right=("size",))


def _text_widths(r: Any, legs: Any) -> list[int]:
    """Column widths of the plain table (output.plain_table's, found on the arrays)."""
    import numpy as np

    from formats.base import prot_str

    from .numbers import fmt_size

    hit = r.size != 0
    miss = bool((~hit).any())
    hits = bool(hit.any())

    def hex_width(values: Any) -> int:
        return len(f"{int(values.max()):#x}") if len(values) else 0

    widths = [max(4, hex_width(r.iova)), max(4, hex_width(r.phys[hit]), 8 if miss else 0),
              max([4, 1 if miss else 0] + [len(fmt_size(int(v))) for v in np.unique(r.size[hit])]),
              max([5, 1 if miss else 0] + [len(str(int(v))) for v in np.unique(r.level[hit])]),
              max([4, 1 if miss else 0] + [len(prot_str(int(v))) for v in np.unique(r.prot[hit])])]
    if legs is not None:
        widths.append(max(3, hex_width(r.raw[hit]) if hits else 0, 1 if miss else 0))
    return widths


def _text_rows(r: Any, part: slice, legs: Any, widths: list[int]) -> Any:
    """The plain table's lines for r[part] (output.plain_table's layout)."""
    import numpy as np

    from .bulk import Rows, pow2_codes, small_codes
    from .numbers import fmt_size

    size = r.size[part]
    hit = size != 0
    miss = ~hit
    rows = Rows(len(size))
    rows.hex_cell(r.iova[part], widths[0])
    rows.text("  ")
    rows.hex_cell(r.phys[part], widths[1], hit)
    rows.text("unmapped".ljust(widths[1]) + "  ", miss)
    rows.text("  ", hit)
    codes, words = pow2_codes(size)
    rows.words(codes, [fmt_size(int(w)).rjust(widths[2]) for w in words], hit)
    rows.text("-".rjust(widths[2]), miss)
    rows.text("  ")
    codes, words = small_codes(r.level[part])
    rows.words(codes, [w.ljust(widths[3]) for w in words], hit)
    rows.text("-".ljust(widths[3]), miss)
    rows.text("  ")
    codes, words = _prot_words(r.prot[part])
    rows.words(codes, [w.ljust(widths[4]) for w in words], hit)
    rows.text("-".ljust(widths[4]), miss)
    rows.text("  ")
    if legs is None:
        rows.text("0x", hit)
        rows.hex(r.raw[part], hit)
        rows.text("-", miss)
    else:
        rows.hex_cell(r.raw[part], widths[5], hit)
        rows.text("-".ljust(widths[5]), miss)
        rows.text("  0x")
        rows.hex(np.asarray(legs[part], dtype=np.uint64))
    rows.text("\n")
    return rows.array()
