"""Running a campaign: the one sequence that `mailer send` and `mailer run-due` both follow.

    recover what a crash left 'sending' -> requeue what a person asked to retry
    -> take the snapshot again (before the start only) -> pre-send checks
    -> settings -> the same letter sent lately? (before the start only)
    -> confirm (a person, or --yes) -> start (fix the audience, once)
    -> the engine over a transport -> finish -> a RunReport (figures, exit code)

Ctrl-C or SIGTERM while sending pauses the campaign (`Interrupted`, exit 130 or 143);
only a person's `mailer send ID` goes on. `send_test` is the one-message test send.

Every status change goes through the store's transitions (mailer.lifecycle); the
caller only shows things, through a RunObserver.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from .campaigns import (
    checks_for,
    draft_campaign,
    empty_audience,
    find_campaign,
    refresh_snapshot,
    renderer_for,
    repeat_check,
    store_campaign,
)
from .checks import Check
from .clock import Clock, iso
from .config import Workspace
from .content import parse_content
from .dkim import SignedCampaign, signer_for
from .errors import ExitCode, InputError, Interrupted, MailerError, SmtpError, StoreError, Terminated
from .lifecycle import CampaignStatus, DeliveryStatus
from .models import Campaign, SentSpan
from .readiness import audience_problems, complaint_problems, sending_problems
from .render import CompiledCampaign, compile_campaign, sample_subscriber
from .repeats import letter_text
from .runlog import RunLog, loggable
from .schedule import local_time_text
from .send import AudienceLog, CampaignSender, DeliveryLog, Event, Renderer, SendOptions, SendResult, StoreLog
from .store import Store
from .transport import ConnectionLost, DryRunTransport, Envelope, SmtpTransport, Transport, envelope_address
from .validate import InvalidValue, normalise_email

C, D = CampaignStatus, DeliveryStatus
BULK_SENDER = 5000  # messages a day that make a "bulk sender" for Gmail and Yahoo


def options_from_config(ws: Workspace, **overrides: Any) -> SendOptions:
    """[sending] in mailer.toml, with command-line options (those not None) on top."""
    s = ws.config.sending
    values: dict[str, Any] = dict(batch_size=s.batch_size, pause=s.pause, rate=s.rate, per_day=s.per_day,
                                  timezone=s.timezone, connections=s.connections,
                                  give_up_after=s.give_up_after * 86400)
    given = {k for k, v in overrides.items() if v is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})

    def where(key: str) -> str:
        return f"--{key.replace('_', '-')}" if key in given else f"[sending] {key} in mailer.toml"

    if values["batch_size"] < 1:
        raise InputError(f"{where('batch_size')} must be at least 1.")
    if not 1 <= values["connections"] <= 20:
        raise InputError(f"{where('connections')} must be between 1 and 20.")
    if values["pause"] > 86_400:
        raise InputError(f"{where('pause')} is {values['pause']:g} seconds; at most a day (86400) is allowed.")
    if values["rate"] and values["rate"] < 1 / 1440:
        raise InputError(f"{where('rate')} is {values['rate']:g} a minute; at least one a day (0.0007) or 0 for no limit.")
    return SendOptions(**values)


def sender_address(ws: Workspace) -> str:
    """MAIL FROM: [smtp] envelope_from, else [sender] from_email."""
    return ws.config.smtp.envelope_from or ws.config.sender.from_email


class ChecksFailed(InputError):
    """The pre-send checks (or the settings) found errors: nothing was sent or changed."""

    def __init__(self, message: str, checks: list[Check], hint: str | None = None):
        super().__init__(message, hint)
        self.checks = checks


class Declined(MailerError):
    """The person answered no at the question before sending."""


@dataclass(frozen=True)
class SendPlan:
    """What is about to happen, shown before a person confirms."""

    campaign: Campaign
    to_send: int
    server: str
    subject_last_sent: tuple[Campaign, SentSpan] | None = None  # the last campaign with this subject


class RunObserver(Protocol):
    """How a caller sees a run: the checks, a question before sending, the progress."""

    def checked(self, checks: list[Check], notes: list[str]) -> None:
        """The pre-send checks and notes (e.g. the file changed), before anything is sent."""

    def confirm(self, plan: SendPlan) -> bool:
        """Ask before a real send; False stops with nothing sent."""

    def progress(self, events: Iterator[Event], total: int) -> None:
        """Show the engine's events; must iterate `events` to the end (that is what sends)."""


