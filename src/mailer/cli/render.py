"""Commands about messages: preview, check, templates list, and unsubscribe TOKEN."""

from __future__ import annotations

import os
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..campaigns import check_content
from ..checks import Check
from ..config import Workspace
from ..content import load_content
from ..errors import ExitCode, InputError, MailerError, NotFound
from ..files import private_dir, read_head, write_atomic
from ..home import refuse_workspace_file
from ..inbox.process import MessageReport, process_inbox
from ..inbox.sources import MAX_MESSAGE_BYTES, OneMessage
from ..render import compile_campaign, resolve_templates, sample_subscriber, templates_in_use
from ..template_files import copy_template, template_names
from ..tokens import token_from, verify_token
from ..validate import InvalidValue, normalise_email
from . import AppState, app, state, sub_app
from .options import JsonOpt

ContentArg = Annotated[Path, typer.Argument(metavar="FILE", help="The content file: Markdown with front matter (see examples/).")]


class Format(str, Enum):
    html = "html"
    text = "text"
    eml = "eml"


@app.command()
def preview(
    ctx: typer.Context,
    content: ContentArg,
    to: Annotated[Optional[str], typer.Option("--to", metavar="ADDRESS", help="Render for this stored subscriber (default: a sample one).")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="html, text or eml (the whole message).")] = Format.html,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="Write to this file ('-' for stdout).")] = None,
    list_name: Annotated[Optional[str], typer.Option("--list", "-l", metavar="LIST", help="The list it goes to (default: the template's name).")] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open the HTML in your web browser (from a temporary file).")] = False,
) -> None:
    """Render one message for a sample or named subscriber.

    On a terminal the text part is shown too; --open shows the HTML in your browser.
    """
    st = state(ctx)
    ws = st.workspace()
    parsed = load_content(content)
    list_name = list_name or parsed.template
    if to:
        try:
            key = normalise_email(to)[1]
        except InvalidValue as exc:
            raise NotFound(f"{to!r} is not an email address: {exc}") from None
        subscriber = st.store().subscribers.require(key)
    else:
        subscriber = sample_subscriber(list_name)
    campaign = compile_campaign(
        parsed, resolve_templates(ws), ws.config, st.secret(),
        list_name=list_name, campaign_key=f"preview:{content.name}", clock=st.clock,
    )
    message = campaign.render(subscriber)
    out = st.output
    if open_:
        _open_in_browser(st, content, message.html)
        if output is None:
            return
    data = {Format.html: message.html.encode("utf-8"), Format.text: message.text.encode("utf-8"), Format.eml: message.data}[fmt]
    if output is None and not out.is_terminal:
        output = Path("-")
    if output is None:
        # On a terminal the HTML goes to a file to open in a browser; the text is shown.
        folder = private_dir(ws.home / "previews")
        output = folder / f"{content.stem}.{'txt' if fmt is Format.text else fmt.value}"
    if str(output) == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        refuse_workspace_file(ws, output, "--output")
        write_atomic(output, data)
    if out.is_terminal:
        out.line(message.text)
    who = "a sample subscriber" if not to else subscriber.email
    if str(output) != "-":
        out.info(f"Wrote the {fmt.value} of {content.name} for {who} to {output}")


