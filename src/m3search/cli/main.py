"""Entry point of the `m3search` command: the group, logging, and clean errors instead of tracebacks."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from m3search import __version__
from m3search.cli.options import quiet_option
from m3search.errors import M3SearchError

#: Modules that each define a click command or group named `command`.
COMMAND_MODULES = (
    "m3search.cli.demo",
    "m3search.cli.encode",
    "m3search.cli.eval",
    "m3search.cli.images",
    "m3search.cli.index",
    "m3search.cli.models",
    "m3search.cli.search",
    "m3search.cli.serve",
)


class _Group(click.Group):
    """Turns m3search errors into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except M3SearchError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="m3search")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@quiet_option
def cli(verbose: int) -> None:
    """Multilingual hybrid search with bge-m3: encode, index, search, serve and evaluate."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


for _module in COMMAND_MODULES:
    cli.add_command(importlib.import_module(_module).command)


def main() -> None:
    """Run the CLI."""
    cli(prog_name="m3search")


if __name__ == "__main__":
    main()
