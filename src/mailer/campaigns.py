"""Campaigns: a content file + a templates snapshot + an audience; what is due and when.

The CLI calls these; they never print. Running one is `runner.run_campaign`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .checks import Check, run_checks
from .clock import Clock, iso, parse_iso
from .config import Workspace
from .content import Content, load_content, parse_content
from .errors import InputError, MailerError, NotFound
from .lifecycle import CampaignStatus
from .models import DEFAULT_LISTS, Campaign
from .render import CompiledCampaign, compile_campaign, resolve_templates
from .repeats import SIMILAR, WINDOW_DAYS, Repeat, find_repeat, letter_text, similarity
from .schedule import local_time_text
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


def create_campaign(store: Store, ws: Workspace, content_path: str | Path, clock: Clock, *,
                    secret: bytes | None = None, allow_repeat: bool = False, **audience: Any) -> Campaign:
    """`mailer campaign create`: draft a campaign from a content file and store it.

    With the workspace's secret the letter is rendered once and kept, and a letter that
    already went to these people lately is refused (InputError) unless allow_repeat.
    """
    draft = replace(draft_campaign(ws, content_path, clock, **audience), allow_repeat=allow_repeat)
    if secret is not None and draft.scheduled_at:
        refuse_ended_offers(draft, ws, secret, clock)
    if secret is not None:
        try:
            draft = replace(draft, letter=letter_text(renderer_for(draft, ws, secret, clock)))
        except MailerError:
            pass  # stored anyway; `mailer check` and the send say what is wrong
        if draft.letter and not allow_repeat:
            found = find_repeat(store, draft, draft.letter, clock.now(), letter_reader(store, ws, secret, clock))
            if found is not None:
                raise InputError(_repeat_message(found, ws.config.sending.timezone) + ".",
                                 hint="Add --allow-repeat to make the campaign anyway.")
            waiting = _same_letter_waiting(store, draft, ws, secret, clock)
            if waiting is not None:
                when = f", scheduled for {local_time_text(waiting.scheduled_at, ws.config.sending.timezone)}" if waiting.scheduled_at else ""
                raise InputError(
                    f"Campaign {waiting.id} ({waiting.name}{when}) is already this letter to the {waiting.list_name} list "
                    "and has not gone out yet; a second one would mail them twice.",
                    hint=f"Change or cancel campaign {waiting.id} (`mailer campaign cancel {waiting.id}`), "
                    "or add --allow-repeat to make another anyway.",
                )
    return store_campaign(store, draft, clock)


def empty_audience(store: Store, campaign: Campaign) -> InputError | None:
    """The error to give when a campaign would reach nobody (a list or tag spelt wrong, or empty)."""
    if campaign.started or store.subscribers.audience_count(campaign.list_name, campaign.tags):
        return None
    known = sorted(store.subscribers.list_names() | set(DEFAULT_LISTS))
    close = difflib.get_close_matches(campaign.list_name, known, n=1)
    tags = "".join(f" tagged {t!r}" for t in campaign.tags)
    return InputError(
        f"The campaign would go to nobody: no active subscriber is on the list {campaign.list_name!r}{tags}.",
        hint=(f"Did you mean --list {close[0]}? " if close and close[0] != campaign.list_name else "")
        + f"The lists are: {', '.join(known)}.",
    )


def _same_letter_waiting(store: Store, draft: Campaign, ws: Workspace, secret: bytes, clock: Clock) -> Campaign | None:
    """An unsent campaign (draft or scheduled) to the same list with the same or nearly the same letter."""
    read = letter_reader(store, ws, secret, clock)
    for other in store.campaigns.list(statuses=(CampaignStatus.DRAFT, CampaignStatus.SCHEDULED)):
        if other.list_name == draft.list_name and not other.allow_repeat:
            if similarity(draft.letter, other.letter or read(other)) >= SIMILAR:
                return other
    return None


def find_campaign(store: Store, ref: str) -> Campaign:
    """A campaign by its id (`3`)."""
    if not ref.strip().isdigit():
        raise InputError(f"{ref!r} is not a campaign id.", hint="See `mailer campaign list`.")
    if int(ref) > 2**63 - 1:  # more than SQLite can hold: no such campaign
        raise NotFound(f"There is no campaign {ref.strip()}.", hint="See `mailer campaign list`.")
    return store.campaigns.require(int(ref))


def campaign_for_send(
    store: Store,
    ws: Workspace,
    ref: str,
    clock: Clock,
    *,
    list_name: str | None = None,
    tags: Iterable[str] = (),
    retry: bool = False,
    allow_repeat: bool = False,
) -> tuple[Campaign, list[str]]:
    """What `mailer send REF` means: a campaign id, or a content file.

    For a file: the unfinished campaign made from it if there is one, else a new one,
    not yet stored (id 0: `run_campaign` stores it when sending really starts, and a
    dry-run never does). A finished one is not sent again this way, except that with
    `retry` (--retry-failed, --retry-unknown) the last campaign made from the file is the
    one meant, and with `allow_repeat` a new campaign is made. Returns the campaign and
    warnings.
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
    if made and retry:
        return made[-1], []
    if made and not allow_repeat:
        last = made[-1]
        raise InputError(
            f"{path.name} was already sent as campaign {last.id} ({last.status}); it is not sent again.",
            hint=f"To try its failed or unknown deliveries again: `mailer send {ref} --retry-failed` "
            f"(or --retry-unknown); to send it to everyone once more: add --allow-repeat.",
        )
    if retry:
        raise InputError(f"{path.name} has not been sent yet, so there is nothing to retry.",
                         hint=f"Send it with `mailer send {ref}`.")
    return replace(draft_campaign(ws, path, clock, list_name=list_name, tags=tags), allow_repeat=allow_repeat), []


