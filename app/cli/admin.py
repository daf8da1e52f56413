"""Commands that run the service: serve (API + worker), worker, migrate, keys."""

from __future__ import annotations

import os
import socket
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)
keys_cli = typer.Typer(help="API keys: with none active the API is open (single-user mode).", no_args_is_help=True)


def register(cli: typer.Typer) -> None:
    cli.command()(serve)
    cli.command()(worker)
    cli.command()(migrate)
    cli.add_typer(keys_cli, name="keys")


def serve(
    host: Annotated[str, typer.Option(help="address to bind; keep 127.0.0.1 unless API keys exist")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8000,
) -> None:
    """Start the API and one worker (migrating the database first); Ctrl-C stops both."""
    from app.serve import Supervisor

    raise typer.Exit(Supervisor(host=host, port=port).run())


def worker(
    queues: Annotated[str | None, typer.Option(help="queues to consume, comma separated (default FINETUNE_WORKER_QUEUES)")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="jobs run at once by this worker")] = 1,
    loglevel: Annotated[str | None, typer.Option(help="log level (default FINETUNE_LOG_LEVEL)")] = None,
) -> None:
    """Start a worker that runs jobs from the broker (and requeues jobs of dead workers)."""
    from app.settings import get_settings
    from worker.celery_app import get_celery_app

    settings = get_settings()
    names = queues or ",".join(settings.queues)
    argv = [
        "worker",
        f"--loglevel={loglevel or settings.log_level}",
        f"--concurrency={concurrency}",
        f"--queues={names}",
        "--pool=prefork",
        f"--hostname=finetune-{os.getpid()}@{socket.gethostname()}",
        # Startup handshakes between workers are useless here and cost seconds with the filesystem broker.
        "--without-mingle",
        "--without-gossip",
    ]
    if os.environ.get("FINETUNE_WORKER_PRELOAD", "1") != "0":
        # Import the training core (torch: seconds) once, before the pool forks: every pool process, and
        # every restarted one, starts with it loaded, so a job's start does not pay for it.
        import worker.training.trainer  # noqa: F401
    get_celery_app(settings).worker_main(argv)


def migrate() -> None:
    """Apply database migrations (alembic upgrade head)."""
    from app.migrate import upgrade_database
    from app.settings import get_settings

    url = get_settings().database_url
    upgrade_database(url)
    console.print(f"database migrated: {_safe_url(url)}")


def _safe_url(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def _service_call(fn):  # noqa: ANN001, ANN202
    """Run fn(session) in a unit of work; AppErrors become a message and exit 1."""
    from app.db import session_scope
    from app.errors import AppError

    try:
        with session_scope() as session:
            return fn(session)
    except AppError as exc:
        detail = exc.detail if isinstance(exc.detail, str) else "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in exc.detail
        )
        err.print(f"[red]error:[/red] {detail}")
        raise typer.Exit(1) from None


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="a label for the key")],
    owner: Annotated[str | None, typer.Option(help="who owns what the key creates (default: the name)")] = None,
) -> None:
    """Create a key and print its secret (shown only once)."""
    from app.keys.service import create_key

    key, secret = _service_call(lambda s: create_key(s, name, owner=owner))
    err.print(f"created key {key.id} (prefix {key.prefix}, owner {key.owner}); the secret is shown only once:")
    typer.echo(secret)


@keys_cli.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    from app.keys.service import list_keys

    rows = _service_call(lambda s: [(k.id, k.prefix, k.name, k.owner, k.created_at, k.last_used_at, k.revoked_at)
                                    for k in list_keys(s)])
    table = Table("id", "prefix", "name", "owner", "created", "last used", "revoked")
    for row in rows:
        table.add_row(*[("" if v is None else str(v)[:19]) for v in row])
    console.print(table)


@keys_cli.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="key id or prefix")]) -> None:
    """Revoke a key by id or prefix."""
    from app.keys.service import revoke_key

    row = _service_call(lambda s: revoke_key(s, key))
    console.print(f"revoked {row.id} ({row.prefix})")
