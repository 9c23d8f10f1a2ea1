"""The click front end: the command group, what the commands share, and the entry point.
Every command takes --json; errors are one line and exit status 2.

Each command lives in its own module, imported only when invoked, so a `translate` compiles
and loads nothing it does not use.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from .errors import UserError
from .numbers import parse_number

LAZY_COMMANDS = {  # every command lives in its own module, imported only when invoked
    "translate": "iommuctl.translate:translate",
    "walk": "iommuctl.walk:walk",
    "explain": "iommuctl.explain:explain",
    "build": "iommuctl.build:build",
    "formats": "iommuctl.catalog:formats",
    "examples": "iommuctl.catalog:examples",
    "unmap-sim": "iommuctl.sim.command:unmap_sim",
    "check": "iommuctl.check:check_cmd",
    "diff": "iommuctl.diff:diff_cmd",
    "reverse": "iommuctl.reverse:reverse_cmd",
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
        return getattr(importlib.import_module(mod), attr)  # type: ignore[no-any-return]


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
    shown = text if len(text) <= 40 else text[:37] + "..."  # one short line, whatever was fed in
    try:
        n = parse_number(text)
    except ValueError as e:
        raise UserError(f"IOVA {shown!r}: {str(e).replace(repr(text), 'it')}") from None
    if not 0 <= n < 1 << 64:
        raise UserError(f"IOVA {shown!r} is not a 64-bit address")
    return n


def check_iova(domain: Any, iova: int) -> None:
    if not domain.fmt.in_windows(iova):
        spaces = ", ".join(f"[{s:#x}, {e:#x})" for s, e in domain.windows)
        raise UserError(f"IOVA {iova:#x} is outside the input address space {spaces} of {domain.name}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: click's own errors and ours become one `iommuctl: error:` line, status 2."""
    if "_IOMMUCTL_COMPLETE" in os.environ:  # click's shell completion (see the README) lives in cli.main
        cli.main(args=argv, prog_name="iommuctl")
    try:
        # The context by hand, not cli.main: click's main turns EPIPE into exit 1 and Ctrl-C into
        # Abort; a reader closing the pipe early (`| head`) is a success here, Ctrl-C is 130.
        args = sys.argv[1:] if argv is None else list(argv)
        with cli.make_context("iommuctl", args) as ctx:
            rv = cli.invoke(ctx)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.Abort:
        sys.stderr.write("iommuctl: error: aborted\n")
        code = 2
    except click.ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `iommuctl` (click >= 8.2): the help, not an error line
            sys.stderr.write(e.format_message() + "\n")
        else:
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