class Quiet:
    """An observer that shows nothing and never asks (cron, tests, benchmarks)."""

    def checked(self, checks: list[Check], notes: list[str]) -> None:
        pass

    def confirm(self, plan: SendPlan) -> bool:
        return True

    def progress(self, events: Iterator[Event], total: int) -> None:
        for _ in events:
            pass


def campaign_report(store: Store, campaign: Campaign, *, failures: bool = True) -> dict:
    """A campaign's delivery figures (and, with failures, each recipient not sent and why)."""
    counts = store.deliveries.counts(campaign.id)
    doc: dict[str, Any] = {
        "campaign": campaign.id,
        "name": campaign.name,
        "subject": campaign.subject,
        "list": campaign.list_name,
        "status": str(campaign.status),
        "status_reason": campaign.status_reason,
        "total": sum(counts.values()),
        **{str(k): counts[k] for k in (D.SENT, D.FAILED, D.BOUNCED, D.SKIPPED, D.UNKNOWN, D.PENDING)},
    }
    if counts[D.SENDING]:
        doc["sending"] = counts[D.SENDING]
    # When the earliest message refused for now (4xx) is tried again by a later run; "" if none waits.
    doc["next_attempt_at"] = store.deliveries.next_attempt(campaign.id) if counts[D.PENDING] else ""
    complaints = store.mailbox.complaints(campaign.id)
    delivered = counts[D.SENT] + counts[D.BOUNCED]
    doc["complaints"] = complaints
    doc["complaint_rate"] = round(complaints / delivered, 5) if delivered else 0.0
    if failures:
        doc["failures"] = [
            {"email": d.email, "status": str(d.status), "attempts": d.attempts, "reason": d.reply}
            for d in store.deliveries.of_campaign(campaign.id, [D.FAILED, D.BOUNCED, D.UNKNOWN, D.SKIPPED, D.PENDING])
            if d.status != D.PENDING or d.reply
        ]
    return doc


@dataclass(frozen=True)
class RunReport:
    """What one run of one campaign did, its figures and its exit code."""

    campaign: Campaign
    dry_run: bool
    result: SendResult
    figures: dict  # campaign_report(failures=False) after the run; {} for a dry-run
    unknown_found: int  # deliveries an earlier crash had left 'sending' (now 'unknown')
    outbox: Path | None  # where a dry-run wrote its messages
    notes: tuple[str, ...] = ()

    @property
    def problem(self) -> str:
        """Why the run ended early in a way a person should look at ('' when it did not)."""
        r = self.result
        if r.paused or r.server_lost or (r.stopped and not r.quota_left):
            return r.stopped
        return ""

    @property
    def exit_code(self) -> ExitCode:
        """0 when everything went; 1 when some recipients failed, wait, or the run stopped early."""
        r = self.result
        if self.problem:
            return ExitCode.PARTIAL
        if any(r.outcomes[s] for s in (D.FAILED, D.BOUNCED, D.PENDING)) or self.unknown_found:
            return ExitCode.PARTIAL
        return ExitCode.OK

    def document(self) -> dict:
        """The run as one JSON document (what `--json` prints)."""
        r = self.result
        if self.dry_run:
            return {
                "campaign": self.campaign.id or None, "name": self.campaign.name, "dry_run": True,
                "would_send": r.outcomes[D.SENT], "skipped": r.outcomes[D.SKIPPED], "failed": r.outcomes[D.FAILED],
                "outbox": str(self.outbox), "stopped": r.stopped,
            }
        return {
            **self.figures,
            "this_run": r.handed_over,
            "handed_over": r.handed_over,
            "outcomes": {k: v for k, v in r.outcomes.items() if v},
            "stopped": r.stopped,
            "unknown_found": self.unknown_found,
        }


