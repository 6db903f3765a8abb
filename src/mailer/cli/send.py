"""`mailer send` and `mailer report`."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from ..campaigns import SendJob, campaign_for_send, find_campaign, options_from_config
from ..checks import Check
from ..errors import ExitCode, InputError, MailerError
from ..lock import WorkspaceLock
from ..models import Campaign
from ..runlog import RunLog, loggable
from ..store import Store
from . import AppState, app, state
from .output import Output


def show_checks(out: Output, checks: list[Check]) -> None:
    """Warnings and errors of the pre-send checks, on stderr."""
    for c in checks:
        if c.level == "error":
            out.error(f"{c.name}: {c.message}")
        elif c.level == "warning":
            out.warn(f"{c.name}: {c.message}")


def report_document(store: Store, campaign: Campaign, *, failures: bool = True) -> dict:
    counts = store.delivery_counts(campaign.id)
    doc = {
        "campaign": campaign.id,
        "name": campaign.name,
        "subject": campaign.subject,
        "list": campaign.list_name,
        "status": campaign.status,
        "status_reason": campaign.status_reason,
        "total": sum(counts.values()),
        **{k: counts[k] for k in ("sent", "failed", "bounced", "skipped", "unknown", "pending")},
    }
    if counts["sending"]:
        doc["sending"] = counts["sending"]
    if failures:
        doc["failures"] = [
            {"email": d.email, "status": d.status, "attempts": d.attempts, "reason": d.reply}
            for d in store.deliveries(campaign.id, ["failed", "bounced", "unknown", "skipped", "pending"])
            if d.status != "pending" or d.reply
        ]
    return doc


class RateColumn(ProgressColumn):
    """Messages per second, measured while sending."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} msg/s" if task.speed else "")


def _progress_lines(out: Output, events, total: int, dry_run: bool = False) -> None:
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
            elif e.kind in ("retry", "reconnect", "pause", "stop"):
                progress.console.print(e.message, markup=False, highlight=False)


@app.command()
def send(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="A campaign id, or a content file (continues its campaign).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Write .eml files to outbox/; send and change nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before sending.")] = False,
    list_name: Annotated[Optional[str], typer.Option("--list", "-l", help="Audience list of a new campaign.")] = None,
    tags: Annotated[Optional[list[str]], typer.Option("--tag", "-t", help="Narrow a new campaign's audience.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Messages per connection.", min=1)] = None,
    pause: Annotated[Optional[float], typer.Option("--pause", help="Seconds between batches.", min=0)] = None,
    rate: Annotated[Optional[float], typer.Option("--rate", help="At most this many messages a minute.", min=0)] = None,
    per_day: Annotated[Optional[int], typer.Option("--per-day", help="At most this many messages a day.", min=0)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Send at most this many now.", min=0)] = None,
    connections: Annotated[Optional[int], typer.Option("--connections", help="SMTP connections at once (default 1; relays throttle).", min=1, max=20)] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try failed deliveries again.")] = False,
    retry_unknown: Annotated[bool, typer.Option("--retry-unknown", help="Send again messages whose fate a crash left unknown.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON document.")] = False,
) -> None:
    """Send a campaign in batches over SMTP (or --dry-run: write .eml files instead)."""
    st = state(ctx)
    log = RunLog(st.workspace().logs_dir / "mailer.log", st.clock, f"send {campaign}" + (" --dry-run" if dry_run else ""))
    try:
        code = run_send(
            st, campaign, dry_run=dry_run, yes=yes, list_name=list_name, tags=tags or [], as_json=as_json,
            retry_failed=retry_failed, retry_unknown=retry_unknown, log=log,
            options=dict(batch_size=batch_size, pause=pause, rate=rate, per_day=per_day, limit=limit, connections=connections),
        )
    except MailerError as exc:
        log.write("end", exit=int(exc.exit_code), error=exc.message)
        raise
    log.write("end", exit=code)
    raise typer.Exit(code)


