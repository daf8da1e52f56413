"""Commands for people using a running service, over HTTP: submit, jobs, status, watch, events, cancel,
download, workers."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table

console = Console()
err = Console(stderr=True)
TERMINAL = ("succeeded", "failed", "cancelled")
DEFAULT_URL = "http://127.0.0.1:8000"

UrlOpt = Annotated[str, typer.Option("--url", envvar="FINETUNE_URL", help="the service's base URL")]
KeyOpt = Annotated[str | None, typer.Option("--key", envvar="FINETUNE_API_KEY", help="API key (when keys exist)")]


def register(cli: typer.Typer) -> None:
    cli.command()(submit)
    cli.command()(jobs)
    cli.command()(status)
    cli.command()(watch)
    cli.command()(events)
    cli.command()(cancel)
    cli.command()(download)
    cli.command()(workers)


class Api:
    """A thin HTTP client that turns failures into a clear message and exit status 1."""

    def __init__(self, url: str, key: str | None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(30.0, connect=5.0))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError:
            err.print(f"[red]error:[/red] the server isn't running at {self.url} (start it with `finetune serve`)")
            raise typer.Exit(1) from None
        except httpx.TimeoutException:
            err.print(f"[red]error:[/red] {self.url} did not answer in time")
            raise typer.Exit(1) from None

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        response.read()
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        err.print(f"[red]error {response.status_code}:[/red] {format_detail(detail)}")
        raise typer.Exit(1)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._errors():
            return self._check(self.http.request(method, path, **kwargs)).json()

    def download(self, path: str, target: Path | None) -> Path:
        with self._errors(), self.http.stream("GET", path, timeout=httpx.Timeout(300.0, connect=5.0)) as response:
            self._check(response)
            if target is None or target.is_dir():
                name = _filename(response.headers.get("content-disposition", "")) or "checkpoint.tar"
                target = (target or Path.cwd()) / name
            tmp = target.with_name(f".{target.name}.part")
            total = int(response.headers.get("content-length") or 0) or None
            with tmp.open("wb") as out, Progress(TextColumn("{task.description}"), BarColumn(),
                                                 TimeRemainingColumn(), console=err, transient=True) as bar:
                task = bar.add_task(f"downloading {target.name}", total=total)
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    bar.advance(task, len(chunk))
            tmp.replace(target)  # complete files only
        return target


def _filename(disposition: str) -> str | None:
    match = re.search(r'filename="?([^";]+)"?', disposition)
    name = Path(match.group(1)).name if match else None
    return name if name and name not in (".", "..") else None


def format_detail(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI-style validation errors: field and reason
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []) if p != 'body')}: {d.get('msg')}" if isinstance(d, dict) else str(d)
            for d in detail
        )
    return str(detail)


# --- commands -------------------------------------------------------------------------------------


def submit(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a job spec (JSON)")],
    watch_: Annotated[bool, typer.Option("--watch", help="follow the job until it ends")] = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Submit a job spec; prints the job id."""
    try:
        body = json.loads(spec.read_text())
    except (OSError, ValueError) as exc:
        err.print(f"[red]error:[/red] {spec} is not valid JSON: {exc}")
        raise typer.Exit(1) from None
    api = Api(url, key)
    job = api.request("POST", "/jobs", json=body)
    err.print(f"submitted job {job['id']} ({job['status']})")
    typer.echo(job["id"])
    if watch_:
        raise typer.Exit(follow(api, job["id"]))


