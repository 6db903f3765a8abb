"""What a message that came back to the practice's mailbox is: pure, bytes in, Verdict out.

The kinds, tried in this order (the first that fits wins):

1. complaint    an ARF report (RFC 5965, multipart/report; report-type=feedback-report),
                or an Amazon SES complaint notification
2. bounce       an RFC 3464 delivery status notification, read field by field, or an
                Amazon SES bounce notification
3. unsubscribe  our signed token in the Subject (the List-Unsubscribe mailto sets
                "unsubscribe TOKEN"), whoever sends it
4. bounce       the non-standard formats (Gmail, Yahoo, qmail, old Exim, Exchange, ...),
                found by flufl.bounce in mail that looks like a bounce
5. auto-reply   RFC 3834 Auto-Submitted, X-Autoreply, Precedence: auto_reply, "Out of
                office" subjects: recognised and left alone, never a bounce
6. unsubscribe  our token, or "unsubscribe" / "remove me" / "darme de baja" ... in the
                first few lines the sender wrote (not what they quoted), in a short mail
7. other        everything else

A token that has our shape but not our signature makes the verdict `forged`, never
acted on. Matching the message to a delivery (by the original Message-ID, the VERP
token, the token in the returned headers, or the address) is process.py's business;
this module only says what the message carries.
"""

from __future__ import annotations

import email
import email.header
import email.utils
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import compat32
from enum import StrEnum
from typing import Any

from flufl.bounce import all_failures

from ..errors import InputError
from ..tokens import looks_like_verp_token, verify_token, verify_verp_token


class Kind(StrEnum):
    """What a message is, in the words of the summary."""

    BOUNCE_HARD = "bounce-hard"
    BOUNCE_SOFT = "bounce-soft"
    UNSUBSCRIBE = "unsubscribe"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto-reply"
    FORGED = "forged"
    UNCLEAR = "unclear"  # speaks of leaving, but not clearly the sender asking to: a person reads it
    OTHER = "other"


@dataclass(frozen=True)
class Failure:
    """One recipient a bounce reports on."""

    address: str  # as we addressed it: Original-Recipient when given, else Final-Recipient
    permanent: bool
    status: str = ""  # RFC 3463 code, "5.1.1"; "" when the bounce gives none
    action: str = ""  # failed | delayed (DSN Action); "" for a non-standard bounce
    diagnostic: str = ""  # the remote server's words, one line


@dataclass(frozen=True)
class Verdict:
    """What one message is, and everything in it that can match it to a delivery."""

    kind: Kind
    reason: str  # one line for `-v`: why this kind
    key: str  # the message's identity for "already processed": its Message-ID, or sha256 of its headers
    message_id: str = ""  # this message's own Message-ID ("" when it has none)
    sender: str = ""  # the From address, lower-case
    subject: str = ""
    original_message_ids: tuple[str, ...] = ()  # of the message it returns or answers, most likely first
    failures: tuple[Failure, ...] = ()  # bounces: one per recipient
    addresses: tuple[str, ...] = ()  # bounces and complaints: the recipients named
    token: str = ""  # the unsubscribe token found (valid, or the forged one)
    subscriber_id: int | None = None  # from a valid token
    list_name: str = ""  # from the token, else the returned List-Id
    verp_delivery_id: int | None = None  # from a valid VERP token in the bounce address
    feedback_type: str = ""  # complaints: abuse | fraud | virus | other

    @property
    def status(self) -> str:
        """The status code of the worst failure ("" when there is none)."""
        worst = self._worst()
        return worst.status if worst else ""

    @property
    def diagnostic(self) -> str:
        """The diagnostic text of the worst failure."""
        worst = self._worst()
        return worst.diagnostic if worst else ""

    def _worst(self) -> Failure | None:
        return next((f for f in self.failures if f.permanent), self.failures[0] if self.failures else None)

    @property
    def is_bounce(self) -> bool:
        """A hard or soft bounce."""
        return self.kind in (Kind.BOUNCE_HARD, Kind.BOUNCE_SOFT)


# -- shapes ------------------------------------------------------------------------------

