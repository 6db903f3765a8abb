"""`mailer inbox process`: bounces, unsubscribe mails and complaints from a mailbox into the store."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ExitCode, InputError
from ..inbox.classify import BY_WORDING
from ..inbox.process import MessageReport, process_inbox
from ..inbox.sources import MaildirSource, MboxSource, Source, imap_source, parse_since
from ..lock import WorkspaceLock
from . import AppState, state, sub_app
from .options import JsonOpt
from .output import Output

app = sub_app("inbox", "Returned mail: bounces, unsubscribe mails and complaints.")


def _source(st: AppState, mbox: Path | None, maildir: Path | None, archive: Path | None,
            move_to: str | None, since: str | None) -> Source:
    day = parse_since(since) if since else None
    if mbox and maildir:
        raise InputError("Give either --mbox or --maildir, not both.")
    if archive and not maildir:
        raise InputError("--archive moves messages of a --maildir; it does nothing for IMAP or an mbox.")
    if move_to and (mbox or maildir):
        raise InputError("--move-to moves messages on the IMAP server; for a maildir use --archive.")
    if mbox:
        return MboxSource(mbox, since=day)
    if maildir:
        return MaildirSource(maildir, archive=archive, since=day)
    return imap_source(st.workspace(), st.env, since=day, move_to=move_to)


@app.command("process")
def process(
    ctx: typer.Context,
    mbox: Annotated[Optional[Path], typer.Option("--mbox", help="Read an mbox file instead of IMAP.")] = None,
    maildir: Annotated[Optional[Path], typer.Option("--maildir", metavar="DIR", help="Read a maildir (new/ and cur/) instead of IMAP.")] = None,
    archive: Annotated[Optional[Path], typer.Option("--archive", metavar="DIR", help="Move handled maildir messages into this maildir.")] = None,
    move_to: Annotated[Optional[str], typer.Option("--move-to", metavar="FOLDER", help="Move handled IMAP messages into this folder (needs MOVE).")] = None,
    since: Annotated[Optional[str], typer.Option("--since", metavar="DATE", help="Only messages dated on or after YYYY-MM-DD (IMAP: instead of 'new since last run').")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Classify and report; change nothing, move nothing.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List each message with its verdict.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read the mailbox once: bounces, unsubscribes and complaints.

    They change the list; every other message is left alone.
    """
    st = state(ctx)
    ws = st.workspace()
    reports: list[MessageReport] = []
    with ExitStack() as stack:
        if not dry_run:  # one writer at a time: a send reads the suppressions this changes
            stack.enter_context(WorkspaceLock(ws.lock_path, "mailer inbox process", st.now()))
        mailbox = st.store().mailbox
        source = _source(st, mbox, maildir, archive, move_to, since)
        summary = process_inbox(
            source, st.secret(), mailbox, mailbox, clock=st.clock, dry_run=dry_run,
            on_message=reports.append if verbose else _worth_a_look(reports),
        )
    out = st.output
    if as_json:
        document = summary.as_json()
        if verbose:
            document["messages"] = [r.as_json() for r in reports]
        out.json(document)
    else:
        if verbose:
            out.table(
                ["where", "kind", "outcome", "subscriber", "campaign", "from", "reason"],
                ([r.source_key, r.kind, r.outcome, r.subscriber, r.campaign_id, r.sender, r.reason] for r in reports),
                title="Messages",
            )
        out.summary(
            [
                ("read", summary.read),
                ("bounces (hard)", summary.bounces_hard),
                ("bounces (soft)", summary.bounces_soft),
                ("suppressed after 3 soft bounces", summary.suppressed),
                ("unsubscribes", summary.unsubscribes),
                ("complaints", summary.complaints),
                ("auto-replies", summary.auto_replies),
                ("unmatched", summary.unmatched),
                ("forged", summary.forged),
                ("for you to read", summary.to_read),
                ("matched-erased", summary.matched_erased),
                ("ignored", summary.ignored),
                ("already processed", summary.already_processed),
                ("moved", summary.moved),
            ],
            title=("Dry run, nothing changed: " if dry_run else "") + summary.source,
        )
    if not verbose and not as_json:
        _show_worth_a_look(out, reports, dry_run)
    if summary.unreadable:
        out.warn(f"{summary.unreadable} message(s) could not be read; run with -v to see which.")
        raise typer.Exit(int(ExitCode.PARTIAL))


def _by_wording(report: MessageReport) -> bool:
    return report.kind == "unsubscribe" and report.reason.startswith(BY_WORDING)


def _worth_a_look(kept: list[MessageReport]) -> Callable[[MessageReport], None]:
    """Keep (only) what a person should see without -v: replies judged by their words."""
    def keep(report: MessageReport) -> None:
        if report.kind == "unclear" or (_by_wording(report) and report.outcome == "unsubscribed"):
            kept.append(report)
    return keep


def _show_worth_a_look(out: Output, reports: list[MessageReport], dry_run: bool) -> None:
    left = [r for r in reports if r.kind == "unclear"]
    taken = [r for r in reports if _by_wording(r) and r.outcome == "unsubscribed"]
    if taken:
        verb = "would be unsubscribed" if dry_run else "unsubscribed"
        out.info(f"{verb} because of the words of their reply (check that they meant it):")
        for r in taken:
            out.info(f"  {r.subscriber or r.sender}: {r.reason.split(': ', 1)[-1]} (subject {r.subject!r})")
    if left:
        out.info("Read these yourself: they speak of leaving, but not plainly (nothing was changed for them):")
        for r in left:
            out.info(f"  {r.sender}: {r.reason} (subject {r.subject!r})")
