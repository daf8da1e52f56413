"""The `finetune` command: run the service (serve, worker, migrate, keys) and use it (submit, status, watch, download).

The client commands talk HTTP only, so they work against any deployment (`--url` / FINETUNE_URL).
"""

from __future__ import annotations

import typer

from . import admin, client

cli = typer.Typer(
    name="finetune",
    help="Self-hosted fine-tuning service: run it (serve, worker) and use it (submit, watch, download).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
admin.register(cli)
client.register(cli)


def main() -> None:
    cli()
