"""Campaigns: a content file + a templates snapshot + an audience; what is due and when.

The CLI calls these; they never print. Running one is `runner.run_campaign`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterable

from .checks import Check, run_checks
from .clock import Clock, iso, parse_iso
from .config import Workspace
from .content import Content, load_content, parse_content
from .errors import InputError, MailerError, NotFound
from .lifecycle import CampaignStatus, DeliveryStatus
from .models import Campaign
from .render import Renderer, resolve_templates
from .store import Store
from .text import slug
from .validate import InvalidValue, parse_lists, parse_tags


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _audience(content: Content, list_name: str | None, tags: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    try:
        lists = parse_lists(list_name) if list_name else (content.template,)
        tag_names = parse_tags(list(tags))
    except InvalidValue as exc:
        raise InputError(str(exc)) from None
    if len(lists) != 1:
        raise InputError("A campaign goes to one list; give --list once.")
    return lists[0], tag_names


def draft_campaign(
    ws: Workspace,
    content_path: str | Path,
    clock: Clock,
    *,
    list_name: str | None = None,
    tags: Iterable[str] = (),
    name: str | None = None,
    scheduled_at: str = "",
) -> Campaign:
    """A campaign made from a content file, with a snapshot of it and of the templates; not stored (id 0)."""
    path = Path(content_path).absolute()
    content = load_content(path)
    audience_list, tag_names = _audience(content, list_name, tags)
    return Campaign(
        id=0, key=secrets.token_hex(5), name=slug(name or path.stem), content_path=str(path),
        content_hash=_hash(content.text), content=content.text,
        templates=json.dumps(resolve_templates(ws), sort_keys=True), template=content.template,
        subject=content.subject, list_name=audience_list, tags=tag_names,
        status=CampaignStatus.SCHEDULED if scheduled_at else CampaignStatus.DRAFT, status_reason="",
        scheduled_at=scheduled_at,
        created_at=iso(clock.now()), started_at="", finished_at="",
    )


def store_campaign(store: Store, draft: Campaign, clock: Clock) -> Campaign:
    """Store a drafted campaign exactly as it is; returns it with its id."""
    return store.campaigns.create(draft, iso(clock.now()))


def create_campaign(store: Store, ws: Workspace, content_path: str | Path, clock: Clock, **audience) -> Campaign:
    """`mailer campaign create`: draft a campaign from a content file and store it."""
    return store_campaign(store, draft_campaign(ws, content_path, clock, **audience), clock)


def find_campaign(store: Store, ref: str) -> Campaign:
    """A campaign by its id (`3`)."""
    if not ref.strip().isdigit():
        raise InputError(f"{ref!r} is not a campaign id.", hint="See `mailer campaign list`.")
    return store.campaigns.require(int(ref))


def campaign_for_send(
    store: Store,
    ws: Workspace,
    ref: str,
    clock: Clock,
    *,
    list_name: str | None = None,
    tags: Iterable[str] = (),
) -> tuple[Campaign, list[str]]:
    """What `mailer send REF` means: a campaign id, or a content file.

    For a file: the unfinished campaign made from it if there is one, else a new one,
    not yet stored (id 0: `run_campaign` stores it when sending really starts, and a
    dry-run never does); a finished one is never sent again this way. Returns the
    campaign and warnings.
    """
    if ref.strip().isdigit() and not Path(ref).is_file():
        return find_campaign(store, ref), []
    path = Path(ref).absolute()
    if not path.is_file():
        raise NotFound(f"{ref} is neither a campaign id nor a content file.", hint="See `mailer campaign list`.")
    made = store.campaigns.list(content_path=str(path))
    unfinished = [c for c in made if not c.finished]
    if unfinished:
        campaign = unfinished[-1]
        warnings = []
        if list_name or tags:
            warnings.append(f"--list/--tag ignored: campaign {campaign.id} already has its audience.")
        return campaign, warnings
    if made:
        last = made[-1]
        raise InputError(
            f"{path.name} was already sent as campaign {last.id} ({last.status}); it is not sent again.",
            hint=f"To try its failed deliveries again: `mailer send {last.id} --retry-failed`; to send it to "
            f"everyone once more: `mailer campaign create {ref}`, then send the new campaign.",
        )
    return draft_campaign(ws, path, clock, list_name=list_name, tags=tags), []


def refresh_snapshot(store: Store | None, ws: Workspace, campaign: Campaign) -> tuple[Campaign, list[str]]:
    """Before a campaign starts, its content file and templates may still change: take them again.

    Once started, the snapshot is what is sent; a changed file is only warned about.
    """
    notes: list[str] = []
    path = Path(campaign.content_path) if campaign.content_path else None
    current = None
    if path is not None and path.is_file():
        current = load_content(path)
    if campaign.started:
        if current is not None and _hash(current.text) != campaign.content_hash:
            notes.append(
                f"{path.name} has changed since campaign {campaign.id} started; the copy taken then is what is sent."
            )
        return campaign, notes
    templates = json.dumps(resolve_templates(ws), sort_keys=True)
    content = current or parse_content(campaign.content, campaign.name)
    if content.text != campaign.content or templates != campaign.templates:
        if content.text != campaign.content:
            notes.append(f"{path.name} changed since campaign {campaign.id} was created; sending the new text.")
        campaign = replace(
            campaign, content=content.text, content_hash=_hash(content.text), templates=templates,
            subject=content.subject, template=content.template,
        )
        if store is not None and campaign.id:
            store.campaigns.update_snapshot(campaign)
    return campaign, notes


def renderer_for(campaign: Campaign, ws: Workspace, secret: bytes, clock: Clock) -> Renderer:
    """The campaign's snapshot compiled once, ready to render a message per subscriber."""
    content = parse_content(campaign.content, Path(campaign.content_path).name or campaign.name)
    return Renderer(
        content, json.loads(campaign.templates), ws.config, secret,
        list_name=campaign.list_name, campaign_key=campaign.key, clock=clock,
    )


