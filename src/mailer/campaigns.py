"""Campaigns: content + templates snapshot + audience, and a send job that runs one.

The CLI calls these; they never print. A send job goes: pre-send checks -> fix the
audience (once) -> the engine (send.py) over a transport -> the campaign's new status.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterable, Iterator

from .checks import Check, run_checks
from .clock import Clock, iso, parse_iso
from .config import Workspace
from .content import Content, load_content, parse_content
from .errors import ConfigError, InputError, MailerError, NotFound
from .models import Campaign
from .render import CompiledCampaign, compile_campaign, resolve_templates
from .send import AudienceLog, CampaignSender, Event, SendOptions, SendResult, StoreLog
from .store import Store
from .transport import DryRunTransport, SmtpTransport, Transport
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
        id=0, key=secrets.token_hex(5), name=name or path.stem, content_path=str(path),
        content_hash=_hash(content.text), content=content.text,
        templates=json.dumps(resolve_templates(ws), sort_keys=True), template=content.template,
        subject=content.subject, list_name=audience_list, tags=tag_names,
        status="scheduled" if scheduled_at else "draft", status_reason="", scheduled_at=scheduled_at,
        created_at=iso(clock.now()), started_at="", finished_at="",
    )


_STORED_FIELDS = (
    "key", "name", "content_path", "content_hash", "content", "templates", "template", "subject",
    "list_name", "tags", "scheduled_at",
)


def store_campaign(store: Store, draft: Campaign, clock: Clock) -> Campaign:
    """Store a drafted campaign exactly as it is; returns it with its id."""
    return store.create_campaign(**{k: getattr(draft, k) for k in _STORED_FIELDS}, now=iso(clock.now()))


def create_campaign(store: Store, ws: Workspace, content_path: str | Path, clock: Clock, **audience) -> Campaign:
    """`mailer campaign create`: draft a campaign from a content file and store it."""
    return store_campaign(store, draft_campaign(ws, content_path, clock, **audience), clock)


def find_campaign(store: Store, ref: str) -> Campaign:
    """A campaign by its id (`3`)."""
    if not ref.strip().isdigit():
        raise InputError(f"{ref!r} is not a campaign id.", hint="See `mailer campaign list`.")
    return store.require_campaign(int(ref))


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
    not yet stored (id 0: `SendJob.run` stores it when sending really starts, and a
    dry-run never does); a finished one is never sent again this way. Returns the
    campaign and warnings.
    """
    if ref.strip().isdigit() and not Path(ref).is_file():
        return find_campaign(store, ref), []
    path = Path(ref).absolute()
    if not path.is_file():
        raise NotFound(f"{ref} is neither a campaign id nor a content file.", hint="See `mailer campaign list`.")
    made = store.campaigns(content_path=str(path))
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
    started = campaign.status not in ("draft", "scheduled")
    if started:
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
            store.update_snapshot(campaign)
    return campaign, notes


def sender_address(ws: Workspace) -> str:
    """MAIL FROM: [smtp] envelope_from, else [sender] from_email."""
    address = ws.config.smtp.envelope_from or ws.config.sender.from_email
    if not address:
        raise ConfigError("No sender address: fill in [sender] from_email in mailer.toml.")
    return address


def renderer_for(campaign: Campaign, ws: Workspace, secret: bytes, clock: Clock) -> CompiledCampaign:
    content = parse_content(campaign.content, Path(campaign.content_path).name or campaign.name)
    return compile_campaign(
        content, json.loads(campaign.templates), ws.config, secret,
        list_name=campaign.list_name, campaign_key=campaign.key, clock=clock,
    )


def checks_for(campaign: Campaign, ws: Workspace, secret: bytes, clock: Clock, renderer: CompiledCampaign | None = None) -> list[Check]:
    content = parse_content(campaign.content, Path(campaign.content_path).name or campaign.name)
    return run_checks(content, json.loads(campaign.templates), ws.config, secret, clock, renderer)


def options_from_config(ws: Workspace, **overrides) -> SendOptions:
    """[sending] in mailer.toml, with command-line options (those not None) on top."""
    s = ws.config.sending
    values = dict(batch_size=s.batch_size, pause=s.pause, rate=s.rate, per_day=s.per_day, timezone=s.timezone,
                  connections=s.connections)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values["batch_size"] < 1:
        raise InputError("--batch-size must be at least 1.")
    if not 1 <= values["connections"] <= 20:
        raise InputError("--connections must be between 1 and 20.")
    return SendOptions(**values)