def outbox_for(ws: Workspace, campaign: Campaign) -> Path:
    """outbox/<id>-<name>/ (or outbox/<name>/ for a campaign not stored yet)."""
    slug = f"{campaign.id}-{campaign.name}" if campaign.id else campaign.name
    return ws.outbox_dir / slug


def run_campaign(
    store: Store,
    ws: Workspace,
    campaign: Campaign,
    clock: Clock,
    options: SendOptions,
    secret: bytes,
    *,
    environ: Any = None,
    dry_run: bool = False,
    resume: bool = False,
    retry_failed: bool = False,
    retry_unknown: bool = False,
    force: bool = False,
    allow_repeat: bool = False,
    transport: Transport | None = None,
    observer: RunObserver | None = None,
    log: RunLog | None = None,
) -> RunReport:
    """Send (or, with dry_run, write as .eml files) one campaign, and report what happened.

    `resume=True` is a person's `mailer send ID`: only that continues a paused campaign.
    A campaign not stored yet (id 0, made from a file) is stored only when it really
    starts, so a refusal, a failed check or a "no" leaves nothing behind. Before it
    starts, a letter that went to some of these people in the last 30 days is refused
    unless `allow_repeat` (or the campaign was made with --allow-repeat).
    """
    import os

    observer = observer or Quiet()
    environ = os.environ if environ is None else environ
    if campaign.status == C.CANCELLED:
        raise InputError(f"Campaign {campaign.id} was cancelled; it sends nothing more.")

    unknown_found = 0
    if not dry_run and campaign.id:
        campaign, unknown_found = _recover(store, campaign, clock, resume=resume,
                                           retry_failed=retry_failed, retry_unknown=retry_unknown)

    campaign, notes = refresh_snapshot(None if dry_run else store, ws, campaign)
    try:
        renderer = renderer_for(campaign, ws, secret, clock)
    except MailerError:
        renderer = None  # the checks meet the same error and report it as a check
    checks = checks_for(campaign, ws, secret, clock, renderer)
    problems = sending_problems(ws.config, environ, dry_run=dry_run)
    problems += audience_problems(ws.config, campaign.subject, campaign.list_name, campaign.tags)
    if not campaign.started:  # the complaint guard stops new campaigns, not one half sent
        since = iso(clock.now() - timedelta(days=30))
        problems += complaint_problems(*store.mailbox.complaint_rate_since(since), force=force)
    seen = {c.message for c in checks}
    checks += [Check(p.level, p.key, p.message + (f" {p.hint}" if p.hint else "")) for p in problems if p.message not in seen]
    if renderer is not None:
        campaign = _with_letter(store, campaign, renderer, dry_run=dry_run, allow_repeat=allow_repeat)
        if not campaign.started:
            checks.append(repeat_check(store, ws, campaign, secret, clock, refuse=not campaign.allow_repeat,
                                       writes=not dry_run))
    if not campaign.started and store.subscribers.audience_count(campaign.list_name, campaign.tags) < BULK_SENDER:
        # Gmail and Yahoo ask one-click unsubscribe of bulk senders; `mailer check` still says it.
        checks = [c for c in checks if c.name != "one-click unsubscribe"]
    observer.checked(checks, notes)
    if any(c.level == "error" for c in checks) or renderer is None:
        ref = campaign.id or campaign.content_path or campaign.name
        repeat = any(c.level == "error" and c.name == "repeat" for c in checks)
        raise ChecksFailed(
            "The pre-send checks found errors (above); nothing was sent.", checks,
            hint=f"To send it to them again anyway: `mailer send {ref} --allow-repeat`." if repeat else
            f"Run `mailer check {campaign.content_path or campaign.name}` for the full table.",
        )

    signer = signer_for(ws.config, ws.home)  # a key that cannot be used stops us here, before anything changed
    sending: Renderer = renderer
    if signer is not None:
        sending = SignedCampaign(renderer, signer)
    nobody = empty_audience(store, campaign)
    if nobody is not None:
        raise nobody
    to_send = (store.subscribers.audience_count(campaign.list_name, campaign.tags) if not campaign.started
               else store.deliveries.counts(campaign.id)[D.PENDING])
    if not dry_run and transport is None:
        transport = SmtpTransport(ws.config.smtp, ws.smtp_password(environ))
    if not dry_run and to_send:
        assert transport is not None
        last = store.campaigns.last_sent_with_subject(campaign.subject, exclude=campaign.id)
        if not observer.confirm(SendPlan(campaign, to_send, transport.description, last)):
            raise Declined("Nothing was sent.")

    delivery_log: DeliveryLog
    outbox = None
    if dry_run:
        outbox = outbox_for(ws, campaign)
        delivery_log = AudienceLog(store, campaign)
        transport = transport or DryRunTransport(outbox, outbox=ws.outbox_dir)
        transport.open()  # empties the folder even when nothing is left to write
    else:
        if not campaign.id:
            campaign = store_campaign(store, campaign, clock)  # as it was checked and confirmed
    engine: CampaignSender | None = None
    try:
        if not dry_run:
            if not campaign.started:
                campaign = store.campaigns.start(campaign, iso(clock.now()))
            delivery_log = StoreLog(store, campaign)
        assert transport is not None

        factory = None
        if not dry_run and isinstance(transport, SmtpTransport):
            smtp, password = ws.config.smtp, ws.smtp_password(environ)
            factory = lambda: SmtpTransport(smtp, password)  # noqa: E731
        engine = CampaignSender(delivery_log, sending, transport, clock, options,
                                sender=sender_address(ws), transport_factory=factory, campaign_key=campaign.key,
                                verp_secret=secret)
        total = min(to_send, options.limit) if options.limit is not None else to_send
        observer.progress(_logged(engine.run(), log, campaign.id), total)
    except KeyboardInterrupt as exc:
        raise _interrupted(store, ws, campaign, clock, dry_run, log, terminated=isinstance(exc, Terminated)) from None
    except StoreError as exc:  # the disk filled up (or failed) in the middle: say what really happened
        raise _store_failed(exc, campaign, engine.result.outcomes[D.SENT] if engine else 0, dry_run) from exc
    assert engine is not None
    result = engine.result

    figures: dict = {}
    if not dry_run:
        campaign = _finish(store, campaign, clock)
        figures = campaign_report(store, campaign, failures=False)
    report = RunReport(campaign, dry_run, result, figures, unknown_found, outbox, tuple(notes))
    if log is not None:
        log.write("campaign", campaign=campaign.id, dry_run=dry_run, handed_over=result.handed_over,
                  outcomes={k: v for k, v in result.outcomes.items() if v}, stopped=result.stopped)
    return report


