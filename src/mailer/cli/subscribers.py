"""Commands about people: import, validate, export and `mailer subscribers ...`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..csvio import EXPORT_COLUMNS, export_row, write_csv
from ..errors import ExitCode, InputError, NotFound
from ..files import atomic_writer
from ..home import forget_files, refuse_workspace_file
from ..imports import import_file, look_alike, one_row, seekable
from ..models import CONSENT_METHODS, STATUSES, HistoryItem, ImportSummary, Subscriber, Typo
from ..schedule import shown_time
from ..store import Store
from ..validate import InvalidValue, RowDefaults, check_text, normalise_email, parse_lists, parse_tags
from . import AppState, app, state, sub_app
from .options import JsonOpt, TagFilterOpt
from .send import sigterm_interrupts

ListOpt = Annotated[
    Optional[list[str]],
    typer.Option("--list", "-l", metavar="LIST", help="List to join (news, specials); repeatable. Default: both."),
]
TagOpt = Annotated[Optional[list[str]], typer.Option("--tag", "-t", metavar="TAG", help="Tag to add; repeatable.")]
FixTyposOpt = Annotated[
    bool, typer.Option("--fix-typos", help="Store gmail.com for a look-alike such as gmial.com (else only warn).")
]
# Times in the consent record and the history, shown to people in the workspace's zone.
_TIME_FIELDS = ("optin_time", "created_at", "updated_at", "unsubscribed_at")


def _defaults(lists: list[str] | None, tags: list[str] | None, source: str | None, file_name: str, check_dns: bool,
              fix_typos: bool = False) -> RowDefaults:
    try:
        return RowDefaults(
            lists=parse_lists(lists) if lists else None,
            tags=parse_tags(tags or []),
            source=check_text(source, "source") if source else None,
            default_source=file_name,
            check_dns=check_dns,
            fix_typos=fix_typos,
        )
    except InvalidValue as exc:
        raise InputError(str(exc)) from None


def _lists(values: list[str]) -> tuple[str, ...]:
    try:
        return parse_lists(values)
    except InvalidValue as exc:
        raise InputError(str(exc)) from None


def _typo_line(t: Typo) -> str:
    if t.fixed:
        return f"{t.email}: stored as {t.suggestion} (--fix-typos)."
    return f"{t.email}: did you mean {t.suggestion}? (--fix-typos stores that instead)"


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
        if summary.typos:
            fixed = any(t.fixed for t in summary.typos)
            out.table(
                ["line", "email", "did you mean" if not fixed else "stored as"],
                ([t.line, t.email, t.suggestion + ("" if t.fixed else "?")] for t in summary.typos),
                title="Addresses that look mistyped",
            )
            if not fixed:
                out.warn(
                    f"{len(summary.typos)} address(es) look like a slip of a common provider's domain; "
                    "they were taken as written. Check them, or import again with --fix-typos."
                )
        if summary.no_consent:
            out.warn(
                f"{summary.no_consent} row(s) carry no consent fact (no opt-in time, IP, form or consent text); "
                "they are stored with consent method 'import'. Keep the proof of how they signed up."
            )
        if verb.startswith("Dry run"):
            out.info("Dry run: nothing was written.")
    if summary.invalid:
        raise typer.Exit(int(ExitCode.PARTIAL))


def _run_import(ctx: typer.Context, file: Path, lists: list[str] | None, tags: list[str] | None, source: str | None,
                dry_run: bool, rejects: Path | None, as_json: bool, check_dns: bool, encoding: str | None, verb: str,
                email_column: str | None = None, name_column: str | None = None, fix_typos: bool = False) -> None:
    st = state(ctx)
    ws = st.workspace(must_exist=verb == "import")
    if rejects is not None:
        refuse_workspace_file(ws, rejects, "--rejects")
    store = _analysis_store(st) if dry_run else st.store()
    defaults = _defaults(lists, tags, source, "stdin" if str(file) == "-" else Path(file).name, check_dns, fix_typos)
    columns = {k: v for k, v in (("email", email_column), ("name", name_column)) if v}
    # An in-memory store has no erased addresses, so it needs no key (and we create no secret.key).
    secret = bytes(32) if store.in_memory else st.secret()
    # SIGTERM (cron, kill) is an interrupt here too, so a copy of standard input is removed.
    with sigterm_interrupts(), seekable(file, sys.stdin.buffer) as path:
        summary = import_file(
            store, secret, path, defaults, st.now(),
            encoding=encoding, commit=not dry_run, rejects_path=rejects, columns=columns,
            shown_as="standard input" if str(file) == "-" else Path(file).name,
        )
    if rejects and not as_json:
        st.output.info(f"Rejected rows written to {rejects}" if summary.invalid else f"No rejected rows; {rejects} has only its header.")
    _show_summary(st, summary, as_json, "Dry run: nothing was written" if dry_run else verb.capitalize())


FileArg = Annotated[Path, typer.Argument(metavar="FILE", help="The CSV file (UTF-8, UTF-16 or cp1252; comma, semicolon or tab); - for standard input.")]
SourceOpt = Annotated[Optional[str], typer.Option("--source", metavar="TEXT", help="Where these people came from (default: the file name).")]
RejectsOpt = Annotated[Optional[Path], typer.Option("--rejects", metavar="FILE", help="Write the rows not imported to this CSV, to fix and import again.")]
DnsOpt = Annotated[bool, typer.Option("--check-dns", help="Also check that each domain can receive mail (slow; uses the network).")]
EncodingOpt = Annotated[Optional[str], typer.Option("--encoding", metavar="NAME", help="Read the file with this encoding instead of detecting it.")]
EmailColumnOpt = Annotated[
    Optional[str], typer.Option("--email-column", metavar="COLUMN", help="The column holding the addresses, by its header name.")
]
NameColumnOpt = Annotated[
    Optional[str], typer.Option("--name-column", metavar="COLUMN", help="The column holding the whole name, by its header name.")
]


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
    email_column: EmailColumnOpt = None,
    name_column: NameColumnOpt = None,
    fix_typos: FixTyposOpt = False,
) -> None:
    """Import subscribers from a CSV file or export.

    Recognises the column names of Mailchimp, Google and Outlook contacts, Excel and
    mailer's own export; --email-column and --name-column choose columns it does not know.
    """
    _run_import(ctx, file, lists, tags, source, dry_run, rejects, as_json, check_dns, encoding, "import",
                email_column, name_column, fix_typos)


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
    email_column: EmailColumnOpt = None,
    name_column: NameColumnOpt = None,
) -> None:
    """Check a CSV file as import would; writes nothing."""
    _run_import(ctx, file, lists, tags, source, True, rejects, as_json, check_dns, encoding, "validate",
                email_column, name_column)


StatusOpt = Annotated[str, typer.Option("--status", metavar="STATUS", help="active, unsubscribed, bounced or all.")]


def _check_status(status: str) -> str:
    if status not in (*STATUSES, "all"):
        raise InputError(f"--status must be one of {', '.join(STATUSES)} or all, not {status!r}.")
    return status


@app.command()
def export(
    ctx: typer.Context,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="Write to this file (default: stdout).")] = None,
    status: StatusOpt = "all",
    list_name: Annotated[Optional[str], typer.Option("--list", "-l", metavar="LIST", help="Only this list.")] = None,
    tags: TagFilterOpt = None,
) -> None:
    """Export subscribers as CSV (a backup import reads back).

    Times are UTC (ISO 8601); the consent record's columns come last.
    """
    st = state(ctx)
    store = st.store()
    rows = (
        export_row(s)
        for s in store.subscribers.stream(status=_check_status(status), list_name=list_name, tags=tags or [])
    )
    if output is not None:
        refuse_workspace_file(st.workspace(), output, "--output")
    if output is None:
        n = write_csv(sys.stdout, EXPORT_COLUMNS, rows)
    else:
        # UTF-8 with BOM: Excel then shows accented and non-Latin names correctly.
        with atomic_writer(output, encoding="utf-8-sig", newline="") as fh:
            n = write_csv(fh, EXPORT_COLUMNS, rows)
        st.output.info(f"Exported {n} subscribers to {output}")


subscribers_app = sub_app("subscribers", "List, show, add, unsubscribe, resubscribe and erase people.")
EmailArg = Annotated[str, typer.Argument(metavar="ADDRESS", help="The subscriber's email address.")]


def _key(email: str) -> str:
    try:
        return normalise_email(email)[1]
    except InvalidValue:
        return email.strip().lower()


def _subscriber_json(s: Subscriber) -> dict:
    return dict(zip(EXPORT_COLUMNS, export_row(s))) | {
        "lists": list(s.lists), "tags": list(s.tags), "left_lists": list(s.left_lists),
    }


def _history_json(h: HistoryItem) -> dict:
    return {"time": h.time, "kind": h.kind, "list": h.list_name, "campaign": h.campaign_id,
            "campaign_name": h.campaign_name, "status": h.status, "detail": h.detail}


@subscribers_app.command("list")
def list_(
    ctx: typer.Context,
    status: StatusOpt = "all",
    list_name: Annotated[Optional[str], typer.Option("--list", "-l", metavar="LIST", help="Only this list.")] = None,
    tags: TagFilterOpt = None,
    search: Annotated[Optional[str], typer.Option("--search", "-s", metavar="TEXT", help="Part of an address or name.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", metavar="N", help="Show at most this many.", min=1, max=2**62)] = None,
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
    rows = ([s.email, s.full_name, s.status, s.lists, s.tags] for s in subs)
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
def show(ctx: typer.Context, email: EmailArg, as_json: JsonOpt = False) -> None:
    """One person: details, consent, and what happened to them.

    Their deliveries, consent records and list changes, newest first.
    """
    st = state(ctx)
    store = st.store()
    sub = store.subscribers.require(_key(email))
    assert sub.id is not None
    history = store.events.history(sub.id)
    if as_json:
        st.output.json(_subscriber_json(sub) | {"history": [_history_json(h) for h in history]})
        return
    tz = st.workspace().config.sending.timezone
    pairs: list[tuple[str, str | tuple[str, ...]]] = [
        (k, shown_time(v, tz) if k in _TIME_FIELDS else v)
        for k, v in zip(EXPORT_COLUMNS, export_row(sub))
    ]
    if sub.left_lists:
        pairs.insert(EXPORT_COLUMNS.index("lists") + 1, ("left lists", sub.left_lists))
    out = st.output
    out.summary(pairs, title=sub.email)
    if not sub.has_consent_facts:
        out.warn("No consent fact is recorded for this person (no opt-in time, IP, form or consent text).")
    out.table(
        ["time", "what", "list", "campaign", "status", "detail"],
        (
            [shown_time(h.time, tz), h.kind, h.list_name,
             f"{h.campaign_id} {h.campaign_name}" if h.campaign_id else "", h.status, h.detail]
            for h in history
        ),
        title="History, newest first",
    )


def _erased_hint(address: str) -> str:
    return (f"If they have signed up again, `mailer subscribers add {address} --consent \"what they agreed to\"` "
            "records their new consent and brings them back.")


@subscribers_app.command()
def add(
    ctx: typer.Context,
    email: EmailArg,
    first_name: Annotated[str, typer.Option("--first-name", metavar="NAME", help="First name.")] = "",
    last_name: Annotated[str, typer.Option("--last-name", metavar="NAME", help="Last name.")] = "",
    lists: ListOpt = None,
    tags: TagOpt = None,
    source: Annotated[str, typer.Option("--source", metavar="TEXT", help="Where this person signed up.")] = "front desk",
    consent: Annotated[
        Optional[str],
        typer.Option("--consent", metavar="TEXT", help="What they agreed to, in the words they saw (a new consent record)."),
    ] = None,
    consent_version: Annotated[
        str, typer.Option("--consent-version", metavar="VERSION", help="Which version of that text.")
    ] = "",
    method: Annotated[
        str, typer.Option("--method", metavar="METHOD", help="How they agreed: " + ", ".join(CONSENT_METHODS) + ".")
    ] = "front-desk",
    fix_typos: FixTyposOpt = False,
) -> None:
    """Add one person (the same checks as import).

    With --consent this is a new consent record (method, time, the words they agreed to):
    the way back for someone who unsubscribed, bounced or was erased and signed up again.
    """
    st = state(ctx)
    store = st.store()
    if method not in CONSENT_METHODS:
        raise InputError(f"--method must be one of {', '.join(CONSENT_METHODS)}, not {method!r}.")
    defaults = _defaults(lists, tags, source, "command line", check_dns=False)
    fields = {"email": email, "first_name": first_name, "last_name": last_name, "optin_time": st.now(),
              "consent_method": method, "consent_text": consent or "", "consent_version": consent_version}
    sub, typo = look_alike(one_row(fields, defaults), 1, fix_typos)
    if typo is not None:
        st.output.warn(_typo_line(typo))
    address = sub.email
    outcome = store.subscribers.add(sub, st.secret(), st.now(), new_consent=bool(consent), rejoin=bool(lists))
    if outcome == "suppressed":
        if store.subscribers.get(sub.email_key) is None:
            raise InputError(f"{address} was erased, so it is not added back.", hint=_erased_hint(address))
        raise InputError(
            f"{address} has unsubscribed or bounced, so it is not added back.",
            hint=f"If they asked to come back: `mailer subscribers resubscribe {address}`; if they signed up "
            f"again, `mailer subscribers add {address} --consent \"what they agreed to\"` records it.",
        )
    if not consent and outcome == "added":
        st.output.warn(f'No --consent given: record what {address} agreed to, e.g. --consent "Specials and news by email".')
    said = {"back": "back on the list (new consent recorded)"}.get(outcome, outcome)
    st.output.info(f"{address}: {said}")


@subscribers_app.command()
def unsubscribe(
    ctx: typer.Context,
    email: EmailArg,
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why (kept with the record).")] = "asked the practice",
    lists: Annotated[
        Optional[list[str]],
        typer.Option("--list", "-l", metavar="LIST", help="Leave only this list; repeatable. Default: every list."),
    ] = None,
) -> None:
    """Stop mailing someone, or (--list) take them off one list.

    They stay on record, so no import brings them back; the lists they left stay left.
    """
    st = state(ctx)
    store = st.store()
    reason = check_text(reason, "reason")
    if lists:
        names = _lists(lists)
        gone = store.subscribers.leave(_key(email), names, reason, st.now())
        sub = store.subscribers.require(_key(email))
        stays = f"; still on {', '.join(sub.lists)}" if sub.lists else "; on no list now"
        if gone:
            st.output.info(f"{sub.email}: left {', '.join(gone)}{stays}")
        else:
            st.output.info(f"{sub.email}: was not on {', '.join(names)}{stays}")
        return
    changed = store.subscribers.unsubscribe(_key(email), reason, st.now())
    st.output.info(f"{email}: {'unsubscribed' if changed else 'was already unsubscribed'}")


@subscribers_app.command()
def resubscribe(
    ctx: typer.Context,
    email: EmailArg,
    lists: Annotated[
        Optional[list[str]],
        typer.Option("--list", "-l", metavar="LIST", help="Join this list again; repeatable."),
    ] = None,
) -> None:
    """Make someone active again, or (--list) join a list again.

    Only when they asked. Someone erased comes back only through `add --consent`.
    """
    st = state(ctx)
    store = st.store()
    key = _key(email)
    if store.subscribers.get(key) is None and store.subscribers.is_erased(st.secret(), key):
        raise NotFound(f"{email} was erased, so there is nothing to resubscribe.", hint=_erased_hint(email))
    if lists:
        joined = store.subscribers.join(key, _lists(lists), st.now())
        sub = store.subscribers.require(key)
        st.output.info(f"{sub.email}: " + (f"joined {', '.join(joined)}" if joined else "already on it")
                       + f"; on {', '.join(sub.lists)}")
        return
    changed = store.subscribers.resubscribe(key, st.now())
    st.output.info(f"{email}: {'active again' if changed else 'was already active'}")


@subscribers_app.command()
def erase(
    ctx: typer.Context,
    email: EmailArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why (kept with the suppression).")] = "erasure requested",
) -> None:
    """Delete a person's data for good (a hash keeps them off)."""
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
