"""Unattended operation: `mailer run-due` (for cron), `mailer cron`, `mailer status`."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Iterator, Mapping

import typer

from ..campaigns import due_campaigns, template_problems
from ..checks import Check
from ..clock import Clock
from ..config import Workspace
from ..errors import ExitCode, LockedError, MailerError, SmtpError
from ..lifecycle import CampaignStatus
from ..lock import WorkspaceLock
from ..readiness import sending_problems
from ..runlog import RunLog, last_event
from ..runner import ChecksFailed, SendPlan, campaign_report, options_from_config, run_campaign
from ..schedule import local_time_text
from ..send import Event
from . import AppState, app, state
from .options import BatchSizeOpt, JsonOpt, PauseOpt, PerDayOpt, RateOpt
from .send import show_checks


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
    """For cron: send every campaign whose time has come, and what daily caps left pending.

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
        due, late = due_campaigns(store, st.clock.now(), ws.config.sending.max_lateness)
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
                report = run_campaign(store, ws, c, st.clock, options, ws.secret(), environ=st.env,
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
    except MailerError as exc:
        log.write("end", exit=int(exc.exit_code), error=exc.message)
        raise
    finally:
        lock.release()
    log.write("end", exit=int(code), campaigns=len(summaries), summary=summaries)
    raise typer.Exit(int(code))


def _mailer_executable() -> str:
    found = shutil.which("mailer")
    if found:
        return str(Path(found).absolute())
    candidate = Path(sys.executable).with_name("mailer")
    return str(candidate) if candidate.exists() else f"{sys.executable} -m mailer"


def _config_problems(ws: Workspace, env: Mapping[str, str], clock: Clock) -> list[str]:
    problems = [p.message for p in sending_problems(ws.config, env) if p.is_error]
    problems += [p for p in template_problems(ws, ws.secret(), clock) if not any(p.endswith(q) for q in problems)]
    return problems


@app.command()
def cron(
    ctx: typer.Context,
    check: Annotated[bool, typer.Option("--check", help="Say whether an unattended run would work; exit 2 if not.")] = False,
    every: Annotated[int, typer.Option("--every", help="Minutes between runs.", min=1, max=60)] = 10,
) -> None:
    """Print a crontab line for this workspace (and with --check, whether it is ready)."""
    st = state(ctx)
    ws = st.workspace()
    if check:
        problems = _config_problems(ws, st.env, st.clock)
        if problems:
            for p in problems:
                st.output.error(p)
            raise typer.Exit(int(ExitCode.USAGE))
        st.output.line(f"ready: {ws.home} can run unattended")
        return
    exe = _mailer_executable()
    path = os.pathsep.join(dict.fromkeys([str(Path(exe.split()[0]).parent), "/usr/local/bin", "/usr/bin", "/bin"]))
    env_file = ws.home / "cron.env"
    pw = ws.config.smtp.password_env
    st.output.line(f"# mailer: send due campaigns every {every} minutes (add with `crontab -e`).")
    st.output.line(f"# Put `export {pw}='...'` in {env_file} (chmod 600) so the password stays out of the crontab.")
    st.output.line(
        f"*/{every} * * * * [ -f {env_file} ] && . {env_file}; "
        f"MAILER_HOME={ws.home} PATH={path} {exe} run-due"
    )


@app.command()
def status(
    ctx: typer.Context,
    as_json: JsonOpt = False,
) -> None:
    """One screen: the list, the campaigns, what is pending, and how the last run went."""
    st = state(ctx)
    ws = st.workspace()
    store = st.store()
    tz = ws.config.sending.timezone
    campaigns = store.campaigns.list()
    counts = {c.id: store.deliveries.counts(c.id) for c in campaigns}
    doc = {
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
        "last_run": last_event(ws.logs_dir / "mailer.log"),
    }
    if as_json:
        st.output.json(doc)
        return
    out = st.output
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
        out.table(["id", "name", "status", "sent", "pending", "failed", "bounced"],
                  ([r["campaign"], r["name"], r["status"], r["sent"], r["pending"], r["failed"], r["bounced"]] for r in doc["running"]),
                  title="Running")
    last = doc["last_run"]
    if last:
        when = local_time_text(last["time"], tz)
        outcome = "ok" if last.get("exit") == 0 else f"exit {last.get('exit')}" + (f": {last['error']}" if last.get("error") else "")
        out.line(f"last run: {last.get('command')} at {when}: {outcome}")
    else:
        out.line("last run: none yet")
