"""`mailer send` and `mailer report`."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import FrameType
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from ..campaigns import campaign_for_send, find_campaign
from ..checks import Check
from ..errors import ExitCode, InputError, MailerError, Terminated
from ..lock import WorkspaceLock
from ..runlog import RunLog
from ..runner import RunReport, SendPlan, campaign_report, options_from_config, run_campaign, send_test
from ..schedule import local_time_text
from ..send import Event
from . import AppState, app, state
from .options import (
    BatchSizeOpt,
    ConnectionsOpt,
    DryRunSendOpt,
    JsonOpt,
    LimitOpt,
    PauseOpt,
    PerDayOpt,
    RateOpt,
)
from .output import Output


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While sending, SIGTERM (a shutdown, `kill`) stops the run as Ctrl-C does: the campaign
    is paused, not left running for the next `run-due`."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a handler; a test runner's worker just sends
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def log_end(log: RunLog, exc: BaseException) -> None:
    """Write the end of a run that did not end normally, so `mailer status` tells the truth:
    an error, an interrupt (130, SIGTERM 143), a lock-out (4) or a crash (70)."""
    if isinstance(exc, MailerError):
        log.write("end", exit=int(exc.exit_code), error=exc.message)
    elif isinstance(exc, KeyboardInterrupt):
        terminated = isinstance(exc, Terminated)
        log.write("end", exit=int(ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED),
                  error="stopped by SIGTERM" if terminated else "interrupted by Ctrl-C")
    elif isinstance(exc, typer.Exit):
        log.write("end", exit=exc.exit_code)
    elif isinstance(exc, typer.Abort):
        log.write("end", exit=1, error="aborted at the question")
    elif isinstance(exc, Exception):
        # The type only: an unexpected error's text may hold someone's address.
        log.write("end", exit=int(ExitCode.INTERNAL), error=f"crashed ({type(exc).__name__})")


def show_checks(out: Output, checks: list[Check]) -> None:
    """Warnings and errors of the pre-send checks, on stderr."""
    for c in checks:
        if c.level == "error":
            out.error(f"{c.name}: {c.message}")
        elif c.level == "warning":
            out.warn(f"{c.name}: {c.message}")


class RateColumn(ProgressColumn):
    """Messages per second, measured while sending."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} msg/s" if task.speed else "")