def _open_in_browser(st: AppState, content: Path, html: str) -> None:
    """Write the HTML to a private temporary file and hand it to the system's browser."""
    # In the workspace's private previews/ (not /tmp): with --to it holds a patient's name and link.
    folder = private_dir(st.workspace().home / "previews")
    fd, name = tempfile.mkstemp(prefix=f"{content.stem}-", suffix=".html", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:  # mkstemp made it 0600: it may hold a name
        fh.write(html)
    path = Path(name)
    if st.open_browser(path.as_uri()):
        st.output.info(f"Opened {path} in your web browser.")
    else:
        st.output.warn(f"No web browser could be started here; open {path} yourself.")


@app.command()
def check(
    ctx: typer.Context,
    content: Annotated[
        Optional[Path], typer.Argument(help="The content file to check (Markdown with front matter); optional with --dns.")
    ] = None,
    dns: Annotated[
        bool, typer.Option("--dns", help="Check the From domain's SPF, DKIM and DMARC records for your relay (needs DNS).")
    ] = False,
    nameserver: Annotated[
        Optional[str], typer.Option("--nameserver", help="With --dns: ask this DNS server (IP or IP:PORT), not the system's.")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="With --dns: seconds to wait for the DNS answers of each name.")
    ] = 5.0,
    allow_repeat: Annotated[
        bool, typer.Option("--allow-repeat", help="A letter sent lately is a warning, not an error (as send --allow-repeat).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a letter before sending; --dns checks your domain.

    The same checks `mailer send` insists on: required fields, links, the unsubscribe
    link and postal address, size, offer dates, and the same letter sent lately.
    """
    if content is None and not dns:
        raise InputError(
            "Nothing to check: give a content file, or --dns.",
            hint="`mailer check letter.md` checks a letter; `mailer check --dns` checks your domain's SPF, DKIM and DMARC.",
        )
    st = state(ctx)
    ws = st.workspace()
    out = st.output
    document: dict = {}
    code = ExitCode.OK
    if content is not None:
        try:
            store = st.store() if ws.db_path.exists() else None
            checks = check_content(store, ws, content, st.secret(), st.clock, allow_repeat=allow_repeat)
        except MailerError as exc:
            checks = [Check("error", "content file", exc.message + (f" ({exc.hint})" if exc.hint else ""))]
        errors = sum(c.level == "error" for c in checks)
        warnings = sum(c.level == "warning" for c in checks)
        document.update({
            "file": str(content),
            "ok": errors == 0,
            "errors": errors,
            "warnings": warnings,
            "checks": [{"level": c.level, "check": c.name, "message": c.message} for c in checks],
        })
        if not as_json:
            out.table(["level", "check", "message"], ([c.level, c.name, c.message] for c in checks), title=str(content))
            out.info(f"{errors} error(s), {warnings} warning(s)" + ("; fix the errors before sending." if errors else "."))
        if errors:
            code = ExitCode.USAGE
    if dns:
        dns_code, dns_document = _check_dns(st, ws, nameserver, timeout, as_json)
        document["dns"] = dns_document
        code = max(code, dns_code)
    if as_json:
        out.json(document)
    if code:
        raise typer.Exit(int(code))


def _check_dns(st: AppState, ws: Workspace, nameserver: str | None, timeout: float, as_json: bool) -> tuple[ExitCode, dict]:
    """`check --dns`: errors exit 2 (fix the records), no DNS answer exits 1, else 0."""
    from ..dnscheck import DnsFinding, NoDnsAnswer, check_sender_dns, make_resolver

    try:
        resolver = make_resolver(nameserver, timeout)
    except NoDnsAnswer as exc:
        resolver = None
        findings = [DnsFinding("DNS", "", "", "warning", f"Cannot check: no DNS answer ({exc}). `mailer check --dns` needs to reach a DNS server.")]
    except ValueError:
        raise InputError(f"--nameserver {nameserver!r} is not an IP address or IP:PORT, e.g. 127.0.0.1:5353.") from None
    if resolver is not None:
        findings = check_sender_dns(ws.config, resolver, home=ws.home)
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    unanswered = any(f.record == "DNS" for f in findings)
    domain = next((f.name for f in findings if f.record in ("SPF", "From domain") and f.name), "")
    document = {
        "domain": domain,
        "ok": errors == 0 and not unanswered,
        "checked": not unanswered,
        "errors": errors,
        "warnings": warnings,
        "records": [
            {"record": f.record, "name": f.name, "found": f.found, "level": f.level, "verdict": f.verdict, "publish": f.publish}
            for f in findings
        ],
    }
    if not as_json:
        st.output.table(
            ["level", "record", "name", "found", "verdict", "publish"],
            ([f.level, f.record, f.name, f.found, f.verdict, f.publish] for f in findings),
            title=f"Sender authentication of {domain}" if domain else "Sender authentication",
        )
        if unanswered:
            st.output.info("Nothing was checked: `mailer check --dns` needs DNS.")
        else:
            st.output.info(
                f"{errors} error(s), {warnings} warning(s)"
                + ("; publish the records shown, then run `mailer check --dns` again." if errors else ".")
            )
    code = ExitCode.USAGE if errors else ExitCode.PARTIAL if unanswered else ExitCode.OK
    return code, document


templates_app = sub_app("templates", "The message templates: packaged, or your own copies.")


@templates_app.command("list")
def templates_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Each template: packaged or your own, and where it is."""
    st = state(ctx)
    rows = templates_in_use(st.workspace(must_exist=False))
    if as_json:
        st.output.json([{"name": n, "source": s, "path": str(p)} for n, s, p in rows])
        return
    st.output.table(["name", "source", "path"], ([n, s, str(p)] for n, s, p in rows), title="Templates")


@templates_app.command("copy")
def templates_copy(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help=f"{', '.join(template_names())}, or one file's name.")],
) -> None:
    """Copy a packaged template into templates/ to make it your own.

    The copy in the workspace is used from then on; an existing file is never replaced.
    """
    st = state(ctx)
    ws = st.workspace()
    for path in copy_template(ws, name):
        st.output.line(str(path))
    st.output.info("Edit them there; `mailer templates list` shows they are now the workspace's own.")


@app.command()
def unsubscribe(
    ctx: typer.Context,
    token: Annotated[
        Optional[str],
        typer.Argument(metavar="TOKEN", help="The token, an unsubscribe mail's subject, or the whole link."),
    ] = None,
    mail: Annotated[
        Optional[Path],
        typer.Option("--mail", metavar="FILE", help="A whole unsubscribe mail, saved or pasted (- for standard input)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Unsubscribe whoever an unsubscribe link or mail names.

    Takes the token, the subject of an unsubscribe mail ("unsubscribe TOKEN"), or the
    whole mailto: or https: link; that person gets no more email from any list. With
    --mail, a whole mail is read as the mailbox loop reads it (a reply saying "remove me",
    a complaint, a bounce).
    """
    st = state(ctx)
    if (token is None) == (mail is None):
        raise InputError("Give the token (or link), or --mail FILE with the whole mail; one of the two.")
    if mail is not None:
        _unsubscribe_mail(st, mail, as_json)
        return
    assert token is not None
    info = verify_token(st.secret(), token_from(token))
    store = st.store()
    sub = store.subscribers.get_by_id(info.subscriber_id) if info.subscriber_id else None
    if not info.subscriber_id:  # previews and test messages carry a token for nobody (id 0)
        result = {"subscriber": None, "list": info.list_name, "issued": info.issued.isoformat(), "changed": False}
        message = "This link comes from a preview or a test message; it names nobody, so nothing changed."
    elif sub is None:
        result = {"subscriber": None, "list": info.list_name, "issued": info.issued.isoformat(), "changed": False}
        message = "The person this token was made for is no longer on the list (erased); nothing to do."
    else:
        changed = store.subscribers.unsubscribe(sub.email_key, reason=f"unsubscribe link ({info.list_name})", now=st.now())
        result = {"subscriber": sub.email, "list": info.list_name, "issued": info.issued.isoformat(), "changed": changed}
        message = f"{sub.email}: {'unsubscribed' if changed else 'was already unsubscribed'}"
    if as_json:
        st.output.json(result)
    else:
        st.output.info(message)


def _unsubscribe_mail(st: AppState, path: Path, as_json: bool) -> None:
    """One mail through the mailbox loop's classifier and rules (and remembered, like the loop's)."""
    data = read_head(path, MAX_MESSAGE_BYTES, InputError, what="file", folder_hint="give the file of one saved mail")
    if not data.strip():
        raise InputError(f"{path} is empty: paste or save the whole mail, headers included.")
    mailbox = st.store().mailbox
    reports: list[MessageReport] = []
    process_inbox(OneMessage(data, str(path)), st.secret(), mailbox, mailbox, clock=st.clock, on_message=reports.append)
    [report] = reports
    if as_json:
        st.output.json(report.as_json())
        return
    who = f" ({report.subscriber})" if report.subscriber else ""
    st.output.info(f"{report.kind}: {report.outcome}{who}. {report.reason}")
    if report.outcome in ("unmatched", "left alone", "refused"):
        raise typer.Exit(int(ExitCode.PARTIAL))
