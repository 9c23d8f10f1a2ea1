"""`iommuctl formats` and `iommuctl examples`: what the tool knows and what it bundles."""

from __future__ import annotations

import click

from .cli import json_option
from .errors import UserError
from .output import plain_config


@click.command()
@click.argument("format_id", required=False)
@click.option("--drivers", "show_drivers", is_flag=True, help="The driver -> format table.")
@json_option
def formats(format_id: str | None, show_drivers: bool, as_json: bool) -> None:
    """The formats, their page sizes, levels and config keys with defaults."""
    import formats as registry

    from .output import emit_json, table

    if show_drivers:
        drv = registry.drivers()
        if as_json:
            for did, d in drv.items():
                emit_json({"driver": did, "format": d["format"], "config": plain_config(d.get("config", {})),
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
        rec = {"format": fid, "page_sizes": sizes, "levels": levels, "config": plain_config(cls.config_defaults),
               "description": cls.description, "kernel_source": cls.kernel_source}
        if as_json:
            emit_json(rec)
        else:
            rows.append([fid, size_list(sizes), levels,
                         " ".join(f"{k}={v}" for k, v in cls.config_defaults.items()), cls.description])
    if not as_json:
        table(None, ["format", "page sizes", "levels", "config (defaults)", "description"], rows)


def size_list(sizes: list[int]) -> str:
    """Page sizes for a table cell: a run of three or more consecutive powers of two as FIRST-LAST
    (amdv1 and virtio take every power of two: 40 or 52 sizes)."""
    from .numbers import fmt_size

    out: list[str] = []
    k = 0
    while k < len(sizes):
        j = k
        while j + 1 < len(sizes) and sizes[j + 1] == 2 * sizes[j]:
            j += 1
        if j - k >= 2:
            out.append(f"{fmt_size(sizes[k])}-{fmt_size(sizes[j])}")
        else:
            out += [fmt_size(x) for x in sizes[k:j + 1]]
        k = j + 1
    return " ".join(out)


@click.command()
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