def show_progress(out: Output, events: Iterator[Event], total: int, dry_run: bool = False) -> None:
    """Plain lines on stderr when there is no terminal, a progress bar when there is."""
    if not out.is_terminal:
        for e in events:
            if e.kind == "stop":  # the summary says why the run stopped, once
                continue
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
            elif e.kind in ("retry", "reconnect", "pause", "notice"):
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
        tz = self.st.workspace().config.sending.timezone
        if plan.subject_last_sent is None:
            last = "never"
        else:
            earlier, span = plan.subject_last_sent
            last = f"{local_time_text(span.last, tz)}, campaign {earlier.id} ({span.count} people)"
        out.summary(
            [("campaign", f"{c.id} {c.name}" if c.id else c.name), ("subject", c.subject),
             ("subject last sent", last),
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
    force: Annotated[bool, typer.Option("--force", help="Start a new campaign even though recent spam complaints are above 0.3%.")] = False,
    allow_repeat: Annotated[
        bool, typer.Option("--allow-repeat", help="Send even if the same letter went to these people in the last 30 days.")
    ] = False,
    test_to: Annotated[
        Optional[str], typer.Option("--test-to", metavar="ADDRESS", help="Send one [TEST] message to this address only.")
    ] = None,
    as_subscriber: Annotated[
        Optional[str], typer.Option("--as", metavar="ADDRESS", help="With --test-to: write it for this subscriber.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a campaign in batches (--dry-run: .eml files instead).

    Over SMTP, in batches with pauses; Ctrl-C pauses the campaign. --test-to sends one
    test message to yourself instead, and records no delivery.
    """
    st = state(ctx)
    if as_subscriber and not test_to:
        raise InputError("--as goes with --test-to: it chooses whom the test message is written for.")
    if test_to:
        if dry_run:
            raise InputError("--test-to sends one real message; leave out --dry-run (or see `mailer preview`).")
        _test_send(st, campaign, test_to, as_subscriber, as_json)
        return
    log = RunLog(st.workspace().logs_dir / "mailer.log", st.clock, f"send {campaign}" + (" --dry-run" if dry_run else ""))
    try:
        report = _run_send(
            st, campaign, dry_run=dry_run, yes=yes, list_name=list_name, tags=tags or [], log=log,
            retry_failed=retry_failed, retry_unknown=retry_unknown, force=force, allow_repeat=allow_repeat,
            options=dict(batch_size=batch_size, pause=pause, rate=rate, per_day=per_day, limit=limit, connections=connections),
        )
    except BaseException as exc:
        log_end(log, exc)
        raise
    _show_report(st.output, report, as_json)
    log.write("end", exit=int(report.exit_code))
    raise typer.Exit(int(report.exit_code))


def _run_send(st: AppState, ref: str, *, dry_run: bool, yes: bool, list_name: str | None, tags: list[str],
              retry_failed: bool, retry_unknown: bool, force: bool, allow_repeat: bool, options: dict,
              log: RunLog) -> RunReport:
    ws = st.workspace()
    store = st.store()
    with ExitStack() as stack:
        if not dry_run:
            stack.enter_context(WorkspaceLock(ws.lock_path, f"mailer send {ref}", st.now()))
        campaign, warnings = campaign_for_send(store, ws, ref, st.clock, list_name=list_name, tags=tags,
                                               retry=retry_failed or retry_unknown, allow_repeat=allow_repeat)
        for w in warnings:
            st.output.warn(w)
        stack.enter_context(sigterm_interrupts())
        return run_campaign(
            store, ws, campaign, st.clock, options_from_config(ws, **options), st.secret(),
            environ=st.env, dry_run=dry_run, resume=True, retry_failed=retry_failed, retry_unknown=retry_unknown,
            force=force, allow_repeat=allow_repeat, observer=CliObserver(st, yes=yes, dry_run=dry_run), log=log,
        )


def _test_send(st: AppState, ref: str, to: str, as_subscriber: str | None, as_json: bool) -> None:
    ws = st.workspace()
    log = RunLog(ws.logs_dir / "mailer.log", st.clock, f"send {ref} --test-to")
    try:
        result = send_test(st.store(), ws, ref, to, st.clock, st.secret(), as_email=as_subscriber, environ=st.env,
                           log=log, on_checks=lambda checks: show_checks(st.output, checks))
    except BaseException as exc:
        log_end(log, exc)
        raise
    log.write("end", exit=0)
    if as_json:
        st.output.json(result.document())
        return
    st.output.info(f"Sent one test message to {result.to} ({result.written_for}): {result.subject}")
    st.output.info(f"The server said: {result.reply}. No delivery was recorded; the campaign is not sent.")


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
    if r.stopped and r.quota_left:  # a cap's name ("handed over the 5 messages --limit allowed") made a sentence
        out.info(r.stopped if r.stopped.endswith(".") else f"Stopped: {r.stopped}; the rest waits for the next run.")
    elif r.stopped:
        out.warn(r.stopped)
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
    out.summary(
        [(k, doc[k]) for k in ("status", "total", "sent", "failed", "bounced", "skipped", "unknown", "pending", "complaints")]
        # a message a stopped run was handing over: `unknown` at the next run unless its reply was kept
        + ([("in flight", doc["sending"])] if doc.get("sending") else [])
        + [("complaint rate", f"{doc['complaint_rate']:.2%}")],
        title=f"Campaign {c.id}: {c.name}",
    )
    if c.status_reason:
        out.info(c.status_reason)
    if doc["next_attempt_at"]:
        tz = st.workspace().config.sending.timezone
        out.info(f"Messages refused for now are tried again by a run after {local_time_text(doc['next_attempt_at'], tz)}.")
    if doc["failures"]:
        out.table(["email", "status", "attempts", "reason"], ([f["email"], f["status"], f["attempts"], f["reason"]] for f in doc["failures"]), title="Not sent")
