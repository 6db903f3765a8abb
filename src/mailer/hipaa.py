"""HIPAA checks for a covered practice: a relay under a BAA, and audiences not chosen by condition.

A practice that is a HIPAA covered entity may market to its patients only through a
relay that has signed a business associate agreement with it ([smtp] baa = true, with
the provider presets saying which providers offer one). And a list, tag or subject that
names a health condition ("back-pain", "IVF patients") tells every recipient's mail
provider, and anyone who sees the message, that this person has it: a disclosure of
health information. Both are pure functions of the configuration; the send path calls
them, `init` shows them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .providers import FREE_MAIL_DOMAINS, PROVIDERS, providers_for_host

if TYPE_CHECKING:  # config imports this module for the default words
    from .config import Config

# Conditions and health topics whose use to choose an audience (or in a subject) says
# something about the recipients' health. Drawn from the conditions the practice treats
# (seed/practice-website.txt) and common ones besides; `[practice] condition_words` in
# mailer.toml replaces the list.
DEFAULT_CONDITION_WORDS: tuple[str, ...] = (
    "pain", "chronic pain", "back pain", "neck pain", "nerve pain", "knee pain", "shoulder pain",
    "migraine", "headache", "arthritis", "stenosis", "fibromyalgia", "sciatica", "neuropathy",
    "tmj", "plantar fasciitis", "carpal tunnel", "tendonitis", "scar tissue", "bell's palsy",
    "allergies", "asthma", "anxiety", "depression", "ptsd", "insomnia", "addiction", "smoking",
    "weight loss", "obesity", "diabetes", "hypertension", "high blood pressure", "stroke",
    "cancer", "chemotherapy", "infertility", "fertility", "ivf", "pregnancy", "pregnant",
    "postpartum", "miscarriage", "menopause", "pcos", "endometriosis", "ibs", "nausea",
    "vertigo", "tinnitus", "eczema", "psoriasis", "dementia", "parkinson's", "multiple sclerosis",
)


def hipaa_problems(config: Config) -> list[str]:
    """Why a HIPAA-covered practice may not send with these settings; [] when it may.

    With `[practice] hipaa = true` the relay must be confirmed covered by a business
    associate agreement (`[smtp] baa = true`), and the From address cannot be a free-mail
    account (no free-mail service signs a BAA). Each problem is one sentence with its fix.
    """
    if not config.practice.hipaa:
        return []
    problems: list[str] = []
    host = config.smtp.host.strip()
    if not config.smtp.baa:
        presets = providers_for_host(host) if host else []
        if presets:
            said = "; ".join(f"{p.label} {'offers one' if p.baa else 'does not'} ({p.baa_note})" for p in presets)
            covered = [p for p in presets if p.baa]
            fix = (
                "sign it, then set [smtp] baa = true"
                if len(covered) == len(presets)
                else "use a relay that offers one (" + ", ".join(p.label for p in PROVIDERS if p.baa) + "), sign it, then set [smtp] baa = true"
                if not covered
                else "if your account is the one that offers it, sign it, then set [smtp] baa = true"
            )
            problems.append(
                f"[practice] hipaa = true, but no business associate agreement is confirmed for your relay {host}: "
                f"{said}; {fix}."
            )
        else:
            problems.append(
                f"[practice] hipaa = true, but no business associate agreement is confirmed for your relay "
                f"{host or '(no [smtp] host set)'}: ask its provider for one, sign it, then set [smtp] baa = true."
            )
    domain = config.sender.from_email.rpartition("@")[2].strip().lower()
    if domain in FREE_MAIL_DOMAINS:
        problems.append(
            f"[practice] hipaa = true, but [sender] from_email is a free {domain} account, which no business "
            "associate agreement covers: send from an address at the practice's own domain."
        )
    return problems


def _phrase_pattern(word: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in _words(word)]
    # Plurals count ("migraines", "allergies" written "allergy" is a separate entry).
    return re.compile(r"\b" + r"\s+".join(words) + r"(?:s|es)?\b")


def _words(text: str) -> list[str]:
    # "BackPain", "back-pain", "back_pain" and "back pain" all read as "back pain".
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)
    return re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'"))


def condition_words_in(text: str, words: Iterable[str]) -> list[str]:
    """The condition words that occur in text, as whole words (plurals and any spelling of spaces)."""
    flat = " ".join(_words(text))
    return [w for w in words if w.strip() and _phrase_pattern(w).search(flat)]


def condition_warnings(config: Config, subject: str, list_name: str | None, tags: Iterable[str] = ()) -> list[str]:
    """Warnings for a campaign whose audience or subject names a health condition.

    Only for a HIPAA-covered practice (`[practice] hipaa = true`); the words are
    `[practice] condition_words`. One sentence per tag, list name or subject that holds
    any, naming the words found.
    """
    if not config.practice.hipaa:
        return []
    words = config.practice.condition_words
    warnings: list[str] = []
    why = "a campaign sent to people chosen by a condition tells their mail providers, and anyone who sees it, that they have it (a disclosure of health information under HIPAA)"
    for tag in tags:
        found = condition_words_in(tag, words)
        if found:
            warnings.append(f"The tag {tag!r} names a health condition ({', '.join(found)}): {why}; choose the audience by something else.")
    if list_name:
        found = condition_words_in(list_name, words)
        if found:
            warnings.append(f"The list {list_name!r} names a health condition ({', '.join(found)}): {why}; rename the list.")
    found = condition_words_in(subject, words)
    if found:
        warnings.append(
            f"The subject names a health condition ({', '.join(found)}): every inbox shows it, and with an audience "
            "chosen by condition it discloses health information; a general subject is safer."
        )
    return warnings