_TOKEN = r"[A-Za-z0-9_-]{4,200}\.[A-Za-z0-9_-]{16}"
_ANY_TOKEN = re.compile(rf"(?<![A-Za-z0-9_.-])({_TOKEN})(?![A-Za-z0-9_-])")
# How our links carry the token: mailto ...?subject=unsubscribe%20TOKEN, https ...?token=TOKEN,
# and the Subject the mailto produces: "unsubscribe TOKEN".
_LINK_TOKEN = re.compile(rf"(?:unsubscribe(?:%20|\s+)|[?&]token=)({_TOKEN})(?![A-Za-z0-9_-])", re.I)
_MSGID = re.compile(r"<[^<>\s]{1,250}@[^<>\s]{1,250}>")
_INLINE_MSGID = re.compile(r"^[ \t>]*Message-ID:[ \t]*(<[^<>\s]+@[^<>\s]+>)", re.I | re.M)
_INLINE_LIST_ID = re.compile(r"^[ \t>]*List-Id:[^<\n]*<([a-z0-9][a-z0-9_-]{0,49})\.", re.I | re.M)
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"(?<!\d)([245])\d\d(?=[ -])")
_ADDRESS = re.compile(r"^[^\s@<>\"'(),;:\\\[\]{}]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z0-9-]{2,63}$")
_VERP_ADDRESS = re.compile(r"[^\s<>\"@+]+\+([A-Za-z0-9-]{1,40})@[A-Za-z0-9.-]+")

# Headers where the bounce address (and so a VERP token) shows up on the way back.
_ENVELOPE_HEADERS = ("to", "delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "return-path")

_DAEMONS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mdaemon"})
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification|delivery (has )?fail|failure notice|mail delivery fail"
    r"|returned mail|could not be delivered|non[- ]?delivery|delivery notification|delayed mail"
    r"|warning: could not send|mail system error|no se pudo entregar|no entregado",
    re.I,
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto[- ]?reply|autoreply|auto:|auto response|autoresponse"
    r"|vacation|away from (my|the) (desk|office)|respuesta autom[aá]tica|fuera de la oficina"
    r"|r[eé]ponse automatique|abwesenheit|absence)",
    re.I,
)
_AUTO_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-mail-autoreply")
_COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})

# Lines that start what the sender quoted or forwarded: nothing below is their own words.
BY_WORDING = "reply asking to leave"  # the reason of an unsubscribe read from a reply's words (no token)

_QUOTE_START = re.compile(
    r"^(on\b.{0,200}\bwrote:?|el\b.{0,200}\bescribi[oó]:?|le\b.{0,200}\ba [eé]crit\s?:"
    r"|-{2,}\s*(original message|mensaje original|forwarded message|mensaje reenviado)\s*-{2,}"
    r"|_{8,}|-{8,}|from:\s|de:\s|sent from my\b|enviado desde\b|get outlook for\b)",
    re.I,
)
_PREFIX = re.compile(r"^\s*((re|fwd?|aw|rv|tr|sv|wg)\s*(\[\d+\])?\s*:\s*)+", re.I)
_FIRST_LINES = 3  # how far into the sender's own words an unsubscribe phrase may stand
_SHORT = 600  # characters: longer own text is a letter, not an unsubscribe request

# Phrases that ask to leave, found anywhere in the first lines (accents stripped, case folded).
_PHRASES = re.compile(
    r"\b(unsubscribe|unsubcribe|remove me|remove my (e-?mail|address|name)|take me off|opt[- ]?out"
    r"|stop (sending|e-?mailing|mailing)|no more e-?mails"
    r"|dar(me|se)? de baja|dame de baja|denme de baja|de de baja|cancelar (mi |la )?suscripcion"
    r"|no quiero recibir|desuscribir(me)?|eliminarme|eliminame|quitarme|quitame|sacarme|sacame|borrarme|borrame)\b"
)
# Words that ask to leave only when they are the whole line ("STOP", "Baja por favor").
_ALONE = re.compile(
    r"^(please |por favor )?(stop|unsubscribe|remove|baja|eliminar|quitar|cancelar|alto)"
    r"( please| por favor| thanks?( you)?| gracias)?[.!]*$"
)
_NEGATION = re.compile(r"\b(don'?t|do not|not|never|no need to)\s+(\w+\s+){0,2}$")
# What makes a reply that speaks of leaving something a person should read instead:
_SOMEONE_ELSE = re.compile(
    r"\b(my (husband|wife|partner|spouse|son|daughter|kids?|child(ren)?|mother|mom|mum|father|dad|parents?"
    r"|sister|brother|friend|boyfriend|girlfriend|patient|client)|him|her|them"
    r"|mi (esposo|esposa|marido|mujer|pareja|hij[oa]s?|madre|padre|mama|papa|herman[oa]|amig[oa]))\b"
)
_ELSEWHERE = re.compile(  # "remove me from the waitlist": leaving something that is not the mailing
    r"^\s*(from|off|of|de|del)\s+"
    r"(?!((the|your|my|this|that|these|those|all|every|any|la|el|mi|su|sus|tu|tus|esta|este|estos|estas|los|las)\s+)*"
    r"(list|lists|lista|listas|mailing|e-?mails?|emails?|mails?|news|newsletters?|specials|offers|correos?"
    r"|boletin|these|this|all|everything|it|todo|todos|ellos|aqui|here)\b)\w+"
)
_ONE_LIST = re.compile(r"\b(specials?|offers?|promotions?|news(letters?)?|ofertas|promociones|noticias|boletin)\b")
_BUT_KEEP = re.compile(r"\b(but|except|only|just|keep|still|pero|solo|excepto|menos|mantener|seguir)\b")
_ANY_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")