def refresh_snapshot(store: Store | None, ws: Workspace, campaign: Campaign) -> tuple[Campaign, list[str]]:
    """Before a campaign starts, its content file and templates may still change: take them again.

    Once started, the snapshot is what is sent; a changed file is only warned about.
    """
    notes: list[str] = []
    path = Path(campaign.content_path) if campaign.content_path else None
    file_name = path.name if path is not None else campaign.name
    current = None
    if path is not None and path.is_file():
        current = load_content(path)
    if campaign.started:
        if current is not None and _hash(current.text) != campaign.content_hash:
            notes.append(
                f"{file_name} has changed since campaign {campaign.id} started; the copy taken then is what is sent."
            )
        return campaign, notes
    templates = json.dumps(resolve_templates(ws), sort_keys=True)
    content = current or parse_content(campaign.content, campaign.name)
    if content.text != campaign.content or templates != campaign.templates:
        if content.text != campaign.content:
            notes.append(f"{file_name} changed since campaign {campaign.id} was created; sending the new text.")
        campaign = replace(
            campaign, content=content.text, content_hash=_hash(content.text), templates=templates,
            subject=content.subject, template=content.template,
        )
        if store is not None and campaign.id:
            store.campaigns.update_snapshot(campaign)
    return campaign, notes


def renderer_for(campaign: Campaign, ws: Workspace, secret: bytes, clock: Clock) -> CompiledCampaign:
    """The campaign's snapshot compiled once, ready to render a message per subscriber."""
    content = parse_content(campaign.content, Path(campaign.content_path).name or campaign.name)
    return compile_campaign(
        content, json.loads(campaign.templates), ws.config, secret,
        list_name=campaign.list_name, campaign_key=campaign.key, clock=clock,
    )


def send_time(campaign: Campaign, clock: Clock) -> datetime | None:
    """When a campaign will go out: its scheduled time while that is ahead, else now (None)."""
    if campaign.scheduled_at and not campaign.started:
        when = parse_iso(campaign.scheduled_at)
        if when > clock.now():
            return when
    return None


def checks_for(campaign: Campaign, ws: Workspace, secret: bytes, clock: Clock, renderer: CompiledCampaign | None = None) -> list[Check]:
    """The pre-send checks of `mailer check`, on the campaign's snapshot, as of when it will go out."""
    content = parse_content(campaign.content, Path(campaign.content_path).name or campaign.name)
    return run_checks(content, json.loads(campaign.templates), ws.config, secret, clock, renderer,
                      send_at=send_time(campaign, clock))


def refuse_ended_offers(campaign: Campaign, ws: Workspace, secret: bytes, clock: Clock) -> None:
    """InputError when an offer of the letter has ended by the time the campaign goes out."""
    ended = [c for c in checks_for(campaign, ws, secret, clock) if c.name == "offer dates" and c.level == "error"]
    if ended:
        raise InputError(
            " ".join(c.message for c in ended),
            hint="Give those offers a later valid_until (or take them out), or choose an earlier time.",
        )


