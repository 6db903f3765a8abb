"""Commands about people: import, validate, export and `mailer subscribers ...`."""

from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from ..csvio import EXPORT_COLUMNS, export_row, write_csv
from ..errors import ExitCode, InputError
from ..files import atomic_writer
from ..home import forget_files
from ..imports import import_file, one_row
from ..models import STATUSES, ImportSummary, Subscriber
from ..store import Store
from ..validate import InvalidValue, RowDefaults, check_text, normalise_email, parse_lists, parse_tags
from . import AppState, app, state, sub_app
from .options import JsonOpt

ListOpt = Annotated[
    Optional[list[str]], typer.Option("--list", "-l", help="List to join (news, specials); repeatable. Default: both.")
]
TagOpt = Annotated[Optional[list[str]], typer.Option("--tag", "-t", help="Tag to add; repeatable.")]


def _defaults(lists, tags, source, file_name: str, check_dns: bool) -> RowDefaults:
    try:
        return RowDefaults(
            lists=parse_lists(lists) if lists else None,
            tags=parse_tags(tags or []),
            source=check_text(source, "source") if source else None,
            default_source=file_name,
            check_dns=check_dns,
        )
    except InvalidValue as exc:
        raise InputError(str(exc)) from None


def _analysis_store(st: AppState) -> Store:
    """The workspace's store when there is one; else an empty one in memory (writes nothing)."""
    ws = st.workspace(must_exist=False)
    if ws.db_path.exists():
        return st.store()
    return Store.memory()


def _show_summary(st: AppState, summary: ImportSummary, as_json: bool, verb: str) -> None:
    out = st.output
    if as_json:
        out.json(summary.as_json())
    else:
        if summary.detected:
            out.info(summary.detected)
        out.summary(
            [
                ("read", summary.read),
                ("added", summary.added),
                ("updated", summary.updated),
                ("unchanged", summary.unchanged),
                ("duplicates", summary.duplicates),
                ("invalid", summary.invalid),
                ("suppressed", summary.suppressed),
            ],
            title=verb,
        )
        if summary.rejects:
            out.table(
                ["line", "value", "reason"],
                ([r.line, r.value, r.reason] for r in summary.rejects),
                title="Rows not imported",
            )
    if summary.invalid:
        raise typer.Exit(int(ExitCode.PARTIAL))


@contextmanager
def _readable(file: Path) -> Iterator[Path]:
    """The file itself, or for `-` standard input spooled to a temporary file (detection reads twice)."""
    if str(file) != "-":
        yield file
        return
    with tempfile.NamedTemporaryFile(prefix="mailer-stdin-", suffix=".csv") as tmp:
        shutil.copyfileobj(sys.stdin.buffer, tmp)
        tmp.flush()
        yield Path(tmp.name)


def _run_import(ctx, file, lists, tags, source, dry_run, rejects, as_json, check_dns, encoding, verb) -> None:
    st = state(ctx)
    st.workspace(must_exist=verb == "import")
    store = _analysis_store(st) if dry_run else st.store()
    defaults = _defaults(lists, tags, source, "stdin" if str(file) == "-" else Path(file).name, check_dns)
    # An in-memory store has no erased addresses, so it needs no key (and we create no secret.key).
    secret = bytes(32) if store.in_memory else st.secret()
    with _readable(file) as path:
        summary = import_file(
            store, secret, path, defaults, st.now(),
            encoding=encoding, commit=not dry_run, rejects_path=rejects,
        )
    if rejects and not as_json:
        st.output.info(f"Rejected rows written to {rejects}" if summary.invalid else f"No rejected rows; {rejects} has only its header.")
    _show_summary(st, summary, as_json, "Dry run: nothing was written" if dry_run else verb.capitalize())