# -- entry point -------------------------------------------------------------------------


def classify(raw: bytes, secret: bytes) -> Verdict:
    """Say what one message (its raw bytes) is, checking any token with the workspace secret."""
    msg = email.message_from_bytes(raw, policy=compat32)
    facts = _Facts(msg, raw, secret)
    for step in (_complaint, _dsn, _ses_notification, _subject_token, _nonstandard_bounce, _auto_reply, _reply):
        verdict = step(facts)
        if verdict is not None:
            return verdict
    return facts.verdict(Kind.OTHER, "nothing to act on")


class _Facts:
    """The message, parsed once, and what every step asks of it."""

    def __init__(self, msg: Message, raw: bytes, secret: bytes):
        self.msg = msg
        self.raw = raw
        self.secret = secret
        self.message_id = _first_msgid(_h(msg, "message-id"))
        self.sender = _address(_h(msg, "from"))
        self.subject = _decoded(_h(msg, "subject"))
        self.forged_token = ""
        self._key: str | None = None

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = self.message_id or message_hash(self.raw)
        return self._key

    def verdict(self, kind: Kind, reason: str, **found: Any) -> Verdict:
        return Verdict(
            kind=kind, reason=reason, key=self.key, message_id=self.message_id,
            sender=self.sender, subject=self.subject, **found,
        )

    def replied_to(self) -> list[str]:
        """Message-IDs this message answers (In-Reply-To, then References newest first)."""
        ids = _MSGID.findall(_h(self.msg, "in-reply-to") or "")
        ids += reversed(_MSGID.findall(_h(self.msg, "references") or ""))
        return [i for i in dict.fromkeys(ids) if i != self.message_id]

    def check_token(self, token: str, *, claimed: bool) -> tuple[str, int | None, str]:
        """(token, subscriber id, list) for a valid token. A bad one that was presented as
        an unsubscribe token (`claimed`) is remembered as forged; a merely token-shaped
        word is ignored."""
        try:
            info = verify_token(self.secret, token)
        except InputError:
            if claimed and not self.forged_token:
                self.forged_token = token
            return "", None, ""
        return token, info.subscriber_id, info.list_name

    def verp(self, headers: Iterable[Message]) -> tuple[int | None, bool]:
        """(delivery id, forged?) from a VERP bounce address in these header blocks."""
        forged = False
        for block in headers:
            for name in _ENVELOPE_HEADERS:
                for value in block.get_all(name, []) or []:
                    for token in _VERP_ADDRESS.findall(str(value)):
                        if not looks_like_verp_token(token):
                            continue
                        try:
                            return verify_verp_token(self.secret, token), False
                        except InputError:
                            forged = True
        return None, forged


# -- 1. complaints ---------------------------------------------------------------------------


def _complaint(f: _Facts) -> Verdict | None:
    msg = f.msg
    if msg.get_content_type() != "multipart/report" and not _has_part(msg, "message/feedback-report"):
        return None
    if msg.get_content_type() == "multipart/report" and _param(msg, "report-type").lower() != "feedback-report":
        return None
    report = None
    for part in _walk(msg):
        if part.get_content_type() == "message/feedback-report":
            report = _report_fields(part)
            break
    if report is None:
        return None
    feedback = (_h(report, "feedback-type") or "").strip().lower()
    if feedback not in _COMPLAINT_TYPES:
        # auth-failure (RFC 6591) and not-spam reports are not complaints about our mail.
        return f.verdict(Kind.OTHER, f"feedback report of type {feedback or 'unknown'}", feedback_type=feedback)
    addresses = [a for a in (_address(v) for n in ("original-rcpt-to", "removal-recipient")
                              for v in report.get_all(n, []) or []) if a]
    returned = _returned(f)
    return _with_matches(
        f, Kind.COMPLAINT, f"spam complaint ({feedback}) from {_reporter(report, msg)}",
        returned, addresses=tuple(dict.fromkeys(addresses)), feedback_type=feedback,
    )


def _reporter(report: Message, msg: Message) -> str:
    agent = (_h(report, "user-agent") or "").strip()
    return agent or _address(_h(msg, "from")) or "a mailbox provider"


# -- 2. RFC 3464 delivery status notifications -------------------------------------------------


