"""Pre-send checks: what `mailer check` shows, and what `mailer send` insists on first.

Each check renders the real message (for a sample subscriber with a name and one
without) and looks at what a subscriber, a spam filter or the law would see.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from html import unescape
from html.parser import HTMLParser

from .clock import Clock
from .config import Config
from .content import Content, format_date
from .errors import MailerError
from .postal import looks_like_postal_address  # noqa: F401  (public here too)
from .readiness import message_problems
from .render import SANDBOX_RULES, CompiledCampaign, compile_campaign, message_zone, sample_subscriber

GMAIL_CLIP_BYTES = 102 * 1024  # Gmail hides everything after this much HTML, footer included
SUBJECT_MAX = 60  # longer subjects are cut short on phones
HEADER_LINE_MAX = 78  # RFC 5322 2.1.1 (998 is the hard limit)


@dataclass(frozen=True)
class Check:
    """One line of `mailer check`."""

    level: str  # "pass" | "warning" | "error"
    name: str
    message: str


_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
                   "source", "track", "wbr"})
# Inline styles that hide what they wrap from the reader (a footer must be seen, not just be there).
_HIDING = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|opacity\s*:\s*0(\.0*)?\s*(;|$)"
    r"|font-size\s*:\s*0(\.0*)?\s*(px|pt|em|rem|%)?\s*(;|$)|max-height\s*:\s*0(px)?\s*(;|$)",
    re.I,
)
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]*)""", re.I)
_URL_ATTRS = ("src", "background", "poster", "data", "action", "formaction", "cite", "longdesc", "lowsrc", "dynsrc")