def checks_for(campaign: Campaign, ws: Workspace, secret: bytes, clock: Clock, renderer: Renderer | None = None) -> list[Check]:
    """The pre-send checks of `mailer check`, on the campaign's snapshot."""
    content = parse_content(campaign.content, Path(campaign.content_path).name or campaign.name)
    return run_checks(content, json.loads(campaign.templates), ws.config, secret, clock, renderer)


def due_campaigns(store: Store, now: datetime, max_lateness_hours: float) -> tuple[list[Campaign], list[Campaign]]:
    """What `run-due` should send now, and what is too late to send without a human.

    Due: campaigns left part-sent (daily cap, outage) first, then scheduled ones whose
    time has come, oldest first. Late: scheduled ones whose time passed more than
    max_lateness hours ago (the machine was off); each is returned once, then marked.
    """
    started, scheduled, late = [], [], []
    for c in store.campaigns.list(statuses=(CampaignStatus.SCHEDULED, CampaignStatus.SENDING)):
        if c.status == CampaignStatus.SENDING:
            if store.deliveries.counts(c.id)[DeliveryStatus.PENDING]:
                started.append(c)
            continue
        if c.status_reason or not c.scheduled_at:
            continue  # already reported as late: waits for `mailer send` or a new time
        when = parse_iso(c.scheduled_at)
        if when > now:
            continue
        if now - when > timedelta(hours=max_lateness_hours):
            late.append(c)
        else:
            scheduled.append(c)
    scheduled.sort(key=lambda c: (c.scheduled_at, c.id))
    for c in late:
        store.campaigns.mark_late(
            c.id,
            f"missed its time ({c.scheduled_at}) by more than {max_lateness_hours:g} hours; not sent automatically",
        )
    return started + scheduled, late


_PROBE_CONTENT = {
    "news": "---\nsubject: Template check\ntemplate: news\n---\nHi {{ first_name | default('there') }},\n\n## News\n\nText.\n",
    "specials": (
        "---\nsubject: Template check\ntemplate: specials\noffers:\n  - title: Offer\n    details: Details.\n"
        "    price: \"$1\"\n---\nHi {{ first_name | default('there') }},\n"
    ),
}


def template_problems(ws: Workspace, secret: bytes, clock: Clock) -> list[str]:
    """Errors the pre-send checks find with the templates in use and the practice details.

    Both templates are tried; a problem they share (an empty postal address) is said once.
    """
    templates = resolve_templates(ws)
    problems: list[str] = []
    for name, text in _PROBE_CONTENT.items():
        try:
            checks = run_checks(parse_content(text, f"{name} template check"), templates, ws.config, secret, clock)
            found = [f"{c.name}: {c.message}" for c in checks if c.level == "error"]
        except MailerError as exc:
            found = [f"{name}: {exc.message}"]
        problems += [p for p in found if p not in problems]
    return problems