def _dsn(f: _Facts) -> Verdict | None:
    msg = f.msg
    blocks: list[Message] = []
    for part in _walk(msg):
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            blocks.extend(_status_blocks(part))
    if not blocks:
        return None
    failures: list[Failure] = []
    actions = []
    for block in blocks:
        action = (_h(block, "action") or "").strip().lower().split(" ")[0].split("(")[0]
        if not action:
            continue  # the per-message block (Reporting-MTA, Arrival-Date), not a recipient
        actions.append(action)
        failure = _dsn_failure(block, action)
        if failure is not None:
            failures.append(failure)
    if not actions:
        return None  # an empty report: let the non-standard readers look at the text
    if not failures:
        said = ", ".join(dict.fromkeys(actions))
        return f.verdict(Kind.OTHER, f"delivery report that says {said}, not a failure")
    kind = Kind.BOUNCE_HARD if any(x.permanent for x in failures) else Kind.BOUNCE_SOFT
    worst = next((x for x in failures if x.permanent), failures[0])
    reason = _bounce_reason(worst, "delivery status notification")
    return _with_matches(
        f, kind, reason, _returned(f), failures=tuple(failures),
        addresses=tuple(dict.fromkeys(x.address for x in failures if x.address)),
    )


def _dsn_failure(block: Message, action: str) -> Failure | None:
    """One per-recipient block read field by field: failed + 5.x.x is permanent, anything
    delayed or 4.x.x is temporary; delivered, relayed and expanded are no failure."""
    if action not in ("failed", "delayed", "error", "failure"):
        return None
    address = _recipient(_h(block, "original-recipient")) or _recipient(_h(block, "final-recipient"))
    diagnostic = _one_line(_h(block, "diagnostic-code"))
    diagnostic = re.sub(r"^\s*(smtp|x-[a-z-]+|x-unix)\s*;\s*", "", diagnostic, flags=re.I)
    status = _status_code(_h(block, "status")) or _status_code(diagnostic)
    if action == "delayed":
        permanent = False
    elif status:
        permanent = status.startswith("5")
    else:
        code = _SMTP_CODE.search(diagnostic)
        permanent = code.group(1) != "4" if code else True  # "failed" with nothing else said
    return Failure(address=address, permanent=permanent, status=status, action=action, diagnostic=diagnostic[:300])


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    cte = (_h(part, "content-transfer-encoding") or "").strip().lower()
    if isinstance(payload, list) and cte not in ("base64", "quoted-printable"):
        return [p for p in payload if isinstance(p, Message)]
    # An encoded or unparsed report: decode it and read the blank-line separated blocks.
    data = _payload_bytes(part) if cte in ("base64", "quoted-printable") else None
    if data is not None:
        text = data.decode("utf-8", "replace")
    elif isinstance(payload, list):
        text = "\n\n".join(str(p) for p in payload)  # str() of a Message is its as_string()
    else:
        text = str(payload)
    parser = HeaderParser(policy=compat32)
    return [parser.parsestr(chunk.strip() + "\n") for chunk in re.split(r"\r?\n[ \t]*\r?\n", text) if chunk.strip()]


# -- Amazon SES notifications (SNS to e-mail) -----------------------------------------------


def _ses_notification(f: _Facts) -> Verdict | None:
    if b'notificationType' not in f.raw and b'eventType' not in f.raw:
        return None
    text = _body_text(f.msg).lstrip()
    if not text.startswith("{"):
        return None
    try:
        doc, _ = json.JSONDecoder(strict=False).raw_decode(text)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("Message"), str):  # raw SNS envelope
        try:
            doc = json.loads(doc["Message"], strict=False)
        except ValueError:
            return None
    if not isinstance(doc, dict):
        return None
    kind = str(doc.get("notificationType") or doc.get("eventType") or "").lower()
    mail = _object(doc.get("mail"))
    returned = _ses_headers(mail)
    if kind == "bounce":
        bounce = _object(doc.get("bounce"))
        permanent = str(bounce.get("bounceType", "")).lower() == "permanent"
        failures = []
        for r in bounce.get("bouncedRecipients") or []:
            if not isinstance(r, dict):
                continue
            diagnostic = re.sub(r"^\s*smtp\s*;\s*", "", _one_line(str(r.get("diagnosticCode", ""))), flags=re.I)
            failures.append(Failure(
                address=_address(str(r.get("emailAddress", ""))), permanent=permanent,
                status=_status_code(str(r.get("status", ""))) or _status_code(diagnostic),
                action=str(r.get("action", "") or "failed").lower(), diagnostic=diagnostic[:300],
            ))
        if not failures:
            return None
        sub = bounce.get("bounceSubType", "")
        reason = _bounce_reason(failures[0], f"Amazon SES {bounce.get('bounceType', '')} bounce ({sub})")
        return _with_matches(
            f, Kind.BOUNCE_HARD if permanent else Kind.BOUNCE_SOFT, reason, returned,
            failures=tuple(failures), addresses=tuple(x.address for x in failures if x.address),
        )
    if kind == "complaint":
        complaint = _object(doc.get("complaint"))
        addresses = tuple(_address(str(r.get("emailAddress", ""))) for r in complaint.get("complainedRecipients") or []
                          if isinstance(r, dict))
        feedback = str(complaint.get("complaintFeedbackType") or "abuse").lower()
        return _with_matches(f, Kind.COMPLAINT, f"spam complaint ({feedback}) via Amazon SES", returned,
                             addresses=tuple(a for a in addresses if a), feedback_type=feedback)
    return None