def _with_letter(store: Store, campaign: Campaign, renderer: CompiledCampaign, *, dry_run: bool, allow_repeat: bool) -> Campaign:
    """The campaign with its letter (what the repeat check compares) and a person's --allow-repeat,
    both kept for a stored campaign (a dry run changes nothing)."""
    letter = campaign.letter if campaign.started and campaign.letter else letter_text(renderer)
    updated = replace(campaign, letter=letter, allow_repeat=campaign.allow_repeat or allow_repeat)
    if campaign.id and not dry_run:
        if letter != campaign.letter:
            store.campaigns.set_letter(campaign.id, letter)
        if allow_repeat and not campaign.allow_repeat:
            store.campaigns.allow_repeat(campaign.id)
    return updated


def _store_failed(exc: StoreError, campaign: Campaign, accepted: int, dry_run: bool) -> StoreError:
    """The same error, saying how far the send got (it did not 'change nothing')."""
    if dry_run:
        return exc
    ref = campaign.id or campaign.name
    message = (
        f"{exc.message} Sending campaign {ref} stopped there: in this run the server had accepted {accepted} message(s); the rest "
        "is left pending, and a message whose reply could not be recorded will be reported as unknown, not resent."
    )
    return type(exc)(message, hint=f"{exc.hint or 'Fix the disk.'} Then `mailer send {ref}` goes on.")


