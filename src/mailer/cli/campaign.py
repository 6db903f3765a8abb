"""`mailer campaign ...`: create, list, show, cancel (and schedule) campaigns."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..campaigns import create_campaign, empty_audience, find_campaign, refuse_ended_offers
from ..errors import InputError
from ..lifecycle import CampaignStatus
from ..models import Campaign, SentSpan
from ..schedule import local_time_text, parse_local_time, shown_time
from . import state, sub_app
from .options import JsonOpt

campaign_app = sub_app("campaign", "Create, list, show, schedule and cancel campaigns.")
AtOpt = Annotated[
    Optional[str],
    typer.Option("--at", metavar="TIME", help='When to send, in the workspace time zone: "2026-12-01 09:00".'),
]
NowOpt = Annotated[bool, typer.Option("--now", help="Accept an --at time in the past (send at the next run).")]


def sent_text(span: SentSpan | None, timezone: str) -> str:
    """When a campaign went out, for people: `2026-11-25 10:00 EST` or a span of two times."""
    if span is None:
        return ""
    first, last = local_time_text(span.first, timezone), local_time_text(span.last, timezone)
    if first == last:
        return first
    if first[:10] == last[:10]:  # the same day: the date once
        return f"{first} to {last[11:]}"
    return f"{first} to {last}"


def campaign_json(c: Campaign, counts: dict[str, int], timezone: str, span: SentSpan | None = None) -> dict:
    return {
        "id": c.id,
        "name": c.name,
        "subject": c.subject,
        "template": c.template,
        "list": c.list_name,
        "tags": list(c.tags),
        "status": str(c.status),
        "status_reason": c.status_reason,
        "scheduled_at": c.scheduled_at,
        "scheduled_local": local_time_text(c.scheduled_at, timezone) if c.scheduled_at else "",
        "content_path": c.content_path,
        "created_at": c.created_at,
        "started_at": c.started_at,
        "finished_at": c.finished_at,
        "first_sent_at": span.first if span else "",
        "last_sent_at": span.last if span else "",
        "sent": span.count if span else 0,
        "deliveries": counts,
    }


@campaign_app.command()
def create(
    ctx: typer.Context,
    content: Annotated[Path, typer.Argument(help="The content file (Markdown with front matter).")],
    list_name: Annotated[Optional[str], typer.Option("--list", "-l", help="news or specials (default: the template's).")] = None,
    tags: Annotated[Optional[list[str]], typer.Option("--tag", "-t", help="Only subscribers with this tag; repeatable.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="A name for the campaign (default: the file name).")] = None,
    at: AtOpt = None,
    now: NowOpt = False,
    allow_repeat: Annotated[
        bool, typer.Option("--allow-repeat", help="Make it even if the same letter went to these people in the last 30 days.")
    ] = False,
) -> None:
    """Store a campaign from a content file; prints its id.

    It keeps a snapshot of the content and templates, and its audience.
    """
    st = state(ctx)
    ws = st.workspace()
    scheduled = parse_local_time(at, ws.config.sending.timezone, st.clock, allow_past=now) if at else ""
    c = create_campaign(st.store(), ws, content, st.clock, secret=st.secret(), allow_repeat=allow_repeat,
                        list_name=list_name, tags=tags or [], name=name, scheduled_at=scheduled)
    st.output.line(str(c.id))
    nobody = empty_audience(st.store(), c)
    if nobody is not None:
        st.output.warn(f"{nobody.message} {nobody.hint}")
    when = f", scheduled for {local_time_text(scheduled, ws.config.sending.timezone)}" if scheduled else ""
    st.output.info(f"Campaign {c.id} ({c.name}) to the {c.list_name} list{when}.")


@campaign_app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """All campaigns, newest last, with their delivery figures."""
    st = state(ctx)
    store = st.store()
    tz = st.workspace().config.sending.timezone
    spans = store.campaigns.sent_spans()
    rows = [(c, store.deliveries.counts(c.id), spans.get(c.id)) for c in store.campaigns.list()]
    if as_json:
        st.output.json([campaign_json(c, n, tz, span) for c, n, span in rows])
        return
    st.output.table(
        ["id", "name", "list", "status", "scheduled", "sent", "got it", "pending", "subject", "note"],
        (
            [c.id, c.name, c.list_name + "".join(f" #{t}" for t in c.tags), c.status,
             local_time_text(c.scheduled_at, tz) if c.scheduled_at else "", sent_text(span, tz), n["sent"],
             n["pending"], c.subject, c.status_reason]
            for c, n, span in rows
        ),
        title="Campaigns",
    )


@campaign_app.command()
def show(ctx: typer.Context, campaign: Annotated[str, typer.Argument(help="Campaign id.")], as_json: JsonOpt = False) -> None:
    """One campaign: what, to whom, when, and how far it got."""
    st = state(ctx)
    store = st.store()
    c = find_campaign(store, campaign)
    tz = st.workspace().config.sending.timezone
    span = store.campaigns.sent_spans().get(c.id)
    doc = campaign_json(c, store.deliveries.counts(c.id), tz, span)
    if as_json:
        st.output.json(doc)
        return
    counts = doc.pop("deliveries")
    # People read local times with their zone; --json keeps UTC.
    for key in ("scheduled_at", "created_at", "started_at", "finished_at", "first_sent_at", "last_sent_at"):
        doc[key] = shown_time(doc[key], tz)
    doc.pop("scheduled_local")
    doc["sent"] = f"{span.count} ({sent_text(span, tz)})" if span else ""
    doc.pop("first_sent_at")
    doc.pop("last_sent_at")
    renamed = {"status_reason": "why", "scheduled_at": "scheduled", "created_at": "created",
               "started_at": "started", "finished_at": "finished", "content_path": "file"}
    pairs = [(renamed.get(k, k), v) for k, v in doc.items() if v not in ("", [], ())]
    st.output.summary(pairs + [(f"  {k}", n) for k, n in counts.items() if n], title=f"Campaign {c.id}")
    if c.status == CampaignStatus.PAUSED:
        st.output.info(f"`mailer send {c.id}` goes on where it stopped; `mailer campaign cancel {c.id}` stops it for good.")


@campaign_app.command()
def cancel(ctx: typer.Context, campaign: Annotated[str, typer.Argument(help="Campaign id.")]) -> None:
    """Cancel a campaign: it sends nothing more.

    What was sent stays sent; a paused campaign is stopped for good this way.
    """
    st = state(ctx)
    store = st.store()
    c = find_campaign(store, campaign)
    if c.status == CampaignStatus.DONE:
        raise InputError(f"Campaign {c.id} has already been sent to everyone; there is nothing to cancel.")
    if c.status != CampaignStatus.CANCELLED:
        store.campaigns.cancel(c.id, st.now())
    st.output.info(f"Campaign {c.id} cancelled.")


@campaign_app.command()
def schedule(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="Campaign id.")],
    at: Annotated[str, typer.Option("--at", metavar="TIME", help='When, in the workspace time zone: "2026-12-01 09:00".')],
    now: NowOpt = False,
) -> None:
    """Set or move the time `mailer run-due` sends a campaign."""
    st = state(ctx)
    store = st.store()
    ws = st.workspace()
    c = find_campaign(store, campaign)
    if c.started or c.finished:
        raise InputError(f"Campaign {c.id} is {c.status}; only a campaign that has not started can be scheduled.")
    when = parse_local_time(at, ws.config.sending.timezone, st.clock, allow_past=now)
    refuse_ended_offers(replace(c, scheduled_at=when), ws, st.secret(), st.clock)
    store.campaigns.schedule(c.id, when)
    st.output.info(f"Campaign {c.id} scheduled for {local_time_text(when, ws.config.sending.timezone)}.")


@campaign_app.command()
def unschedule(ctx: typer.Context, campaign: Annotated[str, typer.Argument(help="Campaign id.")]) -> None:
    """Take a campaign off the schedule (it stays as a draft)."""
    st = state(ctx)
    store = st.store()
    c = find_campaign(store, campaign)
    if c.status != CampaignStatus.SCHEDULED:
        raise InputError(f"Campaign {c.id} is {c.status}, not scheduled.")
    store.campaigns.unschedule(c.id)
    st.output.info(f"Campaign {c.id} is no longer scheduled.")