@dataclass
class SendJob:
    """One run of one campaign: real (SMTP, delivery log) or dry-run (.eml files, nothing stored)."""

    store: Store
    ws: Workspace
    campaign: Campaign
    clock: Clock
    options: SendOptions
    secret: bytes
    dry_run: bool = False
    transport: Transport | None = None
    notes: list[str] = field(default_factory=list)
    result: SendResult = field(default_factory=SendResult)
    _renderer: CompiledCampaign | None = None  # built for the checks, used again to send

    @property
    def outbox(self) -> Path:
        slug = f"{self.campaign.id}-{self.campaign.name}" if self.campaign.id else self.campaign.name
        return self.ws.outbox_dir / slug

    def checks(self) -> list[Check]:
        """The pre-send checks of `mailer check`, on the snapshot that will be sent."""
        self.campaign, notes = refresh_snapshot(None if self.dry_run else self.store, self.ws, self.campaign)
        self.notes += notes
        try:
            self._renderer = renderer_for(self.campaign, self.ws, self.secret, self.clock)
        except MailerError:
            self._renderer = None  # run_checks meets the same error and reports it as a check
        return checks_for(self.campaign, self.ws, self.secret, self.clock, self._renderer)

    def to_send(self) -> int:
        """How many messages this run has in front of it (before caps)."""
        if self.campaign.status in ("draft", "scheduled"):
            return self.store.audience_count(self.campaign.list_name, self.campaign.tags)
        return self.store.delivery_counts(self.campaign.id)["pending"]

    def prepare(self, *, retry_failed: bool = False, retry_unknown: bool = False) -> None:
        """Refuse what must not be sent; requeue what the user asked to retry (real runs only)."""
        c = self.campaign
        if c.status == "cancelled":
            raise InputError(f"Campaign {c.id} was cancelled; it sends nothing more.")
        if self.dry_run:
            return
        now = iso(self.clock.now())
        self.store.mark_interrupted(now)
        if retry_failed:
            self.store.requeue(c.id, "failed", now)
        if retry_unknown:
            self.store.requeue(c.id, "unknown", now)
        if c.status in ("paused", "done") and self.store.delivery_counts(c.id)["pending"]:
            self.campaign = self.store.update_campaign(c.id, status="sending", status_reason="", finished_at="")

    def check_settings(self) -> None:
        """The sender and SMTP settings a real send needs (ConfigError, exit 2, before anything changes)."""
        sender_address(self.ws)
        if not self.dry_run and self.transport is None:
            self.transport = SmtpTransport(self.ws.config.smtp, self.ws.smtp_password())

    def run(self) -> Iterator[Event]:
        """Send (or write) the messages, yielding progress; the outcome is in `result`."""
        log: StoreLog | AudienceLog
        sender = sender_address(self.ws)
        if self.dry_run:
            log = AudienceLog(self.store, self.campaign)
            transport = self.transport or DryRunTransport(self.outbox)
            transport.open()  # empties the folder even when nothing is left to write
        else:
            # Settings first: a ConfigError must leave the audience unfixed and the campaign as it was.
            self.check_settings()
            transport = self.transport
            if not self.campaign.id:  # made from a file just now: stored only once it really goes,
                self.campaign = store_campaign(self.store, self.campaign, self.clock)  # as it was checked
            self.store.fix_audience(self.campaign, iso(self.clock.now()))
            self.campaign = self.store.require_campaign(self.campaign.id)
            log = StoreLog(self.store, self.campaign)
        self.transport = transport
        factory = None
        if not self.dry_run and isinstance(transport, SmtpTransport):
            factory = lambda: SmtpTransport(self.ws.config.smtp, self.ws.smtp_password())  # noqa: E731
        renderer = self._renderer or renderer_for(self.campaign, self.ws, self.secret, self.clock)
        engine = CampaignSender(
            log, renderer, transport, self.clock,
            self.options, sender=sender, transport_factory=factory,
        )
        yield from engine.run()
        self.result = engine.result
        if not self.dry_run:
            self._finish()

    def _finish(self) -> None:
        counts = self.store.delivery_counts(self.campaign.id)
        c = self.store.require_campaign(self.campaign.id)
        if c.status == "sending" and counts["pending"] == 0 and counts["sending"] == 0:
            self.campaign = self.store.update_campaign(c.id, status="done", finished_at=iso(self.clock.now()))
        else:
            self.campaign = c


def due_campaigns(store: Store, now: datetime, max_lateness_hours: float) -> tuple[list[Campaign], list[Campaign]]:
    """What `run-due` should send now, and what is too late to send without a human.

    Due: campaigns left part-sent (daily cap, outage) first, then scheduled ones whose
    time has come, oldest first. Late: scheduled ones whose time passed more than
    max_lateness hours ago (the machine was off); each is returned once, then marked.
    """
    started, scheduled, late = [], [], []
    for c in store.campaigns(statuses=("scheduled", "sending")):
        if c.status == "sending":
            if store.delivery_counts(c.id)["pending"]:
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
        store.update_campaign(
            c.id,
            status_reason=f"missed its time ({c.scheduled_at}) by more than {max_lateness_hours:g} hours; "
            f"not sent automatically",
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
