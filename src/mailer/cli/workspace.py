"""`mailer init`: create a workspace and its commented mailer.toml."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from ..config import EXAMPLE_CONFIG, Config, PracticeConfig, SenderConfig, load_config, render_config
from ..files import write_atomic
from ..store import Store
from . import app, state


def _ask_practice(default: Config) -> Config:
    p, s = default.practice, default.sender
    typer.echo("About your practice (shown in every message; press Enter to keep a value):")
    name = typer.prompt("Practice name", default=p.name or "My Practice")
    address = typer.prompt("Postal address (street, city, state, ZIP)", default=p.address or "", show_default=bool(p.address))
    phone = typer.prompt("Phone", default=p.phone or "", show_default=bool(p.phone))
    website = typer.prompt("Website (https://...)", default=p.website or "", show_default=bool(p.website))
    booking = typer.prompt("Online booking page (https://...)", default=p.booking_url or website, show_default=True)
    logo = typer.prompt("Logo image URL (https://..., or empty)", default=p.logo_url or "", show_default=False)
    from_email = typer.prompt("Send from address", default=s.from_email or "", show_default=bool(s.from_email))
    return dataclasses.replace(
        default,
        practice=PracticeConfig(name=name, address=address, phone=phone, website=website, booking_url=booking, logo_url=logo),
        sender=dataclasses.replace(s, from_name=s.from_name or name, from_email=from_email),
    )


@app.command()
def init(
    ctx: typer.Context,
    example: Annotated[
        bool, typer.Option("--example", help="Fill mailer.toml with the sample practice (to try mailer out).")
    ] = False,
    no_input: Annotated[bool, typer.Option("--no-input", help="Do not ask questions; write the defaults.")] = False,
) -> None:
    """Create the workspace and its commented mailer.toml.

    Also mailer.db, secret.key, templates/, outbox/ and logs/.
    """
    st = state(ctx)
    ws = st.workspace(must_exist=False)
    out = st.output
    ws.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if ws.config_path.exists():
        load_config(ws.config_path)  # a broken file is reported, not overwritten
        out.info(f"{ws.config_path} already exists; left as it is.")
    else:
        config = EXAMPLE_CONFIG if example else Config(sender=SenderConfig(), practice=PracticeConfig())
        if not example and not no_input and out.stdin_is_terminal:
            config = _ask_practice(config)
        write_atomic(ws.config_path, render_config(config), exclusive=True)
        out.info(f"Wrote {ws.config_path}" + ("" if example else "; edit it to fill in your practice and SMTP details."))
    for d in (ws.templates_dir, ws.outbox_dir, ws.logs_dir):
        d.mkdir(exist_ok=True)
    with Store.open(ws.db_path) as store:
        store.check_secret(ws.secret())
    out.line(str(ws.home))
