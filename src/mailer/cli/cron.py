"""Unattended operation: `mailer run-due` (for cron), `mailer cron`, `mailer status`."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..campaigns import due_campaigns
from ..checks import Check
from ..config import Workspace
from ..dnscheck import make_resolver
from ..errors import ExitCode, LockedError, MailerError, SmtpError
from ..inbox.process import process_inbox
from ..inbox.sources import imap_source
from ..lifecycle import CampaignStatus
from ..lock import WorkspaceLock, holder
from ..readiness import private_file_problems, unattended_problems
from ..runlog import RunLog, last_event
from ..runner import ChecksFailed, SendPlan, campaign_report, options_from_config, run_campaign
from ..schedule import local_time_text
from ..send import Event
from ..store import Store
from . import AppState, app, state
from .options import BatchSizeOpt, JsonOpt, PauseOpt, PerDayOpt, RateOpt
from .send import log_end, show_checks, sigterm_interrupts


def _log(st: AppState, command: str) -> RunLog:
    return RunLog(st.workspace().logs_dir / "mailer.log", st.clock, command)


class CronObserver:
    """A run as cron sees it: silent unless --verbose; never asks."""

    def __init__(self, st: AppState, verbose: bool):
        self.out = st.output
        self.verbose = verbose

    def checked(self, checks: list[Check], notes: list[str]) -> None:
        pass  # errors come back as ChecksFailed; warnings are for a person at `mailer check`

    def confirm(self, plan: SendPlan) -> bool:
        return True  # scheduling the campaign was the confirmation

    def progress(self, events: Iterator[Event], total: int) -> None:
        for event in events:
            if self.verbose and event.kind in ("retry", "reconnect", "notice", "stop"):
                self.out.info(event.message)


@app.command("run-due")
def run_due(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent (writes .eml files); send nothing.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print a short summary when work was done.")] = False,
    batch_size: BatchSizeOpt = None,
    pause: PauseOpt = None,
    rate: RateOpt = None,
    per_day: PerDayOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """For cron: send what is due, and what daily caps left.

    Prints nothing when there is nothing to do; a failure prints one message on stderr
    and exits non-zero, so cron mails it to you.
    """
    st = state(ctx)
    ws = st.workspace()
    log = _log(st, "run-due" + (" --dry-run" if dry_run else ""))
    out = st.output
    try:
        lock = WorkspaceLock(ws.lock_path, "mailer run-due", st.now())
        if not dry_run:
            lock.acquire()
    except LockedError as exc:
        log.write("locked", message=exc.message)
        log.write("end", exit=int(ExitCode.LOCKED), error=exc.message)
        raise typer.Exit(int(ExitCode.LOCKED)) from None  # quietly: the running one does the work
    code = ExitCode.OK
    summaries: list[str] = []
    document: dict = {"dry_run": dry_run, "campaigns": [], "late": []}
    observer = CronObserver(st, verbose)
    try:
        store = st.store()
        if not dry_run:
            interrupted = store.deliveries.mark_interrupted(st.now())
            if interrupted:
                out.warn(
                    f"{interrupted} message(s) were being handed over when an earlier run stopped; whether they "
                    "arrived is unknown, so they are not sent again (see `mailer report`, --retry-unknown)."
                )
                log.write("unknown", count=interrupted)
                code = ExitCode.PARTIAL
        if ws.config.inbox.before_send and not dry_run:
            inbox = _read_inbox(st, store, log)
            if isinstance(inbox, MailerError):
                code = max(code, inbox.exit_code)
                raise _Skip()
            document["inbox"] = inbox
        due, late = due_campaigns(store, st.clock.now(), ws.config.sending.max_lateness, ws.config.sending.timezone)
        for c in late:
            out.error(
                f"Campaign {c.id} ({c.name}) was due at {local_time_text(c.scheduled_at, ws.config.sending.timezone)}, "
                f"more than {ws.config.sending.max_lateness:g} hours ago, so it was not sent automatically.",
                hint=f"Send it with `mailer send {c.id}`, or give it a new time with `mailer campaign schedule {c.id} --at ...`.",
            )
            log.write("late", campaign=c.id, scheduled_at=c.scheduled_at)
            document["late"].append({"campaign": c.id, "name": c.name, "scheduled_at": c.scheduled_at})
            code = max(code, ExitCode.PARTIAL)
        options = options_from_config(ws, batch_size=batch_size, pause=pause, rate=rate, per_day=per_day)
        for c in due:
            try:
                with sigterm_interrupts():
                    report = run_campaign(store, ws, c, st.clock, options, st.secret(), environ=st.env,
                                          dry_run=dry_run, observer=observer, log=log)
            except ChecksFailed as exc:
                errors = [ch for ch in exc.checks if ch.level == "error"]
                show_checks(out, errors)
                out.error(f"Campaign {c.id} ({c.name}) was not sent: its pre-send checks failed.")
                log.write("checks-failed", campaign=c.id, errors=[ch.message for ch in errors])
                code = max(code, ExitCode.USAGE)
                continue
            except SmtpError as exc:
                log.write("smtp-error", campaign=c.id, message=exc.message)
                out.error(f"Campaign {c.id} ({c.name}): {exc.message}", exc.hint)
                code = ExitCode.SMTP
                break
            r = report.result
            figures = {k: v for k, v in r.outcomes.items() if v}
            document["campaigns"].append(report.document())
            summaries.append(
                f"campaign {c.id} ({c.name}): "
                + (f"would send {r.outcomes['sent']} (in {report.outbox})" if dry_run else
                   ", ".join(f"{n} {k}" for k, n in figures.items()) or "nothing to send")
                + (f"; {r.stopped}" if r.stopped else "")
            )
            if report.problem:
                out.error(f"Campaign {c.id} ({c.name}): {report.problem}")
            elif report.exit_code:
                out.error(
                    f"Campaign {c.id} ({c.name}): {r.outcomes['failed']} failed, {r.outcomes['bounced']} bounced, "
                    f"{r.outcomes['pending']} left for the next run; see `mailer report {c.id}`."
                )
            code = max(code, report.exit_code)
            if r.quota_left:
                break  # the daily cap is the account's: later campaigns wait too
        if as_json:
            out.json(document | {"exit": int(code)})
        elif verbose or dry_run:
            for line in summaries:
                out.line(line)
            if dry_run and not due:
                out.line("nothing is due")
    except _Skip:
        if as_json:
            out.json(document | {"exit": int(code)})
    except BaseException as exc:
        log_end(log, exc)
        raise
    finally:
        lock.release()
    log.write("end", exit=int(code), campaigns=len(summaries), summary=summaries)
    raise typer.Exit(int(code))


class _Skip(Exception):
    """This run sends nothing (its reason was said and logged)."""


def _read_inbox(st: AppState, store: Store, log: RunLog) -> dict | MailerError:
    """[inbox] before_send: yesterday's bounces and unsubscribes, into the list before today's batch.

    When the mailbox cannot be read, nothing is sent this run: an unsubscribe waiting
    there would not be honoured. The error is the run's outcome (cron mails it).
    """
    try:
        summary = process_inbox(imap_source(st.workspace(), st.env), st.secret(), store.mailbox, store.mailbox,
                                clock=st.clock)
    except MailerError as exc:
        log.write("inbox-error", message=exc.message)
        st.output.error(
            f"The inbox could not be read, so nothing was sent this run (an unsubscribe waiting there comes first): "
            f"{exc.message}", exc.hint,
        )
        return exc
    document = summary.as_json()
    log.write("inbox", **document)
    return document


def _mailer_executable() -> str:
    """The command that runs this mailer, as sh words (quoted where needed)."""
    found = shutil.which("mailer")
    if found:
        return shlex.quote(str(Path(found).absolute()))
    candidate = Path(sys.executable).with_name("mailer")
    if candidate.exists():
        return shlex.quote(str(candidate))
    return f"{shlex.quote(sys.executable)} -m mailer"


@app.command()
def cron(
    ctx: typer.Context,
    check: Annotated[bool, typer.Option("--check", help="Say whether an unattended run would work; exit 2 if not.")] = False,
    every: Annotated[int, typer.Option("--every", help="Minutes between runs.", min=1, max=60)] = 10,
    nameserver: Annotated[
        Optional[str], typer.Option("--nameserver", help="With --check: ask this DNS server (IP or IP:PORT), not the system's.")
    ] = None,
) -> None:
    """Print a crontab line for this workspace (--check: ready?)."""
    st = state(ctx)
    ws = st.workspace()
    if check:
        resolver = make_resolver(nameserver, timeout=2.0) if nameserver else None
        problems = unattended_problems(ws, st.secret(), st.env, st.clock, resolver=resolver)
        for p in problems:
            (st.output.error if p.is_error else st.output.warn)(p.message, *([p.hint] if p.hint and p.is_error else []))
            if p.hint and not p.is_error:
                st.output.info(f"  {p.hint}")
        if any(p.is_error for p in problems):
            raise typer.Exit(int(ExitCode.USAGE))
        st.output.line(f"ready: {ws.home} can run unattended")
        return
    st.output.line(f"# mailer: send due campaigns every {every} minutes (add with `crontab -e`).")
    st.output.line(
        f"# Put `export {ws.config.smtp.password_env}='...'` in {ws.home / 'cron.env'} (chmod 600) "
        "so the password stays out of the crontab."
    )
    st.output.line(crontab_line(ws.home, _mailer_executable(), every))


def crontab_line(home: Path, exe: str, every: int) -> str:
    """The crontab line for a workspace: every path quoted for sh (spaces, quotes, `$` and `;` stay text)."""
    exe_words = shlex.split(exe)
    path = os.pathsep.join(dict.fromkeys([str(Path(exe_words[0]).parent), "/usr/local/bin", "/usr/bin", "/bin"]))
    env_file = shlex.quote(str(home / "cron.env"))
    command = " ".join(shlex.quote(w) for w in exe_words)
    # cron gives `%` a meaning of its own (a newline) unless escaped.
    line = (f"*/{every} * * * * [ -f {env_file} ] && . {env_file}; "
            f"MAILER_HOME={shlex.quote(str(home))} PATH={shlex.quote(path)} {command} run-due")
    return line.replace("%", "\\%")


@app.command()
def status(
    ctx: typer.Context,
    as_json: JsonOpt = False,
) -> None:
    """The list, the campaigns and the last run, on one screen."""
    st = state(ctx)
    ws = st.workspace()
    store = st.store()
    tz = ws.config.sending.timezone
    campaigns = store.campaigns.list()
    counts = {c.id: store.deliveries.counts(c.id) for c in campaigns}
    doc: dict[str, Any] = {
        "workspace": str(ws.home),
        "subscribers": store.subscribers.status_counts(),
        "lists": {name: store.subscribers.audience_count(name, ()) for name in ("news", "specials")},
        "scheduled": [
            {"id": c.id, "name": c.name, "at": local_time_text(c.scheduled_at, tz), "note": c.status_reason}
            for c in campaigns if c.status == CampaignStatus.SCHEDULED
        ],
        "running": [
            campaign_report(store, c, failures=False)
            for c in campaigns if c.status in (CampaignStatus.SENDING, CampaignStatus.PAUSED)
        ],
        "finished": sum(1 for c in campaigns if c.status == CampaignStatus.DONE),
        "pending": sum(n["pending"] for n in counts.values()),
        "unknown": sum(n["unknown"] for n in counts.values()),
        "sending": sum(n["sending"] for n in counts.values()),
        **_last_run(ws),
    }
    warnings = private_file_problems(ws)
    doc["warnings"] = [{"file": p.key, "message": p.message, "hint": p.hint} for p in warnings]
    if as_json:
        st.output.json(doc)
        return
    out = st.output
    for p in warnings:
        out.warn(f"{p.message} ({p.hint})")
    subs = doc["subscribers"]
    out.summary(
        [("active", subs["active"]), ("  on news", doc["lists"]["news"]), ("  on specials", doc["lists"]["specials"]),
         ("unsubscribed", subs["unsubscribed"]), ("bounced", subs["bounced"]), ("erased", subs["erased"]),
         ("campaigns finished", doc["finished"]), ("messages pending", doc["pending"]), ("fate unknown", doc["unknown"])],
        title=f"mailer: {ws.home}",
    )
    if doc["scheduled"]:
        out.table(["id", "name", "at", "note"], ([s["id"], s["name"], s["at"], s["note"]] for s in doc["scheduled"]), title="Scheduled")
    if doc["running"]:
        out.table(["id", "name", "status", "sent", "pending", "failed", "bounced", "why"],
                  ([r["campaign"], r["name"], r["status"], r["sent"], r["pending"], r["failed"], r["bounced"],
                    r["status_reason"]] for r in doc["running"]),
                  title="Sending or paused")
        for r in doc["running"]:
            if r["status"] == CampaignStatus.PAUSED:
                out.info(f"Campaign {r['campaign']} is paused: `mailer send {r['campaign']}` goes on, "
                         f"`mailer campaign cancel {r['campaign']}` stops it for good.")
    now = doc["running_now"]
    if now:
        out.line(f"running now: {now['command']} (process {now['pid']}, since {local_time_text(now['started'], tz)})")
    if doc["sending"]:
        if now:
            out.line(f"being handed over: {doc['sending']}")
        else:
            out.line(f"left mid-send by a run that was killed: {doc['sending']} (the next run sorts them out: "
                     "unknown where the data may have gone out, pending otherwise; none is sent twice)")
    last = doc["last_run"]
    if last:
        when = local_time_text(last["time"], tz)
        out.line(f"last run: {last.get('command')} at {when}: {_run_outcome(last)}")
    else:
        out.line("last run: none yet")


def _last_run(ws: Workspace) -> dict[str, Any]:
    """The last run as its log ends it, or, when it was killed before it could say so, as its lock tells."""
    last = last_event(ws.logs_dir / "mailer.log")
    held = holder(ws.lock_path)
    running_now = None
    if held and held.get("alive"):
        running_now = {k: held.get(k) for k in ("pid", "command", "started")}
    elif held and str(held.get("started", "")) >= str((last or {}).get("time", "")):
        last = {
            "time": held.get("started"), "pid": held.get("pid"),
            "command": str(held.get("command", "")).removeprefix("mailer "), "event": "end", "exit": None,
            "error": f"killed before it could finish (process {held.get('pid')})",
        }
    return {"last_run": last, "running_now": running_now}


def _run_outcome(end: dict[str, Any]) -> str:
    """How a run ended, in words: ok, interrupted, locked out, crashed, or its exit code and error."""
    code, error = end.get("exit"), end.get("error") or ""
    words: dict[int | None, str] = {
        ExitCode.OK: "ok",
        ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
        ExitCode.TERMINATED: "stopped (SIGTERM)",
        ExitCode.LOCKED: "locked out (another run was working)",
        ExitCode.INTERNAL: "crashed (exit 70)",
    }
    if code is None:  # killed: no end of its own, only its lock says it ran
        return error
    said = words.get(code, f"exit {code}")
    return said + (f": {error}" if error and code != ExitCode.OK else "")