class _Page(HTMLParser):
    """Links, images, other fetched addresses, scripts and visible text of an HTML part."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.visible_links: list[str] = []  # hrefs of links a reader can see
        self.link_texts: list[tuple[str, str]] = []  # (href, its visible words) of each link
        self.images: list[dict[str, str | None]] = []
        self.fetched: list[str] = []  # every other address the page loads: srcset, CSS url(), background ...
        self.scripts: list[str] = []
        self.traps: list[str] = []  # <meta refresh>, <base>: what sends a reader or every link elsewhere
        self.text: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # open elements: (tag, hides what it wraps)
        self._hidden = 0  # inside <style>/<title>/<head>, or an element styled out of sight
        self._in_style = 0
        self._link: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        hides = tag in ("style", "title", "head", "script", "template") or "hidden" in a or bool(
            _HIDING.search(a.get("style") or "")
        )
        if tag == "a" and a.get("href") is not None:
            href = (a["href"] or "").strip()
            self.links.append(href)
            if not self._hidden and not hides:
                self.visible_links.append(href)
            self._link = (href, [])
        if tag == "img":
            self.images.append(a)
        if tag == "link" and a.get("href"):
            self.fetched.append((a["href"] or "").strip())
        for key in _URL_ATTRS:
            if tag != "img" or key != "src":
                if a.get(key):
                    self.fetched.append((a[key] or "").strip())
        if a.get("srcset"):
            self.fetched += [c.strip().split()[0] for c in (a["srcset"] or "").split(",") if c.strip()]
        if a.get("style"):
            self.fetched += _CSS_URL.findall(a["style"] or "")
        if tag in ("script", "iframe", "object", "embed", "form", "applet"):
            self.scripts.append(f"<{tag}>")
        if tag == "meta" and (a.get("http-equiv") or "").strip().lower() == "refresh":
            self.traps.append("<meta http-equiv=refresh>, which sends the reader to another page")
        if tag == "base":
            self.traps.append("<base href>, which changes where every link goes")
        for key, value in attrs:
            if key.startswith("on"):
                self.scripts.append(f"{key}= on <{tag}>")
            if key in ("href", "src") and (value or "").strip().lower().startswith("javascript:"):
                self.scripts.append(f"a javascript: link on <{tag}>")
        if tag == "style":
            self._in_style += 1
        if tag not in _VOID:
            self._stack.append((tag, hides))
            self._hidden += hides

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._link is not None:
            self.link_texts.append((self._link[0], " ".join(" ".join(self._link[1]).split())))
            self._link = None
        if tag == "style" and self._in_style:
            self._in_style -= 1
        if not any(t == tag for t, _ in self._stack):
            return  # a stray end tag
        while self._stack:
            open_tag, hides = self._stack.pop()
            self._hidden -= hides
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.fetched += _CSS_URL.findall(data)
        if not self._hidden:
            self.text.append(data)
            if self._link is not None:
                self._link[1].append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def _stands_alone(link: str, text: str) -> bool:
    """Is link in text as a link of its own (not inside another address, as ?body=LINK)?"""
    return re.search(r"(?:^|(?<=[\s<(\[\"']))" + re.escape(link) + r"(?=$|[\s>)\]\"',.;!?])", text) is not None


def _flat(text: str) -> str:
    return " ".join(unescape(text).split())


_CHECK_NAMES = {
    "[practice] address": "postal address", "[practice] name": "practice name", "[practice] phone": "phone",
    "[sender] from_email": "sender", "[unsubscribe] url": "unsubscribe link", "[smtp] baa": "HIPAA",
    "[practice] website": "website", "[practice] booking_url": "booking link", "[practice] logo_url": "logo",
}


def run_checks(
    content: Content, templates: Mapping[str, str], config: Config, secret: bytes, clock: Clock,
    compiled: CompiledCampaign | None = None, *, send_at: datetime | None = None,
) -> list[Check]:
    """Every pre-send check for content with these templates and settings, in a fixed order.

    A send passes the CompiledCampaign it will use, so the templates are compiled once per run.
    send_at is when the campaign will go out (a scheduled campaign's time); None means now,
    from the clock. Offers are checked against that day in the workspace's time zone: one
    that has ended by then is an error, one that ends that very day a warning. A naive
    send_at is read in the workspace's time zone.
    """
    checks: list[Check] = []

    def add(level: str, name: str, message: str) -> None:
        checks.append(Check(level, name, message))

    # -- settings the law and the message need (the same rules as a send: mailer.readiness)
    p = config.practice
    problems = message_problems(config)
    for problem in problems:
        add(problem.level, _CHECK_NAMES.get(problem.key, problem.key), problem.message + (f" {problem.hint}" if problem.hint else ""))
    if not any(pr.is_error for pr in problems):
        add("pass", "postal address", f"[practice] address is {p.address!r}.")
        add("pass", "sender", f"From {config.sender.from_email}.")
    if not config.unsubscribe.url:
        add("warning", "one-click unsubscribe", "[unsubscribe] url in mailer.toml is empty, so messages offer only the "
            "mailto unsubscribe; Gmail and Yahoo ask senders of 5,000 messages a day for one-click unsubscribe (RFC 8058). "
            "Set it when you have such a page.")
    if content.template == "specials" and not (p.booking_url or p.website):
        add("warning", "booking link", "[practice] booking_url and website are empty, so specials have no booking button.")

    # -- the content's own fields
    add("pass", "subject", f"Subject: {content.subject}")
    reply = _REPLY_PREFIX.match(content.subject)
    if reply:
        add("error", "subject", f"The subject starts with {reply.group(0).strip()!r}, as a reply or a forward does; a letter "
            "to the list is neither, and the law (CAN-SPAM) forbids a misleading subject. Remove it.")
    if len(content.subject) > SUBJECT_MAX:
        add("warning", "subject length", f"The subject is {len(content.subject)} characters; phones show about {SUBJECT_MAX}, so put the news first.")
    else:
        add("pass", "subject length", f"The subject is {len(content.subject)} characters.")
    if not content.preheader:
        add("warning", "preheader", "There is no preheader; inboxes will show the first words of the message instead.")
    elif len(content.preheader) > 140:
        add("warning", "preheader", f"The preheader is {len(content.preheader)} characters; inboxes show about 100.")
    if not content.body.strip():
        add("warning", "text", "The letter has no text below the front matter; the message will carry only the template.")
    if content.template == "specials" and not content.offers:
        add("error", "offers", "A specials message needs at least one offer under 'offers:' in the front matter.")
    if content.template == "news" and content.offers:
        add("warning", "offers", "The news template does not show offers; use template: specials to show them.")
    zone = message_zone(config)
    if send_at is None:
        send_day, when = clock.now().astimezone(zone).date(), "today"
    else:
        local = send_at.replace(tzinfo=zone) if send_at.tzinfo is None else send_at.astimezone(zone)
        send_day, when = local.date(), f"on {format_date(local.date())}, when this campaign goes out"
    for offer in content.offers:
        if offer.valid_until is None:
            continue
        if offer.valid_until < send_day:
            add("error", "offer dates", f"The offer {offer.title!r} ended on {format_date(offer.valid_until)}"
                + ("." if send_at is None else f", before this campaign goes out on {format_date(send_day)}.")
                + " Change its valid_until, or take it out.")
        elif offer.valid_until == send_day:
            add("warning", "offer dates", f"The offer {offer.title!r} ends {when}.")
        else:
            add("pass", "offer dates", f"The offer {offer.title!r} is valid until {format_date(offer.valid_until)}.")
    if re.search(r"\{\{\s*first_name\s*\}\}", content.body):
        add("warning", "personalisation", 'The body uses {{ first_name }} without a default; people without a name will read "Hi ,". Write {{ first_name | default("there") }}.')
    if re.search(r"<style\b", content.body, re.I):
        add("warning", "styles", "The letter's own <style> block is left out of the message (most mail programs drop "
            "such blocks); style the template instead (`mailer templates copy`).")

    # -- render it, as a subscriber with a name and one without
    add("pass", "sandbox", SANDBOX_RULES)
    try:
        if compiled is None:
            compiled = compile_campaign(content, templates, config, secret, list_name=content.template, campaign_key="check", clock=clock)
        messages = [compiled.render(sample_subscriber(content.template, named=n), check_footer=False) for n in (True, False)]
    except MailerError as exc:
        add("error", "templates", exc.message + (f" ({exc.hint})" if exc.hint else ""))
        return checks
    add("pass", "templates", "Renders for a subscriber with a name and for one without.")
    message = messages[0]
    page = _Page()
    page.feed(message.html)
    page.close()
    text, html_text = _flat(message.text), page.visible

    # -- unsubscribe link and postal address in both parts (CAN-SPAM): there, whole, and seen
    ours = [link for link in message.unsubscribe_links if link]
    in_text = any(_stands_alone(link, message.text) for link in ours)
    in_html = any(href in ours for href in page.visible_links)
    for part, has in (("text", in_text), ("HTML", in_html)):
        if has:
            add("pass", "unsubscribe link", f"The {part} part has a working unsubscribe link.")
        elif part == "HTML" and any(href in ours for href in page.links):
            add("error", "unsubscribe link", "The HTML part's unsubscribe link is hidden (display:none, font-size:0 "
                "or the like); it must be seen. Show {{ unsubscribe_url }} as a visible link.")
        elif any(link in (message.text if part == "text" else message.html) for link in ours):
            add("error", "unsubscribe link", f"The {part} part has the unsubscribe link only inside another address; "
                "print {{ unsubscribe_url }} as a link of its own (in HTML: <a href=\"{{ unsubscribe_url }}\">).")
        else:
            add("error", "unsubscribe link", f"The {part} part has no unsubscribe link; print {{{{ unsubscribe_url }}}} in the template.")
    elsewhere = [href for href, words in page.link_texts if "unsubscribe" in words.lower() and href not in ours]
    if elsewhere:
        add("error", "unsubscribe link", f"A link that says unsubscribe goes somewhere else ({elsewhere[0]}); "
            "only {{ unsubscribe_url }} may say it.")
    if p.address.strip():
        street, _, city = p.address.partition(",")
        needles = [_flat(x) for x in (street, city) if x.strip()]
        for part, haystack in (("text", text), ("HTML", html_text)):
            if all(n in haystack for n in needles):
                add("pass", "postal address shown", f"The {part} part shows the postal address.")
            else:
                add("error", "postal address shown", f"The {part} part does not show the postal address; print {{{{ practice.address }}}} in the template.")

    # -- links, images, scripts, size
    bad = [h for h in page.links if not h.startswith(("https://", "mailto:", "tel:"))]
    plain_http = [h for h in bad if h.lower().startswith("http://")]
    broken = [h for h in bad if not h.lower().startswith("http://")]
    if plain_http:
        add("error", "links", f"{len(plain_http)} link(s) use http:, not https: (first: {plain_http[0]}); mail programs "
            "and spam filters distrust unencrypted links. Write https://.")
    if broken:
        add("error", "links", f"{len(broken)} link(s) cannot work in an email (first: {broken[0] or 'an empty link'}); links must start with https://.")
    if not bad:
        add("pass", "links", f"All {len(page.links)} links use https:, mailto: or tel:.")
    srcs = [i.get("src") or "" for i in page.images] + page.fetched
    if any(not s.startswith(("https://", "cid:", "#")) for s in srcs):
        add("error", "images", "Images and anything else the message loads must come from an https:// address "
            "(first: " + next(s for s in srcs if not s.startswith(("https://", "cid:", "#"))) + ").")
    if page.traps:
        add("error", "no redirects", f"The HTML holds {page.traps[0]}; take it out.")
    no_alt = [i.get("src") or "" for i in page.images if not (i.get("alt") or "").strip()]
    if no_alt:
        add("warning", "image alt text", f"{len(no_alt)} image(s) have no alt text, which is all many readers see (first: {no_alt[0]}); write ![what it shows](url).")
    elif page.images:
        add("pass", "image alt text", f"Every image ({len(page.images)}) has alt text.")
    if page.scripts:
        add("error", "no scripts", f"The HTML holds {page.scripts[0]}; email programs block scripts and spam filters punish them.")
    _header_lines(message.data, add)
    size = max(len(m.html.encode("utf-8")) for m in messages)
    kb = f"{size / 1024:.0f} KB"
    if size > GMAIL_CLIP_BYTES:
        add("error", "size", f"The HTML is {kb}; Gmail cuts messages above 102 KB, hiding the footer and unsubscribe link.")
    elif size > GMAIL_CLIP_BYTES * 0.8:
        add("warning", "size", f"The HTML is {kb}, close to Gmail's 102 KB clipping limit.")
    else:
        add("pass", "size", f"The HTML is {kb} (Gmail clips above 102 KB); the whole message is {len(message.data) / 1024:.0f} KB.")
    return checks


def _header_lines(data: bytes, add: Callable[[str, str, str], None]) -> None:
    """RFC 5322 asks for header lines of at most 78 characters (998 at most): say which are longer."""
    lines = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
    name = ""
    long_lines, unbreakable = [], []
    for line in lines:
        if not line.startswith((" ", "\t")):
            name = line.split(":", 1)[0]
        if len(line) <= HEADER_LINE_MAX:
            continue
        # A link or an address in <...> cannot be folded: it may be longer (up to 998).
        if _ONE_TOKEN.fullmatch(line) and len(line.encode("utf-8")) <= 998:
            unbreakable.append(name)
        else:
            long_lines.append((name, len(line)))
    if long_lines:
        name, length = long_lines[0]
        add("warning", "header lines", f"The {name} header has a line of {length} characters; mail programs expect at most "
            f"{HEADER_LINE_MAX} (RFC 5322).")
    else:
        extra = f", except {', '.join(sorted(set(unbreakable)))}, whose links cannot be folded" if unbreakable else ""
        add("pass", "header lines", f"Every header line is at most {HEADER_LINE_MAX} characters{extra}.")


# A reply or forward marker in English, German, French, Spanish, Portuguese, Italian,
# Dutch, the Nordic languages, Polish and Turkish: "Re:", "RE :", "Fwd:", "AW:", "TR:", "Re[2]:".
_REPLY_PREFIX = re.compile(
    r"^\s*(?:re|fwd?|aw|wg|tr|rv|res|enc|rif|sv|vs|vb|antw|doorst|odp|pd|ynt)\s*(?:\[\d+\]|\(\d+\))?\s*:",
    re.IGNORECASE,
)
_ONE_TOKEN = re.compile(r"(?:[!-9;-~]+:)? ?<[^<>\s]+>,?")
