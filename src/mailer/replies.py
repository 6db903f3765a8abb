"""What a relay's reply means: for the message, for the address, and for the whole run.

The RFC 3463 enhanced status code decides the class when there is one (`550 4.2.2` is
temporary, `452 5.2.2` permanent); the basic code only when there is none. Some replies
are about the sender rather than the recipient, and the next recipient would get the
same answer: a rate or reputation limit holds the whole run, a sending quota ends it
for the day, a policy refusal pauses the campaign for a person to look at.
"""

from __future__ import annotations

import re
from enum import StrEnum

from .transport import Reply


class Kind(StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"  # this recipient, for now: tried again in this run, then in later runs
    BOUNCED = "bounced"  # the address does not exist: the subscriber is suppressed
    FAILED = "failed"  # this message, for good
    RATE = "rate"  # the relay slows us down: every connection waits, then tries again
    QUOTA = "quota"  # the relay's sending quota is used up: the run ends, the rest waits for tomorrow
    POLICY = "policy"  # the relay refuses us (sender, reputation, content): the campaign pauses
    MESSAGE = "message"  # the relay refuses the message itself (its size, its form, our commands): it pauses too
    AUTH = "auth"  # the relay wants a login it does not have


_BOUNCE_WORDS = re.compile(r"user|mailbox|recipient|address|account|no such|unknown|not exist|disabled", re.I)
_POLICY_WORDS = re.compile(r"spam|policy|block|reputation|rejected|denied|blacklist|listed|abuse", re.I)
# Gmail "Daily user sending quota exceeded", SES "Daily message quota exceeded" / "Sending
# quota exceeded", Microsoft "SubmissionQuotaExceeded" / "submission quota". Not "over quota":
# that is the recipient's mailbox.
_QUOTA_WORDS = re.compile(
    r"\b(daily|sending|submission|message|send)\b[\w\s-]{0,24}\bquota\b|submissionquota|\bquota\b[\w\s-]{0,12}\b(sending|submission)\b",
    re.I,
)
_RATE_WORDS = re.compile(r"\brate\b|throttl|too many (messages|connections|mails?)\b|slow down|try (again )?later", re.I)
_GREYLIST_WORDS = re.compile(r"grey-?list|gray-?list", re.I)
_SIZE_WORDS = re.compile(r"\bsize\b|too (big|large|long)|exceeds?|maximum|limit", re.I)
_FULL_WORDS = re.compile(r"mailbox (is )?full|over ?quota|insufficient (system )?storage|quota exceeded", re.I)


def classify(reply: Reply) -> Kind:
    """What a final reply means; see `Kind`."""
    code, enhanced, text = reply.code, reply.enhanced, reply.text
    if 200 <= code < 300:
        return Kind.SENT
    if code in (530, 535):
        return Kind.AUTH
    if enhanced == "5.4.5" or _QUOTA_WORDS.search(text):
        return Kind.QUOTA
    temporary = (enhanced[:1] or str(code)[:1]) == "4"
    if temporary:
        if _GREYLIST_WORDS.search(text):
            return Kind.TEMPORARY  # greylisting is about this one recipient: try it again
        if enhanced.startswith("4.7.") or enhanced == "4.2.1" or (not enhanced and _RATE_WORDS.search(text)):
            return Kind.RATE
        return Kind.TEMPORARY
    if reply.stage == "mail":
        return Kind.POLICY  # the server refuses our sender address: nothing to do with the recipient
    if enhanced == "5.3.4" or (
        reply.stage == "data" and (enhanced.startswith(("5.5.", "5.6.")) or code in (500, 501, 502, 503, 504) or (
            not enhanced and code == 552 and _SIZE_WORDS.search(text) and not _FULL_WORDS.search(text)))
    ):
        # Too big for the relay, a form it does not take, commands out of order: every message
        # of the campaign would get the same answer, and none of it is the recipient's doing.
        return Kind.MESSAGE
    if enhanced.startswith("5.1.") or enhanced == "5.2.1":
        return Kind.BOUNCED
    if enhanced.startswith("5.7."):
        return Kind.POLICY
    if not enhanced and code in (550, 551, 553) and _BOUNCE_WORDS.search(text) and not _POLICY_WORDS.search(text):
        return Kind.BOUNCED
    if not enhanced and code in (550, 554) and _POLICY_WORDS.search(text):
        return Kind.POLICY
    return Kind.FAILED


def mailbox_full(reply: Reply) -> bool:
    """The recipient's mailbox is full (x.2.2): a soft failure, never a bounce on its own."""
    if classify(reply) == Kind.QUOTA:  # Microsoft's 5.2.2 "submission quota" is ours, not theirs
        return False
    if reply.enhanced:
        return reply.enhanced[1:] == ".2.2"
    return reply.code in (452, 552) and bool(_FULL_WORDS.search(reply.text))