FileArg = Annotated[Path, typer.Argument(help="The CSV file (UTF-8, UTF-16 or cp1252; comma, semicolon or tab); - for standard input.")]
SourceOpt = Annotated[Optional[str], typer.Option("--source", help="Where these people came from (default: the file name).")]
RejectsOpt = Annotated[Optional[Path], typer.Option("--rejects", help="Write the rows not imported to this CSV, to fix and import again.")]
DnsOpt = Annotated[bool, typer.Option("--check-dns", help="Also check that each domain can receive mail (slow; uses the network).")]
EncodingOpt = Annotated[Optional[str], typer.Option("--encoding", help="Read the file with this encoding instead of detecting it.")]


@app.command("import")
def import_(
    ctx: typer.Context,
    file: FileArg,
    lists: ListOpt = None,
    tags: TagOpt = None,
    source: SourceOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would happen; write nothing.")] = False,
    rejects: RejectsOpt = None,
    as_json: JsonOpt = False,
    check_dns: DnsOpt = False,
    encoding: EncodingOpt = None,
) -> None:
    """Import subscribers from a CSV export (website form, Mailchimp, Google, Outlook, Excel)."""
    _run_import(ctx, file, lists, tags, source, dry_run, rejects, as_json, check_dns, encoding, "import")


@app.command()
def validate(
    ctx: typer.Context,
    file: FileArg,
    lists: ListOpt = None,
    tags: TagOpt = None,
    source: SourceOpt = None,
    rejects: RejectsOpt = None,
    as_json: JsonOpt = False,
    check_dns: DnsOpt = False,
    encoding: EncodingOpt = None,
) -> None:
    """The same analysis as import, against the current list; writes nothing."""
    _run_import(ctx, file, lists, tags, source, True, rejects, as_json, check_dns, encoding, "validate")


StatusOpt = Annotated[str, typer.Option("--status", help="active, unsubscribed, bounced or all.")]


def _check_status(status: str) -> str:
    if status not in (*STATUSES, "all"):
        raise InputError(f"--status must be one of {', '.join(STATUSES)} or all, not {status!r}.")
    return status


@app.command()
def export(
    ctx: typer.Context,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file (default: stdout).")] = None,
    status: StatusOpt = "all",
    list_name: Annotated[Optional[str], typer.Option("--list", "-l", help="Only this list.")] = None,
    tags: TagOpt = None,
) -> None:
    """Export subscribers as CSV (a backup: import reads it back exactly)."""
    st = state(ctx)
    store = st.store()
    rows = (
        export_row(s)
        for s in store.subscribers.stream(status=_check_status(status), list_name=list_name, tags=tags or [])
    )
    if output is None:
        n = write_csv(sys.stdout, EXPORT_COLUMNS, rows)
    else:
        # UTF-8 with BOM: Excel then shows accented and non-Latin names correctly.
        with atomic_writer(output, encoding="utf-8-sig", newline="") as fh:
            n = write_csv(fh, EXPORT_COLUMNS, rows)
        st.output.info(f"Exported {n} subscribers to {output}")


subscribers_app = sub_app("subscribers", "List, show, add, unsubscribe, resubscribe and erase people.")


def _key(email: str) -> str:
    try:
        return normalise_email(email)[1]
    except InvalidValue:
        return email.strip().lower()


def _subscriber_json(s: Subscriber) -> dict:
    return dict(zip(EXPORT_COLUMNS, export_row(s))) | {"lists": list(s.lists), "tags": list(s.tags)}