def _object(value: object) -> dict[str, Any]:
    """A JSON object of the notification, or an empty one where it holds something else."""
    return value if isinstance(value, dict) else {}


def _ses_headers(mail: dict[str, Any]) -> list[Message]:
    block = Message()
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and header.get("name") and isinstance(header.get("value"), str):
            block[str(header["name"])] = _one_line(header["value"])
    common = _object(mail.get("commonHeaders"))
    if common.get("messageId") and "message-id" not in block:
        block["Message-ID"] = str(common["messageId"])
    return [block]


# -- 3. and 6. unsubscribe requests ------------------------------------------------------------


def _subject_token(f: _Facts) -> Verdict | None:
    """The List-Unsubscribe mailto sets Subject: unsubscribe TOKEN; it names the subscriber,
    whoever sends it."""
    return _token_request(f, f.subject, "in the subject")


def _token_request(f: _Facts, text: str, where: str) -> Verdict | None:
    for match in _ANY_TOKEN.finditer(text):
        claimed = bool(re.search(r"(unsubscribe|token=|%20)\s*$", text[: match.start()], re.I))
        token, subscriber_id, list_name = f.check_token(match.group(1), claimed=claimed)
        if subscriber_id is not None:
            return f.verdict(
                Kind.UNSUBSCRIBE, f"unsubscribe token {where} ({list_name})",
                token=token, subscriber_id=subscriber_id, list_name=list_name,
                original_message_ids=tuple(f.replied_to()),
            )
    if f.forged_token:
        return f.verdict(Kind.FORGED, f"unsubscribe token {where} with a bad signature", token=f.forged_token)
    return None


def _reply(f: _Facts) -> Verdict | None:
    """A person's own words, at the top of a short mail: our token, or a request to leave.

    A request is acted on only when it is plainly the sender asking to leave; words of
    leaving in a question, beside a "not", about someone else, about one list only or
    about something else ("remove me from the waitlist") are left for a person to read.
    """
    own = _own_words(_body_text(f.msg))
    first = own[:_FIRST_LINES]
    token_verdict = _token_request(f, "\n".join(first), "in the message")
    if token_verdict is not None:
        return token_verdict
    if not f.sender:
        return None
    found: tuple[str, str, str] | None = None  # (phrase, the words it stands in, why unclear)
    if not own or not _PREFIX.match(f.subject):  # "Re: ..." above words of their own repeats a subject
        subject = _normalise(_PREFIX.sub("", f.subject))
        if subject and len(subject) <= 60:
            found = _request_in(subject, f.sender)
    if found is None and sum(len(line) for line in own) <= _SHORT:
        for line in first:
            found = _request_in(_normalise(line), f.sender)
            if found:
                break
    if found is None:
        return None
    phrase, words, unclear = found
    if unclear:
        return f.verdict(Kind.UNCLEAR, f"speaks of leaving, but {unclear}: {words[:100]!r}",
                         original_message_ids=tuple(f.replied_to()))
    return f.verdict(
        Kind.UNSUBSCRIBE, f"{BY_WORDING}: {phrase!r}",
        original_message_ids=tuple(f.replied_to()),
    )


def _request_in(text: str, sender: str) -> tuple[str, str, str] | None:
    """The leaving phrase in one line, the line, and why it is unclear ("" when it is a plain request)."""
    alone = _ALONE.match(text)
    if alone:
        return alone.group(2), text, ""
    for match in _PHRASES.finditer(text):
        before, after = text[: match.start()], text[match.end():]
        if _NEGATION.search(before):
            continue  # "please don't unsubscribe me": not a request at all
        return match.group(1), text, _unclear(before, match.group(1), after, sender)
    return None


