"""`mailer send` and `mailer report`."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Annotated, Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from ..campaigns import campaign_for_send, find_campaign
from ..checks import Check
from ..errors import ExitCode, InputError, MailerError
from ..lock import WorkspaceLock
from ..runlog import RunLog
from ..runner import RunReport, SendPlan, campaign_report, options_from_config, run_campaign
from ..send import Event
from . import AppState, app, state
from .options import (
    BatchSizeOpt, ConnectionsOpt, DryRunSendOpt, JsonOpt, LimitOpt, PauseOpt, PerDayOpt, RateOpt,
)
from .output import Output


def show_checks(out: Output, checks: list[Check]) -> None:
    """Warnings and errors of the pre-send checks, on stderr."""
    for c in checks:
        if c.level == "error":
            out.error(f"{c.name}: {c.message}")
        elif c.level == "warning":
            out.warn(f"{c.name}: {c.message}")


class RateColumn(ProgressColumn):
    """Messages per second, measured while sending."""

    def render(self, task) -> Text:  # type: ignore[no-untyped-def]
        return Text(f"{task.speed:.1f} msg/s" if task.speed else "")


def show_progress(out: Output, events: Iterator[Event], total: int, dry_run: bool = False) -> None:
    """Plain lines on stderr when there is no terminal, a progress bar when there is."""
    if not out.is_terminal:
        for e in events:
            if e.message and not (dry_run and e.kind == "delivery" and e.status == "sent"):
                out.info(e.message)
        return
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        RateColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=out.err, transient=False) as progress:
        task = progress.add_task("sending", total=total or None)
        for e in events:
            if e.kind == "delivery":
                progress.advance(task)
            elif e.kind in ("retry", "reconnect", "pause", "notice", "stop"):
                progress.console.print(e.message, markup=False, highlight=False)


class CliObserver:
    """A run as a person at a terminal sees it: checks on stderr, a question, a progress bar."""

    def __init__(self, st: AppState, *, yes: bool, dry_run: bool):
        self.st = st
        self.out = st.output
        self.yes = yes
        self.dry_run = dry_run

    def checked(self, checks: list[Check], notes: list[str]) -> None:
        for note in notes:
            self.out.warn(note)
        show_checks(self.out, checks)

    def confirm(self, plan: SendPlan) -> bool:
        if self.yes:
            return True
        out = self.out
        if not out.stdin_is_terminal:
            raise InputError("Refusing to send without a terminal to confirm on; add --yes (cron) or use --dry-run.")
        c = plan.campaign
        out.summary(
            [("campaign", f"{c.id} {c.name}" if c.id else c.name), ("subject", c.subject),
             ("audience", f"{plan.to_send} on the {c.list_name} list" + "".join(f" #{t}" for t in c.tags)),
             ("SMTP server", plan.server)],
            title="About to send",
        )
        if not typer.confirm("Send now?", default=False):
            raise typer.Exit(int(ExitCode.USAGE))
        return True

    def progress(self, events: Iterator[Event], total: int) -> None:
        show_progress(self.out, events, total, self.dry_run)


@app.command()
def send(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="A campaign id, or a content file (continues its campaign).")],
    dry_run: DryRunSendOpt = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before sending.")] = False,
    list_name: Annotated[Optional[str], typer.Option("--list", "-l", help="Audience list of a new campaign.")] = None,
    tags: Annotated[Optional[list[str]], typer.Option("--tag", "-t", help="Narrow a new campaign's audience.")] = None,
    batch_size: BatchSizeOpt = None,
    pause: PauseOpt = None,
    rate: RateOpt = None,
    per_day: PerDayOpt = None,
    limit: LimitOpt = None,
    connections: ConnectionsOpt = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try failed deliveries again.")] = False,
    retry_unknown: Annotated[bool, typer.Option("--retry-unknown", help="Send again messages whose fate a crash left unknown.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Send a campaign in batches over SMTP (or --dry-run: write .eml files instead)."""
    st = state(ctx)
    log = RunLog(st.workspace().logs_dir / "mailer.log", st.clock, f"send {campaign}" + (" --dry-run" if dry_run else ""))
    try:
        report = _run_send(
            st, campaign, dry_run=dry_run, yes=yes, list_name=list_name, tags=tags or [], log=log,
            retry_failed=retry_failed, retry_unknown=retry_unknown,
            options=dict(batch_size=batch_size, pause=pause, rate=rate, per_day=per_day, limit=limit, connections=connections),
        )
    except MailerError as exc:
        log.write("end", exit=int(exc.exit_code), error=exc.message)
        raise
    _show_report(st.output, report, as_json)
    log.write("end", exit=int(report.exit_code))
    raise typer.Exit(int(report.exit_code))


def _run_send(st: AppState, ref: str, *, dry_run: bool, yes: bool, list_name: str | None, tags: list[str],
              retry_failed: bool, retry_unknown: bool, options: dict, log: RunLog) -> RunReport:
    ws = st.workspace()
    store = st.store()
    with ExitStack() as stack:
        if not dry_run:
            stack.enter_context(WorkspaceLock(ws.lock_path, f"mailer send {ref}", st.now()))
        campaign, warnings = campaign_for_send(store, ws, ref, st.clock, list_name=list_name, tags=tags)
        for w in warnings:
            st.output.warn(w)
        return run_campaign(
            store, ws, campaign, st.clock, options_from_config(ws, **options), ws.secret(),
            environ=st.env, dry_run=dry_run, resume=True, retry_failed=retry_failed, retry_unknown=retry_unknown,
            observer=CliObserver(st, yes=yes, dry_run=dry_run), log=log,
        )


def _show_report(out: Output, report: RunReport, as_json: bool) -> None:
    doc = report.document()
    r = report.result
    if as_json:
        out.json(doc)
        return
    if report.dry_run:
        out.summary([("would send", doc["would_send"]), ("skipped", doc["skipped"]), ("failed", doc["failed"])],
                    title="Dry run: nothing was sent")
        out.info(f"The messages are in {report.outbox}/")
    else:
        out.summary([(k, doc[k]) for k in ("sent", "failed", "bounced", "skipped", "unknown", "pending")],
                    title=f"Campaign {report.campaign.id}: {report.campaign.status}")
    if r.stopped:
        (out.info if r.quota_left else out.warn)(r.stopped)
    if not report.dry_run and doc["unknown"]:
        out.warn(
            f"{doc['unknown']} message(s) were being handed over when a run stopped or the server fell "
            f"silent; whether they arrived is unknown, so they are not sent again. See `mailer report "
            f"{report.campaign.id}`; --retry-unknown sends them again."
        )


@app.command()
def report(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="Campaign id.")],
    as_json: JsonOpt = False,
) -> None:
    """Delivery figures of a campaign, and why each failure failed."""
    st = state(ctx)
    store = st.store()
    c = find_campaign(store, campaign)
    doc = campaign_report(store, c)
    if as_json:
        st.output.json(doc)
        return
    out = st.output
    out.summary([(k, doc[k]) for k in ("status", "total", "sent", "failed", "bounced", "skipped", "unknown", "pending")], title=f"Campaign {c.id}: {c.name}")
    if c.status_reason:
        out.info(c.status_reason)
    if doc["failures"]:
        out.table(["email", "status", "attempts", "reason"], ([f["email"], f["status"], f["attempts"], f["reason"]] for f in doc["failures"]), title="Not sent")