def status(job: Annotated[str, typer.Argument(help="job id")], url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Show a job's status, progress, metrics and outcome."""
    console.print(job_table(Api(url, key).request("GET", f"/jobs/{job}")))


def watch(job: Annotated[str, typer.Argument(help="job id")], url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Follow a job with a live progress bar until it ends, then summarise it. Exit 0 only if it succeeded."""
    raise typer.Exit(follow(Api(url, key), job))


def jobs(
    status_: Annotated[str | None, typer.Option("--status", help="only jobs in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 20,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """List jobs, newest first: id, name, status, progress and latest metrics."""
    api, shown, cursor = Api(url, key), [], None
    while len(shown) < limit:  # the API pages by at most 200
        params: dict[str, Any] = {"limit": min(200, limit - len(shown))}
        if status_:
            params["status"] = status_
        if cursor:
            params["cursor"] = cursor
        page = api.request("GET", "/jobs", params=params)
        shown.extend(page["items"])
        if not (cursor := page.get("next_cursor")):
            break
    rows = [(job["id"], job.get("name") or "", job["status"],
             f"{(job.get('progress') or {}).get('step', 0)}/{(job.get('progress') or {}).get('total_steps') or '?'}",
             job["created_at"][:19].replace("T", " "), _metrics_text(job.get("latest_metrics"))) for job in shown]
    _print_rows(["id", "name", "status", "progress", "created (UTC)", "metrics"], rows, "no jobs")


def events(
    job: Annotated[str, typer.Argument(help="job id")],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Print a job's events, oldest first: time, level, type and message."""
    api, after = Api(url, key), 0
    while True:
        page = api.request("GET", f"/jobs/{job}/events", params={"after": after, "limit": 1000})
        for event in page:
            when = event["created_at"][:23].replace("T", " ")
            typer.echo(f"{when}  {event['level']:<7} {event['type']:<22} {event['message']}")
        if len(page) < 1000:
            break
        after = page[-1]["id"]


def cancel(job: Annotated[str, typer.Argument(help="job id")], url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Cancel a job: a queued one at once, a running one at its next step."""
    found = Api(url, key).request("POST", f"/jobs/{job}/cancel")
    if found["status"] == "cancelled":
        err.print(f"job {found['id']} cancelled")
    else:
        err.print(f"job {found['id']} is {found['status']}; it stops at its next step (`finetune watch {found['id']}`)")


def download(
    job: Annotated[str, typer.Argument(help="job id")],
    checkpoint: Annotated[str, typer.Option(help="checkpoint id, best or last")] = "best",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="file or folder to write to")] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Download a checkpoint as a tar archive (model.safetensors, config.json, spec.json)."""
    target = Api(url, key).download(f"/jobs/{job}/checkpoints/{checkpoint}/download", output)
    typer.echo(str(target))


def workers(url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Live workers: name, queues, concurrency and last heartbeat."""
    rows = [(w["name"], ",".join(w["queues"]), str(w["concurrency"]), w["last_seen_at"][:19].replace("T", " "))
            for w in Api(url, key).request("GET", "/workers")]
    _print_rows(["name", "queues", "concurrency", "last seen (UTC)"], rows, "no live workers")


# --- presentation ---------------------------------------------------------------------------------


def _print_rows(header: list[str], rows: list[tuple[str, ...]], empty: str) -> None:
    """A table on a terminal (the first column, an id, never wrapped); piped, one tab-separated line per row
    for scripts (as `gh` does)."""
    if not console.is_terminal:
        for row in rows:
            typer.echo("\t".join(row))
        return
    table = Table(Column(header[0], no_wrap=True), *header[1:])
    for row in rows:
        table.add_row(*row)
    console.print(table if rows else empty)


def _metrics_text(metrics: dict[str, float] | None) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in sorted((metrics or {}).items()) if isinstance(v, (int, float)))


def job_table(job: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None)
    progress = job.get("progress") or {}
    rows = [
        ("job", f"{job['id']}" + (f" ({job['name']})" if job.get("name") else "")),
        ("status", job["status"]),
        ("attempts", str(job.get("attempts", ""))),
        ("progress", f"step {progress.get('step', 0)}/{progress.get('total_steps') or '?'}, "
                     f"epoch {progress.get('epoch', 0):.2f}"),
        ("metrics", _metrics_text(job.get("latest_metrics"))),
    ]
    if job.get("error"):
        rows.append(("error", f"{job['error'].get('type')}: {job['error'].get('message')}"))
    result = job.get("result") or {}
    if result:
        rows.append(("result", _metrics_text(result.get("metrics"))))
        rows.append(("best checkpoint", str(result.get("best_checkpoint_id"))))
        rows.append(("final checkpoint", str(result.get("final_checkpoint_id"))))
    for name, value in rows:
        table.add_row(f"[bold]{name}[/bold]", value)
    return table


def follow(api: Api, job_id: str, interval: float = 0.5) -> int:
    """Poll the job and draw progress until it ends; returns the exit status (0 if it succeeded)."""
    bar = Progress(TextColumn("[bold]{task.fields[status]}[/bold]"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("epoch {task.fields[epoch]:.2f}"), TextColumn("{task.fields[metrics]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=err)
    task = bar.add_task(job_id, total=None, status="queued", epoch=0.0, metrics="")
    with Live(bar, console=err, transient=not err.is_terminal, refresh_per_second=4):
        while True:
            job = api.request("GET", f"/jobs/{job_id}")
            progress = job.get("progress") or {}
            metrics = job.get("latest_metrics") or {}
            shown = {k: v for k, v in metrics.items() if k in ("train_loss", "val_loss", "val_accuracy")}
            bar.update(task, completed=progress.get("step") or 0, total=progress.get("total_steps") or None,
                       status=job["status"], epoch=progress.get("epoch") or 0.0, metrics=_metrics_text(shown))
            if job["status"] in TERMINAL:
                break
            time.sleep(interval)
    console.print(job_table(job))
    return 0 if job["status"] == "succeeded" else 1
