"""The life of a campaign and of each delivery: every status, and every allowed change.

This table is the one place that says how a status may change. The store has one
method per transition and guards each UPDATE with `WHERE status IN (<from>)`, so a
change this table forbids changes nothing and raises `TransitionError`.

    campaign:  draft -> scheduled -> sending -> done
               sending -> paused (Ctrl-C, a policy or rate-limit reply, a quota)
               paused -> sending (only a person's `mailer send ID`)
               done -> sending (a person asked to retry failed or unknown deliveries)
               any unfinished state -> cancelled

    delivery:  pending -> sending (committed to disk before a byte goes out)
               sending -> sent | failed | bounced | pending (a temporary refusal)
               sending -> unknown (the run died or the server fell silent after the data)
               sending -> pending (released: none of its data left)
               pending -> skipped | failed (never handed over: gone, or cannot be sent)
               pending -> failed (given up: temporary refusals for longer than [sending] give_up_after)
               failed | unknown -> pending (a person's --retry-failed / --retry-unknown)
               sent | unknown -> bounced (a bounce came back by mail later)

A delivery in `sending` also says how far it got: `handed` is 0 while only its mark is on
disk (the mark is synced before anything of the message is written) and 1 from just
before its data is written. After a crash `after_crash` decides each such row.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .errors import MailerError


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    BOUNCED = "bounced"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"


class SubscriberStatus(StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


@dataclass(frozen=True)
class Transition:
    """A named change of status: allowed only from `sources`, ending in one of `targets`."""

    name: str
    sources: frozenset[str]
    targets: frozenset[str]

    def allows(self, source: str, target: str | None = None) -> bool:
        return source in self.sources and (target is None or target in self.targets)


def _t(name: str, sources: set[StrEnum], *targets: StrEnum) -> Transition:
    return Transition(name, frozenset(str(s) for s in sources), frozenset(str(t) for t in targets))


C, D = CampaignStatus, DeliveryStatus
UNFINISHED = frozenset({C.DRAFT, C.SCHEDULED, C.SENDING, C.PAUSED})
NOT_STARTED = frozenset({C.DRAFT, C.SCHEDULED})

CAMPAIGN_TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        _t("schedule", {C.DRAFT, C.SCHEDULED}, C.SCHEDULED),
        _t("unschedule", {C.SCHEDULED}, C.DRAFT),
        _t("start", {C.DRAFT, C.SCHEDULED}, C.SENDING),
        _t("pause", {C.SENDING}, C.PAUSED),
        _t("resume", {C.PAUSED, C.DONE}, C.SENDING),
        _t("finish", {C.SENDING}, C.DONE),
        _t("cancel", set(UNFINISHED), C.CANCELLED),
    )
}

DELIVERY_TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        _t("mark_sending", {D.PENDING}, D.SENDING),
        _t("record_outcome", {D.SENDING}, D.SENT, D.FAILED, D.BOUNCED, D.PENDING),
        _t("mark_unknown", {D.SENDING}, D.UNKNOWN),
        _t("release", {D.SENDING}, D.PENDING),
        _t("skip", {D.PENDING}, D.SKIPPED, D.FAILED),
        _t("give_up", {D.PENDING}, D.FAILED),
        _t("retry", {D.FAILED, D.UNKNOWN}, D.PENDING),
        _t("bounce_later", {D.SENT, D.UNKNOWN}, D.BOUNCED),
    )
}

# What a delivery's fate counts as in a run's figures and reports.
FINAL_DELIVERY = frozenset({D.SENT, D.FAILED, D.BOUNCED, D.SKIPPED})


def after_crash(handed: bool, same_boot: bool) -> DeliveryStatus:
    """What a delivery a dead run left in `sending` becomes.

    Its data may have reached the server once it was handed: unknown (reported, never
    sent again blindly). One not handed yet is pending again, but only if the machine
    has not restarted since it was marked: the commit that records a hand-over is not
    synced to disk (that would put a disk sync between each reply and the next message's
    data), so it survives the death of the process but not a power cut.
    """
    return D.PENDING if not handed and same_boot else D.UNKNOWN


class TransitionError(MailerError):
    """A status change the lifecycle table forbids (the row was not in a state that allows it)."""


def campaign_transition(name: str) -> Transition:
    """The campaign transition called `name` (KeyError for a name the table does not know)."""
    return CAMPAIGN_TRANSITIONS[name]


def delivery_transition(name: str) -> Transition:
    """The delivery transition called `name`."""
    return DELIVERY_TRANSITIONS[name]


def forbidden(kind: str, ident: int, transition: Transition, current: str | None, target: str | None = None) -> TransitionError:
    """The error for a refused transition, in words a person can act on."""
    if current is None:
        return TransitionError(f"There is no {kind} {ident}.")
    verb = transition.name.replace("_", " ")
    to = f" to {target}" if target else ""
    return TransitionError(
        f"{kind.capitalize()} {ident} is {current}, so it cannot {verb}{to} "
        f"(allowed from {', '.join(sorted(transition.sources))})."
    )
