"""Look-alike domains: `jane@gmial.com` is almost surely `jane@gmail.com`.

An address whose domain is one slip (a letter wrong, missing, doubled or two swapped)
away from a common provider's gets a "did you mean". Nothing is changed unless a person
asks (--fix-typos); real domains that happen to be one slip from a provider (ymail.com,
mail.com, gmx.com...) are known and left alone.
"""

from __future__ import annotations

from functools import lru_cache

# The providers most of a small practice's patients use (US first), whose slips we catch.
# Very short ones (me.com, msn.com, cox.net, att.net, live.com) are left out: too many real
# domains (box.net, line.com, life.com) are one slip from them.
PROVIDERS = (
    "gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "aol.com", "icloud.com", "comcast.net",
    "verizon.net", "optonline.net", "sbcglobal.net", "bellsouth.net", "charter.net", "earthlink.net",
    "protonmail.com", "googlemail.com", "ymail.com", "rocketmail.com", "hotmail.co.uk", "yahoo.co.uk",
)
# Real domains one slip away from a provider above: never "corrected".
REAL = frozenset(PROVIDERS) | {
    "mail.com", "email.com", "cloud.com", "yahoo.ca", "yahoo.fr", "yahoo.de", "yahoo.es", "yahoo.it",
    "yahoo.co.in", "yahoo.co.jp", "hotmail.fr", "hotmail.de", "hotmail.it", "hotmail.es", "outlook.fr",
    "outlook.de", "outlook.es", "outlook.it", "aim.com",
}


def one_slip(a: str, b: str) -> bool:
    """Are a and b different by exactly one letter changed, added, dropped, or two neighbours swapped?"""
    if a == b:
        return False
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    short, long_ = (a, b) if la < lb else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1:]


@lru_cache(maxsize=4096)  # a list has a few hundred domains for its many addresses
def suggest_domain(domain: str) -> str | None:
    """The provider's domain this one looks like a slip of, or None (also for every real one)."""
    domain = domain.strip().lower().rstrip(".")
    if domain in REAL or not domain.isascii():
        return None
    for provider in PROVIDERS:
        if one_slip(domain, provider):
            return provider
    return None


def suggest_address(address: str) -> str | None:
    """The address with the provider's domain when its own looks like a slip, else None."""
    local, at, domain = address.rpartition("@")
    if not at:
        return None
    better = suggest_domain(domain)
    return f"{local}@{better}" if better else None
