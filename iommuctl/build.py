"""`iommuctl build`: the tables of a `mappings:` domain as the kernel's map writes them."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .cli import json_option, load
from .errors import UserError
from .output import plain_config


@click.command()
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
    doc: dict[str, Any] = {"format": dom.fmt.name, "config": plain_config(dom.fmt.config)}
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
