"""Commands about messages: preview, check, templates list, and unsubscribe TOKEN."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..checks import run_checks
from ..content import load_content
from ..errors import ExitCode, MailerError, NotFound
from ..render import compile_campaign, resolve_templates, sample_subscriber, templates_in_use
from ..tokens import verify_token
from ..validate import InvalidValue, normalise_email
from . import app, state, sub_app

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ContentArg = Annotated[Path, typer.Argument(help="The content file: Markdown with front matter (see examples/).")]


class Format(str, Enum):
    html = "html"
    text = "text"
    eml = "eml"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@app.command()
def preview(
    ctx: typer.Context,
    content: ContentArg,
    to: Annotated[Optional[str], typer.Option("--to", help="Render for this stored subscriber (default: a sample one).")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="html, text or eml (the whole message).")] = Format.html,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file ('-' for stdout).")] = None,
    list_name: Annotated[Optional[str], typer.Option("--list", "-l", help="The list it goes to (default: the template's name).")] = None,
) -> None:
    """Render one message and write it; on a terminal, also show the text part."""
    st = state(ctx)
    ws = st.workspace()
    parsed = load_content(content)
    list_name = list_name or parsed.template
    if to:
        try:
            key = normalise_email(to)[1]
        except InvalidValue as exc:
            raise NotFound(f"{to!r} is not an email address: {exc}") from None
        subscriber = st.store().require(key)
    else:
        subscriber = sample_subscriber(list_name)
    campaign = compile_campaign(
        parsed, resolve_templates(ws), ws.config, ws.secret(),
        list_name=list_name, campaign_key=f"preview:{content.name}", clock=st.clock,
    )
    message = campaign.render(subscriber)
    data = {Format.html: message.html.encode("utf-8"), Format.text: message.text.encode("utf-8"), Format.eml: message.data}[fmt]
    out = st.output
    if output is None and not out.is_terminal:
        output = Path("-")
    if output is None:
        # On a terminal the HTML goes to a file to open in a browser; the text is shown.
        folder = ws.home / "previews"
        folder.mkdir(exist_ok=True)
        output = folder / f"{content.stem}.{'txt' if fmt is Format.text else fmt.value}"
    if str(output) == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        _write_atomic(output, data)
    if out.is_terminal:
        out.line(message.text)
    who = "a sample subscriber" if not to else subscriber.email
    if str(output) != "-":
        out.info(f"Wrote the {fmt.value} of {content.name} for {who} to {output}")


@app.command()
def check(ctx: typer.Context, content: ContentArg, as_json: JsonOpt = False) -> None:
    """Pre-send checks: required fields, links, unsubscribe and address, size, offer dates."""
    from ..checks import Check

    st = state(ctx)
    ws = st.workspace()
    try:
        parsed = load_content(content)
        checks = run_checks(parsed, resolve_templates(ws), ws.config, ws.secret(), st.clock)
    except MailerError as exc:
        checks = [Check("error", "content file", exc.message + (f" ({exc.hint})" if exc.hint else ""))]
    errors = sum(c.level == "error" for c in checks)
    warnings = sum(c.level == "warning" for c in checks)
    out = st.output
    if as_json:
        out.json({
            "file": str(content),
            "ok": errors == 0,
            "errors": errors,
            "warnings": warnings,
            "checks": [{"level": c.level, "check": c.name, "message": c.message} for c in checks],
        })
    else:
        out.table(["level", "check", "message"], ([c.level, c.name, c.message] for c in checks), title=str(content))
        out.info(f"{errors} error(s), {warnings} warning(s)" + ("; fix the errors before sending." if errors else "."))
    if errors:
        raise typer.Exit(int(ExitCode.USAGE))


templates_app = sub_app("templates", "The message templates in use: packaged, or your own in the workspace.")


@templates_app.command("list")
def templates_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Each template, whether it is the packaged one or the workspace's own, and its path."""
    st = state(ctx)
    rows = templates_in_use(st.workspace(must_exist=False))
    if as_json:
        st.output.json([{"name": n, "source": s, "path": str(p)} for n, s, p in rows])
        return
    st.output.table(["name", "source", "path"], ([n, s, str(p)] for n, s, p in rows), title="Templates")


@app.command()
def unsubscribe(
    ctx: typer.Context,
    token: Annotated[str, typer.Argument(help="The token from an unsubscribe link or email subject.")],
    as_json: JsonOpt = False,
) -> None:
    """Apply an unsubscribe link's token: that person gets no more email from any list."""
    st = state(ctx)
    ws = st.workspace()
    info = verify_token(ws.secret(), token)
    store = st.store()
    sub = store.get_by_id(info.subscriber_id)
    if sub is None:
        result = {"subscriber": None, "list": info.list_name, "issued": info.issued.isoformat(), "changed": False}
        message = "The person this token was made for is no longer on the list (erased); nothing to do."
    else:
        changed = store.unsubscribe(sub.email_key, reason=f"unsubscribe link ({info.list_name})", now=st.now())
        result = {"subscriber": sub.email, "list": info.list_name, "issued": info.issued.isoformat(), "changed": changed}
        message = f"{sub.email}: {'unsubscribed' if changed else 'was already unsubscribed'}"
    if as_json:
        st.output.json(result)
    else:
        st.output.info(message)
