"""Unattended operation: `mailer run-due` (for cron), `mailer cron`, `mailer status`."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..campaigns import SendJob, due_campaigns, options_from_config, template_problems
from ..config import Workspace
from ..errors import ExitCode, LockedError, MailerError, SmtpError
from ..lock import WorkspaceLock
from ..runlog import RunLog, last_event, loggable
from ..schedule import local_time_text
from . import AppState, app, state
from .send import report_document, show_checks


def _log(st: AppState, command: str) -> RunLog:
    return RunLog(st.workspace().logs_dir / "mailer.log", st.clock, command)


@app.command("run-due")
def run_due(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent (writes .eml files); send nothing.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print a short summary when work was done.")] = False,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Messages per connection.", min=1)] = None,
    pause: Annotated[Optional[float], typer.Option("--pause", help="Seconds between batches.", min=0)] = None,
    rate: Annotated[Optional[float], typer.Option("--rate", help="At most this many messages a minute.", min=0)] = None,
    per_day: Annotated[Optional[int], typer.Option("--per-day", help="At most this many messages a day.", min=0)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as one JSON document (always).")] = False,
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
    try:
        store = st.store()
        if not dry_run:
            interrupted = store.mark_interrupted(st.now())
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
        for c in due:
            options = options_from_config(ws, batch_size=batch_size, pause=pause, rate=rate, per_day=per_day)
            job = SendJob(store, ws, c, st.clock, options, ws.secret(), dry_run=dry_run)
            try:
                job.prepare()
                checks = job.checks()
                if any(ch.level == "error" for ch in checks):
                    show_checks(out, [ch for ch in checks if ch.level == "error"])
                    out.error(f"Campaign {c.id} ({c.name}) was not sent: its pre-send checks failed.")
                    log.write("checks-failed", campaign=c.id, errors=[ch.message for ch in checks if ch.level == "error"])
                    code = max(code, ExitCode.USAGE)
                    continue
                for event in job.run():
                    if event.kind in ("retry", "reconnect", "stop"):
                        log.write(event.kind, **loggable(event, c.id))
                        if verbose:
                            out.info(event.message)
            except SmtpError as exc:
                log.write("smtp-error", campaign=c.id, message=exc.message)
                out.error(f"Campaign {c.id} ({c.name}): {exc.message}", exc.hint)
                code = ExitCode.SMTP
                break
            r = job.result
            figures = {k: v for k, v in r.outcomes.items() if v}
            log.write("campaign", campaign=c.id, dry_run=dry_run, handed_over=r.handed_over, outcomes=figures, stopped=r.stopped)
            document["campaigns"].append(
                {"campaign": c.id, "name": c.name, "handed_over": r.handed_over, **r.outcomes, "stopped": r.stopped}
            )
            summaries.append(
                f"campaign {c.id} ({c.name}): "
                + (f"would send {r.outcomes['sent']} (in {job.outbox})" if dry_run else
                   ", ".join(f"{n} {k}" for k, n in figures.items()) or "nothing to send")
                + (f"; {r.stopped}" if r.stopped else "")
            )
            if r.paused or r.server_lost or (r.stopped and not r.quota_left):
                out.error(f"Campaign {c.id} ({c.name}): {r.stopped}")
                code = max(code, ExitCode.PARTIAL)
            elif r.outcomes["failed"] or r.outcomes["bounced"] or r.outcomes["pending"]:
                out.error(
                    f"Campaign {c.id} ({c.name}): {r.outcomes['failed']} failed, {r.outcomes['bounced']} bounced, "
                    f"{r.outcomes['pending']} left for the next run; see `mailer report {c.id}`."
                )
                code = max(code, ExitCode.PARTIAL)
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


def _config_problems(ws: Workspace, env, clock) -> list[str]:
    c = ws.config
    problems = []
    if not c.smtp.host:
        problems.append("[smtp] host is empty")
    if c.smtp.username and not env.get(c.smtp.password_env):
        problems.append(f"[smtp] username is set but ${c.smtp.password_env} (the password) is not set in this environment")
    if not c.sender.from_email:
        problems.append("[sender] from_email is empty")
    if not (c.unsubscribe.mailto or c.sender.from_email):
        problems.append("no unsubscribe address: set [unsubscribe] mailto or [sender] from_email")
    problems += template_problems(ws, ws.secret(), clock)
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
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """One screen: the list, the campaigns, what is pending, and how the last run went."""
    st = state(ctx)
    ws = st.workspace()
    store = st.store()
    tz = ws.config.sending.timezone
    campaigns = store.campaigns()
    counts = {c.id: store.delivery_counts(c.id) for c in campaigns}
    doc = {
        "workspace": str(ws.home),
        "subscribers": store.status_counts(),
        "lists": {name: store.count(status="active", list_name=name) for name in ("news", "specials")},
        "scheduled": [
            {"id": c.id, "name": c.name, "at": local_time_text(c.scheduled_at, tz), "note": c.status_reason}
            for c in campaigns if c.status == "scheduled"
        ],
        "running": [
            {**report_document(store, c, failures=False)} for c in campaigns if c.status in ("sending", "paused")
        ],
        "finished": sum(1 for c in campaigns if c.status == "done"),
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