def _interrupted(store: Store, ws: Workspace, campaign: Campaign, clock: Clock, dry_run: bool,
                 log: RunLog | None, *, terminated: bool) -> Interrupted:
    """Ctrl-C or SIGTERM while sending: the campaign is paused (never resumed by run-due), and
    the person is told how to go on or stop for good."""
    what = "SIGTERM" if terminated else "Ctrl-C"
    if dry_run or not campaign.id:
        return Interrupted(f"Interrupted by {what}; nothing was sent.", terminated=terminated)
    current = store.campaigns.require(campaign.id)
    if not current.started:  # stopped before its audience was fixed
        return Interrupted(f"Interrupted by {what} before campaign {campaign.id} started; nothing was sent.",
                           terminated=terminated)
    counts = store.deliveries.counts(campaign.id)
    sent, total = counts[D.SENT], sum(counts.values())
    if current.status == C.SENDING:
        when = local_time_text(iso(clock.now()), ws.config.sending.timezone)
        current = store.campaigns.pause(campaign.id, f"interrupted by {what} at {when}: {sent} of {total} sent")
    if log is not None:
        log.write("interrupted", campaign=campaign.id, signal=what, sent=sent, total=total)
    state = "paused" if current.status == C.PAUSED else str(current.status)
    return Interrupted(
        f"Interrupted by {what}: campaign {campaign.id} is {state} after {sent} of {total} messages.",
        hint=f"`mailer send {campaign.id}` goes on where it stopped; `mailer campaign cancel {campaign.id}` "
        "stops it for good. `mailer run-due` leaves a paused campaign alone.",
        terminated=terminated,
    )


def _recover(store: Store, campaign: Campaign, clock: Clock, *, resume: bool,
             retry_failed: bool, retry_unknown: bool) -> tuple[Campaign, int]:
    """Before a real run: what a crash left 'sending' becomes unknown; retries go back to pending."""
    now = iso(clock.now())
    unknown_found = store.deliveries.mark_interrupted(now)
    if retry_failed:
        store.deliveries.retry(campaign.id, D.FAILED, now)
    if retry_unknown:
        store.deliveries.retry(campaign.id, D.UNKNOWN, now)
    campaign = store.campaigns.require(campaign.id)
    if campaign.status == C.PAUSED and not resume:
        raise InputError(
            f"Campaign {campaign.id} is paused ({campaign.status_reason or 'by a person'}); "
            "only a person's `mailer send` continues it.",
            hint=f"`mailer send {campaign.id}` continues it; `mailer campaign cancel {campaign.id}` stops it for good.",
        )
    if campaign.status in (C.PAUSED, C.DONE) and store.deliveries.counts(campaign.id)[D.PENDING]:
        campaign = store.campaigns.resume(campaign.id)
    return campaign, unknown_found


def _finish(store: Store, campaign: Campaign, clock: Clock) -> Campaign:
    """sending -> done once nothing is pending or in flight."""
    current = store.campaigns.require(campaign.id)
    counts = store.deliveries.counts(campaign.id)
    if current.status == C.SENDING and counts[D.PENDING] == 0 and counts[D.SENDING] == 0:
        return store.campaigns.finish(campaign.id, iso(clock.now()))
    return current


def _logged(events: Iterator[Event], log: RunLog | None, campaign_id: int) -> Iterator[Event]:
    """Pass the engine's events on, writing the notable ones (without addresses) to the run log."""
    for event in events:
        if log is not None and event.kind in ("retry", "reconnect", "notice", "stop"):
            log.write(event.kind, **loggable(event, campaign_id))
        yield event


