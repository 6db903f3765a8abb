"""The same letter sent again under a new name: found before it goes out.

A letter is compared by what people read (its subject, preheader, offers and body,
rendered for the same sample subscriber, unsubscribe tokens dropped), never by its file
name or its template. Two letters are "the same" when their normalised words are at least
SIMILAR alike (difflib's ratio over the word sequences). Measured on examples/ (239 words):

- a copy under a new name: 1.0; with two typos fixed (`-final.md`): 0.99;
- January's specials keeping December's three offers and sign-off, with a new subject,
  codes, dates and opening paragraph: 0.83; with the offers renamed too: 0.78;
- the news letter against the specials letter: 0.36;

so 0.9 catches copies and small edits, and leaves a letter with a new subject and opening
alone. Only campaigns that reached somebody in the last WINDOW_DAYS count, and only when
some of the people the new letter goes to got the earlier one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from difflib import SequenceMatcher

from .clock import iso
from .models import Campaign, SentSpan
from .render import CompiledCampaign, sample_subscriber
from .store import Store

WINDOW_DAYS = 30
SIMILAR = 0.9
# An unsubscribe token (payload.mac, base64url): per person and per day, never part of the letter.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{4,200}\.[A-Za-z0-9_-]{16}")
_WORD = re.compile(r"\w+(?:[.,']\w+)*")


def normalise(text: str) -> str:
    """The words of a letter, lower-cased, one space apart; tokens and punctuation dropped."""
    return " ".join(_WORD.findall(_TOKEN.sub(" ", text).casefold()))


def letter_text(renderer: CompiledCampaign) -> str:
    """A campaign's letter as the sample subscriber reads it, normalised (what is stored and compared)."""
    return normalise(renderer.letter(sample_subscriber(renderer.list_name)))


def similarity(a: str, b: str) -> float:
    """How alike two normalised letters are, 0 to 1 (difflib's ratio over their words)."""
    if a == b:
        return 1.0
    wa, wb = a.split(), b.split()
    matcher = SequenceMatcher(None, wa, wb, autojunk=False)
    if matcher.real_quick_ratio() < SIMILAR or matcher.quick_ratio() < SIMILAR:
        return matcher.quick_ratio()  # an upper bound already below the line: no need for the exact one
    return matcher.ratio()


@dataclass(frozen=True)
class Repeat:
    """An earlier campaign with the same (or nearly the same) letter that reached this audience."""

    earlier: Campaign
    span: SentSpan  # when it went out
    reached: int  # how many of the new campaign's audience got it
    audience: int  # how many the new campaign would reach
    alike: float  # similarity, 1.0 = the same words

    @property
    def same(self) -> bool:
        return self.alike >= 0.9999


def find_repeat(store: Store, campaign: Campaign, letter: str, now: datetime,
                letter_of: Callable[[Campaign], str]) -> Repeat | None:
    """The latest campaign of the last WINDOW_DAYS whose letter is at least SIMILAR to this one
    and that went to some of this campaign's audience; None when there is none.

    `letter_of` gives an earlier campaign's letter when it was stored without one.
    """
    found: Repeat | None = None
    audience = store.subscribers.audience_count(campaign.list_name, campaign.tags)
    for earlier, span in store.campaigns.sent_since(iso(now - timedelta(days=WINDOW_DAYS))):
        if earlier.id == campaign.id:
            continue
        alike = similarity(letter, earlier.letter or letter_of(earlier))
        if alike < SIMILAR:
            continue
        reached = store.campaigns.reached(earlier.id, campaign.list_name, campaign.tags)
        if reached and (found is None or span.last > found.span.last):
            found = Repeat(earlier, span, reached, audience, alike)
    return found