def run_send(st: AppState, ref: str, *, dry_run: bool, yes: bool, list_name, tags, as_json: bool,
             retry_failed: bool, retry_unknown: bool, options: dict, log: RunLog) -> int:
    out = st.output
    ws = st.workspace()
    store = st.store()
    with ExitStack() as stack:
        if not dry_run:
            stack.enter_context(WorkspaceLock(ws.lock_path, f"mailer send {ref}", st.now()))
        # A campaign made from a file is stored only when it really starts: a refusal, a
        # failed check or a "no" at the question leaves nothing behind.
        campaign, warnings = campaign_for_send(store, ws, ref, st.clock, list_name=list_name, tags=tags)
        for w in warnings:
            out.warn(w)
        job = SendJob(store, ws, campaign, st.clock, options_from_config(ws, **options), ws.secret(), dry_run=dry_run)
        interrupted_before = store.delivery_counts(campaign.id)["sending"] if campaign.id else 0
        job.prepare(retry_failed=retry_failed, retry_unknown=retry_unknown)
        checks = job.checks()
        for note in job.notes:
            out.warn(note)
        show_checks(out, checks)
        if any(c.level == "error" for c in checks):
            raise InputError("The pre-send checks found errors (above); nothing was sent.", hint=f"Run `mailer check {job.campaign.content_path or ref}` for the full table.")
        to_send = job.to_send()
        job.check_settings()
        if not dry_run and to_send:
            _confirm(st, job, to_send, yes)
        events = _logged(job.run(), log, job)
        _progress_lines(out, events, min(to_send, job.options.limit or to_send), dry_run)
    r = job.result
    log.write("campaign", campaign=job.campaign.id, dry_run=dry_run, handed_over=r.handed_over,
              outcomes={k: v for k, v in r.outcomes.items() if v}, stopped=r.stopped)
    return _summary(st, job, as_json, interrupted_before)


def _logged(events, log: RunLog, job: SendJob):
    """Pass the engine's events on, writing the notable ones (without addresses) to the log."""
    for event in events:
        if event.kind in ("retry", "reconnect", "stop"):
            log.write(event.kind, **loggable(event, job.campaign.id))
        yield event


def _confirm(st: AppState, job: SendJob, to_send: int, yes: bool) -> None:
    if yes:
        return
    out = st.output
    if not out.stdin_is_terminal:
        raise InputError("Refusing to send without a terminal to confirm on; add --yes (cron) or use --dry-run.")
    c = job.campaign
    out.summary(
        [("campaign", f"{c.id} {c.name}"), ("subject", c.subject), ("audience", f"{to_send} on the {c.list_name} list" + "".join(f" #{t}" for t in c.tags)),
         ("SMTP server", f"{job.ws.config.smtp.host}:{job.ws.config.smtp.port} ({job.ws.config.smtp.security})")],
        title="About to send",
    )
    if not typer.confirm("Send now?", default=False):
        raise typer.Exit(int(ExitCode.USAGE))


def _summary(st: AppState, job: SendJob, as_json: bool, interrupted: int) -> int:
    out = st.output
    r = job.result
    if job.dry_run:
        doc = {"campaign": job.campaign.id or None, "name": job.campaign.name, "dry_run": True,
               "would_send": r.outcomes["sent"], "skipped": r.outcomes["skipped"], "failed": r.outcomes["failed"],
               "outbox": str(job.outbox), "stopped": r.stopped}
    else:
        doc = report_document(job.store, job.campaign, failures=False)
        doc["this_run"] = r.handed_over
        doc["stopped"] = r.stopped
    if as_json:
        out.json(doc)
    else:
        if job.dry_run:
            out.summary([("would send", doc["would_send"]), ("skipped", doc["skipped"]), ("failed", doc["failed"])], title="Dry run: nothing was sent")
            out.info(f"The messages are in {job.outbox}/")
        else:
            out.summary([(k, doc[k]) for k in ("sent", "failed", "bounced", "skipped", "unknown", "pending")],
                        title=f"Campaign {job.campaign.id}: {job.campaign.status}")
        if r.stopped:
            (out.info if r.quota_left else out.warn)(r.stopped)
        if not job.dry_run and doc["unknown"]:
            out.warn(
                f"{doc['unknown']} message(s) were being handed over when a run stopped or the server fell "
                f"silent; whether they arrived is unknown, so they are not sent again. See `mailer report "
                f"{job.campaign.id}`; --retry-unknown sends them again."
            )
    this_run = r.outcomes
    if r.server_lost or (r.stopped and not r.quota_left) or r.paused:
        return int(ExitCode.PARTIAL)
    if this_run["failed"] or this_run["bounced"] or this_run["pending"] or interrupted:
        return int(ExitCode.PARTIAL)
    return int(ExitCode.OK)


@app.command()
def report(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="Campaign id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Delivery figures of a campaign, and why each failure failed."""
    st = state(ctx)
    store = st.store()
    c = find_campaign(store, campaign)
    doc = report_document(store, c)
    if as_json:
        st.output.json(doc)
        return
    out = st.output
    out.summary([(k, doc[k]) for k in ("status", "total", "sent", "failed", "bounced", "skipped", "unknown", "pending")], title=f"Campaign {c.id}: {c.name}")
    if c.status_reason:
        out.info(c.status_reason)
    if doc["failures"]:
        out.table(["email", "status", "attempts", "reason"], ([f["email"], f["status"], f["attempts"], f["reason"]] for f in doc["failures"]), title="Not sent")