@dataclass(frozen=True)
class TestSend:
    """What `mailer send FILE --test-to ADDR` did: one message, no delivery, no campaign."""

    to: str
    written_for: str  # "a sample subscriber", or the subscriber's address (--as)
    subject: str
    reply: str
    message_id: str

    def document(self) -> dict:
        return {"test": True, "to": self.to, "written_for": self.written_for, "subject": self.subject,
                "reply": self.reply, "message_id": self.message_id}


def send_test(
    store: Store,
    ws: Workspace,
    ref: str,
    to: str,
    clock: Clock,
    secret: bytes,
    *,
    as_email: str | None = None,
    environ: Any = None,
    transport: Transport | None = None,
    log: RunLog | None = None,
    on_checks: Callable[[list[Check]], None] | None = None,
) -> TestSend:
    """One real message to `to` over SMTP, "[TEST]" before its subject, written for a sample
    subscriber (or the stored one `as_email`): the letter as it will arrive.

    Nothing is stored: no campaign is made, no delivery recorded, nobody's status changes;
    the run log notes the test. Its unsubscribe link names nobody (subscriber 0), so a
    click in the test message unsubscribes no one.
    """
    import os

    environ = os.environ if environ is None else environ
    if ref.strip().isdigit() and not Path(ref).is_file():
        campaign = find_campaign(store, ref)
    else:
        campaign = draft_campaign(ws, ref, clock)
    try:
        address = normalise_email(to)[0]
    except InvalidValue as exc:
        raise InputError(f"--test-to {to!r} is not an email address: {exc}") from None
    if as_email:
        try:
            key = normalise_email(as_email)[1]
        except InvalidValue as exc:
            raise InputError(f"--as {as_email!r} is not an email address: {exc}") from None
        person = store.subscribers.require(key)
        written_for = person.email
    else:
        person = sample_subscriber(campaign.list_name)
        written_for = "a sample subscriber"
    content = parse_content(campaign.content, Path(campaign.content_path).name or campaign.name)
    checks = checks_for(campaign, ws, secret, clock)
    checks += [Check(p.level, p.key, p.message) for p in sending_problems(ws.config, environ)
               if p.message not in {c.message for c in checks}]
    if on_checks is not None:
        on_checks(checks)
    if any(c.level == "error" for c in checks):
        raise ChecksFailed("The pre-send checks found errors (above); no test message was sent.", checks,
                           hint=f"Run `mailer check {ref}` for the full table.")
    renderer: Renderer = compile_campaign(
        replace(content, subject=f"[TEST] {content.subject}"), json.loads(campaign.templates), ws.config, secret,
        list_name=campaign.list_name, campaign_key=f"test:{secrets.token_hex(8)}", clock=clock,
    )
    signer = signer_for(ws.config, ws.home)
    if signer is not None:
        renderer = SignedCampaign(renderer, signer)
    # Their name and greeting, but the test address, and subscriber 0 in the unsubscribe link.
    message = renderer.render(replace(person, id=0, email=address, email_key=address.lower()))
    recipient, needs_utf8 = envelope_address(address)
    transport = transport or SmtpTransport(ws.config.smtp, ws.smtp_password(environ))
    transport.open()
    try:
        if needs_utf8 and not transport.smtputf8:
            raise SmtpError(f"{address} has non-ASCII characters before the @ and the server does not offer SMTPUTF8.")
        try:
            reply = transport.send(Envelope(sender_address(ws), recipient, needs_utf8), message.data)
        except ConnectionLost as exc:
            raise SmtpError(f"The connection to the SMTP server broke while sending the test message: {exc}.") from None
    finally:
        transport.close()
    if log is not None:
        log.write("test", file=Path(campaign.content_path).name or campaign.name, campaign=campaign.id or None,
                  subject=content.subject, to_domain=address.rpartition("@")[2], reply=str(reply),
                  written_for="a sample subscriber" if not as_email else f"subscriber #{person.id}")
    if reply.code != 250:
        raise SmtpError(f"The SMTP server refused the test message: {reply}.")
    return TestSend(address, written_for, f"[TEST] {content.subject}", str(reply), message.message_id)