def _unclear(before: str, phrase: str, after: str, sender: str) -> str:
    """Why words of leaving may not be the sender's own plain request, or ''."""
    rest = f"{before} {after}"  # ("please don't unsubscribe me" never gets here: it is no request)
    addresses = [a.group(0) for a in _ANY_ADDRESS.finditer(rest)]
    if _SOMEONE_ELSE.search(after) or any(a != sender.casefold() for a in addresses):
        return "about someone else"
    if _ELSEWHERE.match(after):
        return "about something other than the mailing"
    if _ONE_LIST.search(rest) and _BUT_KEEP.search(rest):
        return "about one list only"
    if "?" in after and not re.match(r"^\s*me\b", after) and not phrase.endswith(" me"):
        return "in a question"
    return ""


def _own_words(text: str) -> list[str]:
    """The non-empty lines the sender wrote, before any quote, forward or signature."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped in ("--", "-- "):
            break
        if _QUOTE_START.match(stripped):
            break
        if not stripped or stripped.startswith(">"):
            continue
        lines.append(stripped)
        if len(lines) > 200:
            break
    return lines


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return re.sub(r"\s+", " ", text.replace("\u2019", "'")).strip(" ,;:-")


# -- 4. non-standard bounces ---------------------------------------------------------------------


def _looks_like_bounce(f: _Facts) -> bool:
    local = f.sender.partition("@")[0]
    return (
        local in _DAEMONS
        or f.msg.get("x-failed-recipients") is not None
        or bool(_BOUNCE_SUBJECT.search(f.subject))
    )


def _nonstandard_bounce(f: _Facts) -> Verdict | None:
    if not _looks_like_bounce(f):
        return None
    try:
        temporary, permanent = all_failures(f.msg)
    except Exception:  # a detector tripping over a malformed message must not stop the run
        temporary, permanent = frozenset(), frozenset()
    text = _explanation(_body_text(f.msg))
    status = _failure_code(text)
    diagnostic = _diagnostic_line(text, status)
    failures: dict[str, Failure] = {}

    def add(address: str, perm: bool) -> None:
        address = _address(address)
        if address and address not in failures:
            if status:  # the code the remote server gave is better evidence than the wording
                perm = status.startswith("5")
            failures[address] = Failure(address=address, permanent=perm, status=status, diagnostic=diagnostic)

    for raw_address in sorted(permanent):
        add(raw_address.decode("ascii", "replace"), True)
    for raw_address in sorted(temporary):
        add(raw_address.decode("ascii", "replace"), False)
    for value in f.msg.get_all("x-failed-recipients", []) or []:
        for part in str(value).split(","):
            add(part, bool(permanent) or not temporary)
    returned = _returned(f)
    verp_id, verp_forged = f.verp([f.msg, *returned])
    if not failures and verp_id is None and not verp_forged:
        # No recipient found: still a bounce of the message it returns, when a mail
        # server says so with a status code and the original (or its Message-ID) is there.
        daemon = f.sender.partition("@")[0] in _DAEMONS
        if not (daemon or status) or not _original_ids(f, returned, replies=False):
            return None
    values = list(failures.values())
    if not values:
        # The bounce names nobody we can read (the VERP address or the returned Message-ID
        # says who it was); keep what the server said, with no address.
        values = [Failure("", bool(status) and status.startswith("5"), status, "", diagnostic)]
    kind = Kind.BOUNCE_HARD if any(x.permanent for x in values) else Kind.BOUNCE_SOFT
    worst = next((x for x in values if x.permanent), values[0])
    return _with_matches(
        f, kind, _bounce_reason(worst, "bounce"), returned,
        failures=tuple(values), addresses=tuple(failures),
    )


_ORIGINAL_STARTS = re.compile(
    r"^(?:(?:Return-Path|Received|DKIM-Signature|Message-ID|MIME-Version|X-[A-Za-z-]+):[ \t]"
    r"|.*\b(?:original message|copy of the message|message follows|returned message|mensaje original)\b)",
    re.I | re.M,
)
_FAIL_STATUS = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


def _explanation(text: str) -> str:
    """The mail server's own words: the text before the copy of the original message."""
    match = _ORIGINAL_STARTS.search(text)
    return text[: match.start()] if match else text


def _failure_code(text: str) -> str:
    match = _FAIL_STATUS.search(text)
    return ".".join(match.groups()) if match else ""


def _diagnostic_line(text: str, status: str) -> str:
    if status:
        for line in text.splitlines():
            if status in line:
                return _one_line(line)[:300]
    for line in text.splitlines():
        if re.search(r"(?<![\d.])[45]\d\d[ :-]", line):
            return _one_line(line)[:300]
    return ""


# -- 5. auto-replies -------------------------------------------------------------------------------


