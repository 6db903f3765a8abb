"""`mailer init`: create a workspace and its commented mailer.toml."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Optional

import typer

from ..config import EXAMPLE_CONFIG, Config, PracticeConfig, SenderConfig, load_config, render_config
from ..errors import InputError
from ..files import private_dir, write_atomic
from ..hipaa import hipaa_problems
from ..home import open_list, start_new_list
from ..postal import looks_like_postal_address
from ..providers import BY_NAME, apply_preset, names, providers_for_host
from . import app, state


def _ask_link(question: str, default: str) -> str:
    """A link every message carries: https only; `example.com` is offered back as https://example.com."""
    while True:
        value = typer.prompt(question, default=default, show_default=bool(default)).strip()
        if not value or value.startswith("https://"):
            return value
        if value.startswith("http://"):
            typer.echo("Links in email must start with https:// (mail programs warn about http://); "
                       "check that the https:// address works and give it.")
            continue
        fixed = "https://" + value
        if typer.confirm(f"Use {fixed}?", default=True):
            return fixed


def _ask_address(default: str) -> str:
    """The postal address the law wants in every message; one that does not look like one is asked again."""
    while True:
        value = typer.prompt("Postal address (street, city, state, ZIP)", default=default, show_default=bool(default)).strip()
        if looks_like_postal_address(value):
            return value
        typer.echo('That does not look like a postal address; give a street and number (or a PO box) and a ZIP, '
                   'e.g. "1 Example Street, Closter, NJ 07624".')
        if not value or typer.confirm("Keep it anyway (mailer will not send until it is fixed in mailer.toml)?", default=False):
            return value


def _ask_practice(default: Config) -> Config:
    p, s = default.practice, default.sender
    typer.echo("About your practice (shown in every message; press Enter to keep a value):")
    name = typer.prompt("Practice name", default=p.name or "My Practice")
    address = _ask_address(p.address or "")
    phone = typer.prompt("Phone", default=p.phone or "", show_default=bool(p.phone))
    website = _ask_link("Website (https://...)", p.website or "")
    booking = _ask_link("Online booking page (https://...)", p.booking_url or website)
    logo = _ask_link("Logo image URL (https://..., or empty)", p.logo_url or "")
    from_email = typer.prompt("Send from address", default=s.from_email or "", show_default=bool(s.from_email))
    return dataclasses.replace(
        default,
        practice=PracticeConfig(name=name, address=address, phone=phone, website=website, booking_url=booking, logo_url=logo),
        sender=dataclasses.replace(s, from_name=s.from_name or name, from_email=from_email),
    )


def _ask_hipaa(config: Config, hipaa: bool, asking: bool, provider: str | None) -> Config:
    if not hipaa and asking:
        hipaa = typer.confirm("Is this a HIPAA-covered practice?", default=False)
    if not hipaa:
        return config
    baa = config.smtp.baa
    # The preset chosen, else one on the same servers that can be under a BAA (a custom
    # domain through smtp.gmail.com is Google Workspace, not personal Gmail).
    relay = BY_NAME[provider] if provider else next((p for p in providers_for_host(config.smtp.host) if p.baa), None)
    if asking and relay is not None and relay.baa:
        baa = typer.confirm(f"Have you signed a business associate agreement (BAA) with {relay.label}?", default=False)
    return dataclasses.replace(
        config,
        practice=dataclasses.replace(config.practice, hipaa=True),
        smtp=dataclasses.replace(config.smtp, baa=baa),
    )


@app.command()
def init(
    ctx: typer.Context,
    example: Annotated[
        bool, typer.Option("--example", help="Fill mailer.toml with the sample practice (to try mailer out).")
    ] = False,
    no_input: Annotated[bool, typer.Option("--no-input", help="Do not ask questions; write the defaults.")] = False,
    new_list: Annotated[
        bool,
        typer.Option("--new-list", help="Start an empty list with a new key; the old mailer.db and secret.key are kept, renamed."),
    ] = False,
    provider: Annotated[
        Optional[str],
        typer.Option("--provider", help="Fill [smtp] and the sending limits for: " + ", ".join(names()) + "."),
    ] = None,
    hipaa: Annotated[
        bool, typer.Option("--hipaa", help="A HIPAA-covered practice: sending needs a relay under a business associate agreement.")
    ] = False,
) -> None:
    """Create the workspace and its commented mailer.toml.

    Also mailer.db, secret.key, templates/, outbox/ and logs/.
    """
    if provider is not None and provider.lower() not in BY_NAME:
        raise InputError(f"Unknown provider {provider!r}; the presets are: {', '.join(names())}.")
    st = state(ctx)
    ws = st.workspace(must_exist=False)
    out = st.output
    try:
        ws.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise InputError(f"Cannot create the workspace {ws.home}: {exc.strerror}.",
                         hint="Choose a folder you can write to, with --home or MAILER_HOME.") from None
    if ws.config_path.exists():
        load_config(ws.config_path)  # a broken file is reported, not overwritten
        out.info(f"{ws.config_path} already exists; left as it is.")
        if provider or hipaa:
            out.warn("--provider and --hipaa fill a new mailer.toml only; edit the existing one to change it.")
    else:
        config = EXAMPLE_CONFIG if example else Config(sender=SenderConfig(), practice=PracticeConfig())
        if provider:
            config = apply_preset(config, provider.lower())
        asking = not example and not no_input and out.stdin_is_terminal
        if asking:
            config = _ask_practice(config)
        config = _ask_hipaa(config, hipaa, asking, provider.lower() if provider else None)
        write_atomic(ws.config_path, render_config(config), exclusive=True)
        out.info(f"Wrote {ws.config_path}" + ("" if example else "; edit it to fill in your practice and SMTP details."))
        if provider:
            p = BY_NAME[provider.lower()]
            out.info(f"[smtp] and [sending] are set for {p.label}: {p.notes}.")
        for problem in hipaa_problems(config):
            out.warn(problem)
    for d in (ws.templates_dir, ws.outbox_dir, ws.logs_dir):
        private_dir(d)
    if new_list:
        stamp = st.clock.now().strftime("%Y%m%d-%H%M%S")
        moved = start_new_list(ws, stamp)
        for path in moved:
            out.warn(f"Kept the old {path.name.split('.old-')[0]} as {path}.")
    store, _ = open_list(ws, create=True, fresh=new_list)
    store.close()
    out.line(str(ws.home))
