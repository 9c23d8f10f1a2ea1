"""`iommuctl explain`: the walk of one IOVA, every table entry read and what it means."""

from __future__ import annotations

import sys
from typing import Any

import click

from .cli import check_iova, json_option, load, parse_iova
from .errors import UserError
from .translate import translation_row


@click.command()
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