def _auto_reply(f: _Facts) -> Verdict | None:
    msg = f.msg
    auto = (_h(msg, "auto-submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return f.verdict(Kind.AUTO_REPLY, f"Auto-Submitted: {auto.split(';')[0]}")
    for name in _AUTO_HEADERS:
        if msg.get(name) is not None:
            return f.verdict(Kind.AUTO_REPLY, f"{name.title()} header")
    precedence = (_h(msg, "precedence") or "").strip().lower()
    if precedence == "auto_reply":
        return f.verdict(Kind.AUTO_REPLY, "Precedence: auto_reply")
    if _AUTO_SUBJECT.match(_PREFIX.sub("", f.subject)):
        how = f" with Precedence: {precedence}" if precedence else ""
        return f.verdict(Kind.AUTO_REPLY, f"out-of-office subject{how}")
    return None


# -- matching evidence: what came back of our message ----------------------------------------------


def _returned(f: _Facts) -> list[Message]:
    """Header blocks of the returned original: message/rfc822 parts, text/rfc822-headers parts."""
    blocks = []
    for part in _walk(f.msg, into_messages=True):
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                blocks.append(inner[0])
        elif ctype in ("text/rfc822-headers", "text/global-headers"):
            data = _payload_bytes(part) or b""
            blocks.append(BytesHeaderParser(policy=compat32).parsebytes(data.lstrip()))
    return blocks


def _original_ids(f: _Facts, returned: list[Message], replies: bool = True) -> list[str]:
    ids: list[str] = []
    for block in returned:
        ids += _MSGID.findall(_h(block, "message-id") or "")[:1]
    if replies:
        ids += f.replied_to()
    if not returned:
        # A non-standard bounce quotes the original inline, after its own text.
        ids += _INLINE_MSGID.findall(_body_text(f.msg, limit=64_000))
    return [i for i in dict.fromkeys(ids) if i != f.message_id][:10]


def _our_token(f: _Facts, returned: list[Message]) -> tuple[str, int | None, str]:
    """A valid unsubscribe token in the returned headers (List-Unsubscribe), or inline."""
    texts = [str(v) for block in returned for v in block.get_all("list-unsubscribe", []) or []]
    if not returned:
        texts.append(_body_text(f.msg, limit=64_000))
    for text in texts:
        for match in _LINK_TOKEN.finditer(text.replace("\n", " ")):
            token, subscriber_id, list_name = f.check_token(match.group(1), claimed=False)
            if subscriber_id is not None:
                return token, subscriber_id, list_name
    return "", None, ""


def _list_id(f: _Facts, returned: list[Message]) -> str:
    for block in returned:
        match = re.search(r"<([a-z0-9][a-z0-9_-]{0,49})\.", _h(block, "list-id") or "", re.I)
        if match:
            return match.group(1).lower()
    if not returned:
        match = _INLINE_LIST_ID.search(_body_text(f.msg, limit=64_000))
        if match:
            return match.group(1).lower()
    return ""


def _with_matches(f: _Facts, kind: Kind, reason: str, returned: list[Message], **found: Any) -> Verdict:
    """A bounce or complaint verdict with everything that can match it to a delivery."""
    verp_id, verp_forged = f.verp([f.msg, *returned])
    if verp_forged and verp_id is None:
        return f.verdict(Kind.FORGED, f"{kind.value} sent to a bounce address with a bad signature")
    token, subscriber_id, list_name = _our_token(f, returned)
    return f.verdict(
        kind, reason,
        original_message_ids=tuple(_original_ids(f, returned)),
        token=token, subscriber_id=subscriber_id, list_name=list_name or _list_id(f, returned),
        verp_delivery_id=verp_id, **found,
    )


def _bounce_reason(worst: Failure, what: str) -> str:
    parts = [what]
    if worst.action:
        parts.append(f"Action: {worst.action}")
    if worst.status:
        parts.append(f"Status: {worst.status}")
    text = "; ".join(parts)
    if worst.diagnostic:
        text += f" ({worst.diagnostic[:120]})"
    return text


# -- small helpers -----------------------------------------------------------------------------------


def message_hash(raw: bytes) -> str:
    """The identity of a message without a Message-ID: sha256 of the headers that stay put
    (From, To, Cc, Date, Subject, In-Reply-To) and of the body, so the same message read
    from an mbox, a maildir or IMAP (which add headers of their own) gets the same key."""
    head, sep, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    headers = BytesHeaderParser(policy=compat32).parsebytes(head + b"\n")
    digest = hashlib.sha256()
    names = ("from", "to", "cc", "date", "subject", "in-reply-to")
    for name in names:
        digest.update(name.encode() + b":" + " ".join(str(headers.get(name, "")).split()).encode("utf-8", "replace") + b"\n")
    if not sep or not any(headers.get(name) for name in names):
        digest.update(head)  # no headers to speak of (a fragment, garbage): all of it is its identity
    digest.update(body.rstrip(b"\n"))
    return "sha256:" + digest.hexdigest()


def _walk(msg: Message, into_messages: bool = False) -> Iterator[Message]:
    """Every part, depth first. Without into_messages an attached message is yielded but
    not entered: the returned original's own parts are not the bounce's."""
    yield msg
    ctype = msg.get_content_type()
    if ctype in ("message/delivery-status", "message/global-delivery-status"):
        return  # its payload is a list of field blocks, not parts
    if msg.get_content_maintype() == "message" and (
        not into_messages or ctype not in ("message/rfc822", "message/global")
    ):
        return
    if not msg.is_multipart():
        return
    for part in msg.get_payload():
        if isinstance(part, Message):
            yield from _walk(part, into_messages)


def _has_part(msg: Message, ctype: str) -> bool:
    return any(p.get_content_type() == ctype for p in _walk(msg))


def _report_fields(part: Message) -> Message:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    data = _payload_bytes(part) or b""
    return BytesHeaderParser(policy=compat32).parsebytes(data.lstrip())


def _body_text(msg: Message, limit: int = 16_000) -> str:
    """The first text/plain part of the message itself (else its HTML, as text), decoded."""
    html = None
    for part in _walk(msg):
        ctype = part.get_content_type()
        if _h(part, "content-disposition").lower().startswith("attachment"):
            continue
        if ctype == "text/plain":
            return _decode(part, limit)
        if ctype == "text/html" and html is None:
            html = part
    if html is not None:
        text = _decode(html, limit)
        text = re.sub(r"(?is)<(style|script|head)\b.*?</\1>", " ", text)
        text = re.sub(r"(?is)<blockquote\b.*", "", text)  # what they quoted
        text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>|</h\d>", "\n", text)
        text = re.sub(r"<[^>]+>", "", text)
        return re.sub(r"&nbsp;", " ", text).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    return ""


def _decode(part: Message, limit: int) -> str:
    data = _payload_bytes(part)
    if data is None:
        payload = part.get_payload()
        return payload[:limit] if isinstance(payload, str) else ""
    data = data[:limit]
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _payload_bytes(part: Message) -> bytes | None:
    """A part's body with its transfer encoding undone; None for a multipart (typeshed also allows a Message)."""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else None


def _param(msg: Message, name: str) -> str:
    """A Content-Type parameter as text ("" when absent), an RFC 2231 value decoded."""
    value = msg.get_param(name)
    if isinstance(value, tuple):
        return email.utils.collapse_rfc2231_value(value)
    return value or ""


def _h(msg: Message, name: str) -> str:
    """A header's value as text ("" when absent), whatever the parser made of it."""
    value = msg.get(name)
    if value is None:
        return ""
    return value if isinstance(value, str) else _decoded(value)


def _decoded(value: str | email.header.Header) -> str:
    """A header value with its encoded words (and raw 8-bit bytes, read as UTF-8) decoded."""
    try:
        pieces = email.header.decode_header(value)
    except (ValueError, LookupError, UnicodeError, TypeError):
        return _one_line(str(value))
    out = []
    for data, charset in pieces:
        if isinstance(data, str):
            out.append(data)
            continue
        if not charset or charset == "unknown-8bit":
            charset = "utf-8"
        try:
            out.append(data.decode(charset, "replace"))
        except LookupError:
            out.append(data.decode("utf-8", "replace"))
    return _one_line("".join(out))


def _one_line(value: str) -> str:
    return " ".join(str(value).split())


def _first_msgid(value: str) -> str:
    match = _MSGID.search(str(value))
    return match.group(0) if match else ""


def _address(value: str) -> str:
    """The bare address, lower-case, or "" when value holds none that looks real."""
    value = str(value).strip()
    if ";" in value and "@" in value.split(";", 1)[1]:  # "rfc822; ana@example.org"
        value = value.split(";", 1)[1]
    _, addr = email.utils.parseaddr(value)
    addr = addr.strip().strip("<>").strip().lower()
    return addr if _ADDRESS.match(addr) else ""


def _recipient(value: str) -> str:
    """An address from an Original-/Final-Recipient field ("rfc822; ana@example.org")."""
    value = _one_line(value)
    kind, sep, rest = value.partition(";")
    if not sep:
        return _address(value)
    if kind.strip().lower() not in ("rfc822", "utf-8"):
        return _address(rest) if "@" in rest else ""
    return _address(rest)


def _status_code(text: str) -> str:
    match = _STATUS.search(str(text))
    return ".".join(match.groups()) if match else ""