@subscribers_app.command("list")
def list_(
    ctx: typer.Context,
    status: StatusOpt = "all",
    list_name: Annotated[Optional[str], typer.Option("--list", "-l", help="Only this list.")] = None,
    tags: TagOpt = None,
    search: Annotated[Optional[str], typer.Option("--search", "-s", help="Part of an address or name.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Show at most this many.", min=1)] = None,
    as_json: JsonOpt = False,
) -> None:
    """List subscribers (paged on a terminal)."""
    st = state(ctx)
    store = st.store()
    subs: Iterator[Subscriber] = store.subscribers.stream(
        status=_check_status(status), list_name=list_name, tags=tags or [], search=search, limit=limit
    )
    out = st.output
    if as_json:
        out.json([_subscriber_json(s) for s in subs])
        return
    rows = ([s.email, s.full_name, s.status, ",".join(s.lists), ",".join(s.tags)] for s in subs)
    columns = ["email", "name", "status", "lists", "tags"]
    if out.is_terminal:
        total = store.subscribers.count(status=status, list_name=list_name, tags=tags or [], search=search)
        shown = min(total, limit) if limit else total
        title = f"{total} subscribers" if shown == total else f"{shown} of {total} subscribers"
        console = out.out
        if shown > console.height - 6:  # more than a screen: page it, as git does
            with console.pager(styles=True):
                out.table(columns, rows, title=title)
            return
        out.table(columns, rows, title=title)
    else:
        out.table(columns, rows)


@subscribers_app.command()
def show(ctx: typer.Context, email: str, as_json: JsonOpt = False) -> None:
    """Everything stored about one subscriber."""
    st = state(ctx)
    sub = st.store().subscribers.require(_key(email))
    if as_json:
        st.output.json(_subscriber_json(sub))
        return
    st.output.summary(list(zip(EXPORT_COLUMNS, export_row(sub))), title=sub.email)


@subscribers_app.command()
def add(
    ctx: typer.Context,
    email: str,
    first_name: Annotated[str, typer.Option("--first-name", help="First name.")] = "",
    last_name: Annotated[str, typer.Option("--last-name", help="Last name.")] = "",
    lists: ListOpt = None,
    tags: TagOpt = None,
    source: Annotated[str, typer.Option("--source", help="Where this person signed up.")] = "front desk",
) -> None:
    """Add one person (the same checks as import)."""
    st = state(ctx)
    store = st.store()
    defaults = _defaults(lists, tags, source, "command line", check_dns=False)
    sub = one_row({"email": email, "first_name": first_name, "last_name": last_name}, defaults)
    address = sub.email
    outcome = store.subscribers.add(sub, st.secret(), st.now())
    if outcome == "suppressed":
        raise InputError(
            f"{address} has unsubscribed, bounced or been erased, so it is not added back.",
            hint=f"Only `mailer subscribers resubscribe {address}` brings an unsubscribed or bounced person back.",
        )
    st.output.info(f"{address}: {outcome}")


@subscribers_app.command()
def unsubscribe(
    ctx: typer.Context,
    email: str,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the record).")] = "asked the practice",
) -> None:
    """Stop mailing someone; they stay on record so no import brings them back."""
    st = state(ctx)
    changed = st.store().subscribers.unsubscribe(_key(email), check_text(reason, "reason"), st.now())
    st.output.info(f"{email}: {'unsubscribed' if changed else 'was already unsubscribed'}")


@subscribers_app.command()
def resubscribe(ctx: typer.Context, email: str) -> None:
    """Make an unsubscribed or bounced person active again (only when they asked)."""
    st = state(ctx)
    changed = st.store().subscribers.resubscribe(_key(email), st.now())
    st.output.info(f"{email}: {'active again' if changed else 'was already active'}")


@subscribers_app.command()
def erase(
    ctx: typer.Context,
    email: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the suppression).")] = "erasure requested",
) -> None:
    """Delete a person's data for good, keeping only a hash so they are never mailed again."""
    st = state(ctx)
    store = st.store()
    key = _key(email)
    if not yes:
        if not st.output.stdin_is_terminal:
            raise InputError("erase needs --yes when there is no terminal to confirm on.")
        if not typer.confirm(f"Erase everything about {email}? This cannot be undone", default=False):
            raise typer.Exit(int(ExitCode.USAGE))
    existed = store.subscribers.erase(key, st.secret(), check_text(reason, "reason"), st.now())
    forget_files(st.workspace(), key)
    if not existed:
        st.output.info(f"{email} was not on the list; it is now suppressed so it can never be added.")
    else:
        st.output.info(f"{email}: erased")