def letter_reader(store: Store | None, ws: Workspace, secret: bytes, clock: Clock) -> Callable[[Campaign], str]:
    """How to get an earlier campaign's letter when it was stored without one (before mailer
    kept them): rendered from its snapshot once, and kept (unless store is None: a dry run)."""

    def letter_of(campaign: Campaign) -> str:
        try:
            letter = letter_text(renderer_for(campaign, ws, secret, clock))
        except MailerError:
            return ""  # a snapshot that no longer renders cannot be compared
        if store is not None:
            store.campaigns.set_letter(campaign.id, letter)
        return letter

    return letter_of


def _repeat_message(found: Repeat, timezone: str) -> str:
    e = found.earlier
    what = "The same letter" if found.same else f"Nearly the same letter ({int(found.alike * 100)}% alike)"
    when = local_time_text(found.span.first, timezone)
    return (f"{what} went out as campaign {e.id} ({e.name}) on {when}: {found.reached} of the "
            f"{found.audience} people it would go to got it then")


def repeat_check(store: Store, ws: Workspace, campaign: Campaign, secret: bytes, clock: Clock, *,
                 refuse: bool, writes: bool = True) -> Check:
    """Has the same (or nearly the same) letter gone to some of these people in the last 30 days?

    An error when `refuse` (a send without --allow-repeat), else a warning. The campaign
    must carry its letter (`letter_text`).
    """
    found = find_repeat(store, campaign, campaign.letter, clock.now(),
                        letter_reader(store if writes else None, ws, secret, clock))
    if found is None:
        return Check("pass", "repeat", f"No campaign of the last {WINDOW_DAYS} days sent this letter to these people.")
    message = _repeat_message(found, ws.config.sending.timezone)
    if refuse:
        return Check("error", "repeat", message + "; --allow-repeat sends it to them again anyway.")
    return Check("warning", "repeat", message + ".")


def consent_check(store: Store, campaign: Campaign) -> Check:
    """How many of the campaign's audience have no consent record at all."""
    audience = store.subscribers.audience_count(campaign.list_name, campaign.tags)
    missing = store.subscribers.audience_without_consent(campaign.list_name, campaign.tags)
    if missing:
        return Check("warning", "consent", f"{missing} of the {audience} people on the {campaign.list_name} list "
                     "have no consent record (no opt-in time, IP, form or consent text); keep proof of how they signed up.")
    return Check("pass", "consent", f"All {audience} people on the {campaign.list_name} list have a consent record.")


def check_content(store: Store | None, ws: Workspace, path: str | Path, secret: bytes, clock: Clock, *,
                  allow_repeat: bool = False) -> list[Check]:
    """`mailer check FILE`: the pre-send checks, and (with a store) the repeat and consent checks
    for the audience the letter would go to now. Writes nothing."""
    campaign = draft_campaign(ws, path, clock)
    try:
        renderer = renderer_for(campaign, ws, secret, clock)
    except MailerError:
        renderer = None
    checks = checks_for(campaign, ws, secret, clock, renderer)
    if store is not None and renderer is not None:
        campaign = replace(campaign, letter=letter_text(renderer))
        checks.append(repeat_check(store, ws, campaign, secret, clock, refuse=not allow_repeat, writes=False))
        checks.append(consent_check(store, campaign))
    return checks


def due_campaigns(store: Store, now: datetime, max_lateness_hours: float,
                  timezone: str = "") -> tuple[list[Campaign], list[Campaign]]:
    """What `run-due` should send now, and what is too late to send without a human.

    Due: campaigns left part-sent (daily cap, outage) first, then scheduled ones whose
    time has come, oldest first. Late: scheduled ones whose time passed more than
    max_lateness hours ago (the machine was off); each is returned once, then marked.
    """
    started, scheduled, late = [], [], []
    for c in store.campaigns.list(statuses=(CampaignStatus.SCHEDULED, CampaignStatus.SENDING)):
        if c.status == CampaignStatus.SENDING:
            # Only when one of its messages may go now: rows refused for now wait for their time.
            if store.deliveries.pending(c.id, 1, due=iso(now)):
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
            f"missed its time ({local_time_text(c.scheduled_at, timezone)}) by more than {max_lateness_hours:g} hours; "
            "not sent automatically",
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
