"""Content + templates + subscriber -> a finished MIME message, ready for SMTP.

Everything that is the same for every subscriber is done once, when a Renderer is made:
the Markdown body becomes HTML and text templates, the CSS of the HTML templates is
inlined into `style` attributes (css-inline), and the constant headers are folded and
encoded by the standard `email` package. Per subscriber only Jinja runs (the personal
parts) and the message is joined from ready-made bytes; that is what makes 10,000
messages a matter of seconds rather than minutes.

Subscriber data is data: it reaches templates as values (escaped in HTML, never
compiled as a template) and headers only through the encoders below, which cannot
produce a line break.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import importlib.resources
import re
import secrets as _secrets
import textwrap
from dataclasses import dataclass
from datetime import UTC, date
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import css_inline
import jinja2
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode
from markupsafe import Markup

from .clock import Clock
from .config import Config
from .content import Content, format_date
from .errors import ConfigError, TemplateError
from .models import Subscriber
from .schedule import workspace_timezone
from .tokens import make_token
from .validate import InvalidValue, ascii_domain

TEMPLATE_FILES = (
    "base.html.j2", "base.txt.j2", "specials.html.j2", "specials.txt.j2", "news.html.j2", "news.txt.j2",
)
SUBSCRIBER_FIELDS = ("first_name", "last_name", "email")
CRLF = b"\r\n"

# C0, DEL, C1 controls and the Unicode line separators: never allowed into a header.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_SAFE_ADDR = re.compile(r"^[^\x00-\x20\x7f-\x9f]+@[\x21-\x7e]+$")
_ADDR_SPECIALS = re.compile(r'[<>()\[\]\\,;:"\s]')
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]*$")
_MESSAGE_ID = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>$")
_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style>", re.DOTALL | re.IGNORECASE)


def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


_MD = _markdown()


# -- templates on disk ------------------------------------------------------------------


def packaged_templates_dir() -> Path:
    """Where the default templates are: mailer/templates in a wheel, else the repository's templates/."""
    try:
        packaged = Path(str(importlib.resources.files("mailer") / "templates"))
        if packaged.is_dir():
            return packaged
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - unusual importers
        pass
    # An editable install: src/mailer/render.py -> <repo>/templates
    return Path(__file__).resolve().parent.parent.parent / "templates"


def _workspace_templates_dir(workspace: Any) -> Path:
    directory = getattr(workspace, "templates_dir", None)
    return Path(directory) if directory is not None else Path(workspace) / "templates"


def _template_files(directory: Path) -> dict[str, Path]:
    if not directory.is_dir():
        return {}
    return {p.name: p for p in sorted(directory.iterdir()) if p.name.endswith(".j2") and p.is_file()}


def templates_in_use(workspace: Any) -> list[tuple[str, str, Path]]:
    """Every template and where it comes from: (name, "packaged" | "workspace", path), by name."""
    files = {name: ("packaged", path) for name, path in _template_files(packaged_templates_dir()).items()}
    files.update({name: ("workspace", path) for name, path in _template_files(_workspace_templates_dir(workspace)).items()})
    return [(name, origin, path) for name, (origin, path) in sorted(files.items())]


def resolve_templates(workspace: Any) -> dict[str, str]:
    """The template sources in use, by file name; a file in the workspace's templates/ wins."""
    sources = {}
    for name, _origin, path in templates_in_use(workspace):
        try:
            sources[name] = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise TemplateError(f"{path}:1: the template is not UTF-8 text; save it as UTF-8.") from None
        except OSError as exc:
            raise TemplateError(f"Cannot read the template {path}: {exc.strerror}.") from None
    missing = [n for n in TEMPLATE_FILES if n not in sources]
    if missing:
        raise TemplateError(
            f"The template {missing[0]} is missing (looked in {_workspace_templates_dir(workspace)} "
            f"and {packaged_templates_dir()}).",
            hint="Reinstall mailer, or copy the packaged template into the workspace's templates/.",
        )
    return sources


# -- Jinja --------------------------------------------------------------------------------


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    # An empty first name is as good as none: {{ first_name | default("there") }} should
    # greet "there", not "", for the many subscribers who never gave a name.
    if isinstance(value, jinja2.Undefined) or value is None or value == "" or (boolean and not value):
        return default_value
    return value


class _Loader(jinja2.BaseLoader):
    """Templates from a mapping; the name doubles as the file name, so errors can name it."""

    def __init__(self, sources: Mapping[str, str]):
        self.sources = sources

    def get_source(self, environment, template):
        if template not in self.sources:
            raise jinja2.TemplateNotFound(template)
        return self.sources[template], template, lambda: True

    def list_templates(self):
        return sorted(self.sources)


def _environment(sources: Mapping[str, str]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=_Loader(sources),
        undefined=jinja2.StrictUndefined,
        autoescape=lambda name: bool(name) and (name.endswith(".html.j2") or name.endswith(".html")),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
        cache_size=-1,
    )
    env.filters["default"] = env.filters["d"] = _default
    return env


def _sentence(message: str | None) -> str:
    return (message or "a template error").strip().rstrip(".")


def _across_sections(exc: jinja2.TemplateSyntaxError) -> bool:
    return any(s in (exc.message or "") for s in ("Unexpected end of template", "Encountered unknown tag"))


def _error_line(exc: BaseException, names: Iterable[str]) -> tuple[str, int] | None:
    """The template name and line Jinja was at when exc was raised (the innermost one)."""
    names = set(names)
    found = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename in names:
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


class _Tags:
    """Jinja tags swapped for inert markers while Markdown or the CSS inliner works on the text.

    Both would otherwise mangle them: Markdown escapes quotes and reads `*` and `_`,
    an HTML parser moves text out of tables. Markers are plain letters and digits
    (`{% ... %}` in HTML becomes a comment, which may stand anywhere in a table).
    """

    def __init__(self, source: str, html_statements: bool = False):
        self.nonce = "JJ" + _secrets.token_hex(4)
        self.tags: list[str] = []
        self.html_statements = html_statements
        self.protected = _JINJA_TAG.sub(self._swap, source)
        self._marker = re.compile(r"(?:<!--)?" + self.nonce + r"(\d+)JJ(?:-->)?")

    def _swap(self, match: re.Match) -> str:
        self.tags.append(match.group(0))
        marker = f"{self.nonce}{len(self.tags) - 1}JJ"
        if self.html_statements and not match.group(0).startswith("{{"):
            return f"<!--{marker}-->"
        return marker

    def is_statement(self, index: int) -> bool:
        return not self.tags[index].startswith("{{")

    def restore(self, text: str, where: str) -> str:
        seen: list[int] = []

        def put_back(match: re.Match) -> str:
            seen.append(int(match.group(1)))
            return self.tags[int(match.group(1))]

        restored = self._marker.sub(put_back, text)
        if sorted(seen) != list(range(len(self.tags))) and self.tags:
            # Only possible when a tag stood somewhere HTML cannot keep it (inside a tag's
            # angle brackets, say); better to stop than to send a mangled message.
            raise TemplateError(
                f"{where}: a template tag stands where the HTML cannot keep it "
                "(put {{ }} and {% %} in text or inside attribute values only)."
            )
        return restored

    def unwrap_statement_paragraphs(self, html: str) -> str:
        """`<p>{% if x %}</p>` from a tag on a line of its own: keep the tag, drop the paragraph."""

        def unwrap(match: re.Match) -> str:
            indexes = [int(i) for i in re.findall(self.nonce + r"(\d+)JJ", match.group(1))]
            if indexes and all(self.is_statement(i) for i in indexes):
                return match.group(1).strip() + "\n"
            return match.group(0)

        return re.sub(r"<p>((?:\s*" + self.nonce + r"\d+JJ)+)\s*</p>\n?", unwrap, html)


# -- CSS ---------------------------------------------------------------------------------


def _stylesheet(sources: Mapping[str, str]) -> str:
    """The CSS of every <style> block of the HTML templates, base first."""
    names = sorted((n for n in sources if n.endswith(".html.j2")), key=lambda n: (not n.startswith("base"), n))
    return "\n".join(m.group(1) for n in names for m in _STYLE_BLOCK.finditer(_JINJA_TAG.sub("", sources[n])))


@lru_cache(maxsize=64)
def _inline_css(name: str, source: str, css: str) -> str:
    """A template with its CSS moved into style attributes; @media rules stay in <style>."""
    tags = _Tags(source, html_statements=True)
    is_document = re.search(r"<html[\s>]|<!doctype", tags.protected, re.IGNORECASE) is not None
    try:
        if is_document:
            inlined = css_inline.inline(tags.protected, keep_at_rules=True, load_remote_stylesheets=False)
        else:
            inlined = css_inline.inline_fragment(tags.protected, css, load_remote_stylesheets=False)
    except (css_inline.InlineError, ValueError) as exc:
        raise TemplateError(f"{name}: its CSS cannot be inlined ({exc}).") from None
    return tags.restore(inlined, name)


# -- Markdown ----------------------------------------------------------------------------


def markdown_to_text(source: str) -> str:
    """Markdown as a person would write it in a plain-text email (not tag-stripped HTML)."""
    return _text_block(SyntaxTreeNode(_MD.parse(source))).strip("\n")


def _text_block(node: SyntaxTreeNode) -> str:
    t = node.type
    if t == "root" or t == "list_item":
        sep = "\n" if t == "list_item" and _tight(node) else "\n\n"
        return sep.join(x for x in (_text_block(c) for c in node.children) if x)
    if t == "paragraph" or t == "inline":
        text = _text_inline(node.children[0] if t == "paragraph" else node)
        # Lines the author broke by hand (a line break, <br>) stay; the rest is refilled to
        # 72 columns, as a person writes a plain-text email. Links and words are never cut.
        return "\n".join(
            textwrap.fill(line, 72, break_long_words=False, break_on_hyphens=False) if len(line) > 72 else line
            for line in text.split("\n")
        )
    if t == "heading":
        text = _text_inline(node.children[0])
        if node.tag in ("h1", "h2"):
            underline = ("=" if node.tag == "h1" else "-") * min(max(len(text), 3), 60)
            return f"{text}\n{underline}"
        return text
    if t in ("bullet_list", "ordered_list"):
        start = int(node.attrs.get("start", 1) or 1)
        items = []
        for i, item in enumerate(node.children):
            marker = "- " if t == "bullet_list" else f"{start + i}. "
            body = _text_block(item).split("\n")
            pad = " " * len(marker)
            items.append("\n".join([marker + body[0]] + [pad + line if line else "" for line in body[1:]]))
        tight = all(_tight(item) for item in node.children)
        return ("\n" if tight else "\n\n").join(items)
    if t == "blockquote":
        inner = "\n\n".join(x for x in (_text_block(c) for c in node.children) if x)
        return "\n".join("> " + line if line else ">" for line in inner.split("\n"))
    if t in ("fence", "code_block"):
        return "\n".join("    " + line for line in node.content.rstrip("\n").split("\n"))
    if t == "hr":
        return "* * *"
    if t == "table":
        rows = []
        for section in node.children:
            for row in section.children:
                rows.append(" | ".join(_text_inline(cell.children[0]) if cell.children else "" for cell in row.children))
        return "\n".join(rows)
    if t == "html_block":
        return ""
    return "\n\n".join(x for x in (_text_block(c) for c in node.children) if x)


def _tight(item: SyntaxTreeNode) -> bool:
    return all(c.type != "paragraph" or c.hidden for c in item.children)


def _text_inline(node: SyntaxTreeNode) -> str:
    parts = []
    skip_break = False  # "<br>" at a line's end is one line break, not two
    for c in node.children:
        t = c.type
        if skip_break and t == "softbreak":
            skip_break = False
            continue
        skip_break = False
        if t == "text" or t == "code_inline":
            parts.append(c.content)
        elif t == "softbreak":  # a line end in the source is a space in the paragraph
            parts.append(" ")
        elif t == "hardbreak":
            parts.append("\n")
        elif t == "strong":
            parts.append("*" + _text_inline(c) + "*")
        elif t == "link":
            label = _text_inline(c)
            href = c.attrs.get("href", "")
            shown = href.split(":", 1)[1] if href.startswith(("mailto:", "tel:")) else href
            parts.append(label if shown in (label, "") else f"{label} ({shown})" if not href.startswith("tel:") else label)
        elif t == "image":
            continue  # a picture says nothing in a text email; its words are in the HTML alt
        elif t == "html_inline":
            if re.match(r"<br\s*/?>", c.content, re.IGNORECASE):
                parts.append("\n")
                skip_break = True
                continue
        elif c.children:
            parts.append(_text_inline(c))
        else:
            parts.append(c.content)
    return "".join(parts)


# -- views handed to templates -----------------------------------------------------------


@dataclass(frozen=True)
class PracticeView:
    """`practice` in templates: [practice] of mailer.toml, with a few ready-made forms."""

    name: str
    address: str
    street: str
    city: str
    phone: str
    phone_uri: str
    website: str
    website_label: str
    booking_url: str
    logo_url: str


def practice_view(config: Config) -> PracticeView:
    """[practice] as templates see it: street and city apart, a tel: link, a short website label."""
    p = config.practice
    street, _, city = p.address.partition(",")
    digits = re.sub(r"\D", "", p.phone)
    if p.phone.strip().startswith("+"):
        phone_uri = "tel:+" + digits
    elif len(digits) == 10:  # a US number written (201) 297-7703
        phone_uri = "tel:+1" + digits
    else:
        phone_uri = "tel:" + digits if digits else ""
    return PracticeView(
        name=p.name,
        address=p.address,
        street=street.strip(),
        city=city.strip(),
        phone=p.phone,
        phone_uri=phone_uri,
        website=p.website,
        website_label=re.sub(r"^https?://(www\.)?", "", p.website).rstrip("/"),
        booking_url=p.booking_url or p.website,
        logo_url=p.logo_url,
    )


@dataclass(frozen=True)
class OfferView:
    """One offer as templates see it."""

    title: str
    details: str
    details_html: Markup
    details_text: str  # wrapped at 70 columns, for the text part
    price: str
    was_price: str
    code: str
    valid_until: date | None
    valid_until_text: str


def _fast_render(template: jinja2.Template, context: dict) -> str:
    """Template.render without copying the context for every small body template.

    Errors surface untranslated; Renderer.render then re-renders the sources as written
    to name the file and line.
    """
    return template.environment.concat(template.root_render_func(template.new_context(context, shared=True)))  # type: ignore[attr-defined]


class _Lazy:
    """A piece of the body rendered for this subscriber only when a template prints it."""

    __slots__ = ("template", "context", "_value")

    def __init__(self, template: jinja2.Template, context: dict):
        self.template = template
        self.context = context
        self._value: str | None = None

    def _render(self) -> str:
        if self._value is None:
            self._value = _fast_render(self.template, self.context)
        return self._value

    def __html__(self) -> str:
        return self._render()

    def __str__(self) -> str:
        return self._render()

    def __bool__(self) -> bool:
        return bool(self._render().strip())


class SectionView:
    """A `##` section of a news letter: title and body, as HTML and as text."""

    __slots__ = ("title_html", "title", "html", "text")

    def __init__(self, parts: "_SectionTemplates", context: dict):
        self.title_html = _Lazy(parts.title_html, context)
        self.title = _Lazy(parts.title_text, context)
        self.html = _Lazy(parts.html, context)
        self.text = _Lazy(parts.text, context)


@dataclass(frozen=True)
class _Piece:
    """A part of the body: the intro before the first `##`, or one section."""

    title: str  # Markdown inline source of the heading ("" for the intro)
    source: str  # Markdown block source, with its Jinja tags
    line: int  # line in the content file where source starts
    title_line: int


@dataclass(frozen=True)
class _SectionTemplates:
    title_html: jinja2.Template
    title_text: jinja2.Template
    html: jinja2.Template
    text: jinja2.Template


def split_sections(content: Content) -> list[_Piece]:
    """The body cut at its top-level `##` headings: [intro, section, section, ...]."""
    tags = _Tags(content.body)
    tokens = _MD.parse(tags.protected)
    lines = tags.protected.split("\n")
    cuts = [(tok.map[0], tok.map[1], tokens[i + 1].content)
            for i, tok in enumerate(tokens)
            if tok.type == "heading_open" and tok.tag == "h2" and tok.level == 0 and tok.map]

    def restore(text: str) -> str:
        # Piece by piece, so not every tag is in each part: put back what is there.
        return tags._marker.sub(lambda m: tags.tags[int(m.group(1))], text)

    def line_of(index: int) -> int:
        return content.body_line + restore("\n".join(lines[:index])).count("\n") + (1 if index else 0)

    pieces = []
    first = cuts[0][0] if cuts else len(lines)
    pieces.append(_Piece("", restore("\n".join(lines[:first])), line_of(0), content.body_line))
    for n, (start, end, title) in enumerate(cuts):
        stop = cuts[n + 1][0] if n + 1 < len(cuts) else len(lines)
        pieces.append(_Piece(restore(title), restore("\n".join(lines[end:stop])), line_of(end), line_of(start)))
    return pieces


# -- the message -------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedMessage:
    """One subscriber's finished message."""

    message_id: str  # "<...@sender-domain>"
    to: str  # the subscriber's address as stored (Subscriber.email)
    data: bytes  # the whole message, CRLF line endings, ready for smtplib sendmail()
    text: str
    html: str


def sample_subscriber(list_name: str = "news", *, named: bool = True) -> Subscriber:
    """The made-up subscriber of previews and checks (id 0 is never a stored one)."""
    return Subscriber(
        email="jane.doe@example.com",
        email_key="jane.doe@example.com",
        first_name="Jane" if named else "",
        last_name="Doe" if named else "",
        lists=(list_name,),
        id=0,
    )


def _tidy_text(text: str) -> str:
    """No trailing spaces, at most one blank line in a row, one newline at the end."""
    text = "\n".join([line.rstrip() for line in text.split("\n")])
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip("\n") + "\n"


class _QuotedPrintable:
    """Quoted-printable, line by line, remembering lines already encoded.

    QP keeps every line under 76 octets and a raw .eml readable. It works on each line
    alone, so the lines every subscriber shares (nearly all of the HTML) are encoded
    once per campaign instead of once per message: the biggest saving after Jinja.
    """

    def __init__(self, limit: int = 20_000):
        self.lines: dict[str, bytes] = {}
        self.limit = limit

    def __call__(self, text: str) -> bytes:
        lines = self.lines
        out = []
        # CRLF only after encoding, so a stray CR in the text cannot survive as a bare CR.
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        for line in text.split("\n"):
            encoded = lines.get(line)
            if encoded is None:
                encoded = binascii.b2a_qp(line.encode("utf-8", "replace"), istext=True).replace(b"\n", CRLF)
                if len(lines) < self.limit:
                    lines[line] = encoded
            out.append(encoded)
        return CRLF.join(out)


def _clean_name(name: str) -> str:
    # A line break or control character in a name is just a space to the reader.
    return " ".join(_CONTROL.sub(" ", name).split())


def format_address(name: str, addr: str) -> str:
    """`"Jane Doe" <jane@example.com>` for a header, safe whatever the name holds.

    The name is quoted when it is plain printable ASCII, else (and whenever it holds
    `=?`, which a reader might decode) sent as one RFC 2047 encoded word. It can never
    add a line. A name too long for one header line is cut short there: readers join
    several encoded words differently, and the whole name is in the message anyway.
    """
    name = _clean_name(name)
    if not name:
        return addr
    if _PRINTABLE_ASCII.match(name) and "=?" not in name:
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(quoted) + len(addr) + 8 <= 78:
            return f"{quoted} <{addr}>"
        if len(quoted) <= 72:
            return f"{quoted}\r\n <{addr}>"
    data = name.encode("utf-8", "replace")
    if len(data) > _WORD_BYTES:
        data = data[:_WORD_BYTES].decode("utf-8", "ignore").rstrip().encode("utf-8")
    return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?=\r\n <{addr}>"


_WORD_BYTES = 45  # "To: " + "=?utf-8?b?" + 60 base64 characters + "?=" = 76 columns


def _header_addr(addr: str) -> str:
    """The address as it may stand in a header: the domain as ASCII (IDNA A-label), no spaces or specials.

    A non-ASCII local part stays UTF-8 (RFC 6532): such a message only goes to a server
    that offers SMTPUTF8, which the send engine checks before handing it over.
    """
    local, _, domain = addr.rpartition("@")
    try:
        domain = ascii_domain(domain)
    except InvalidValue:
        pass
    out = f"{local}@{domain}"
    if not _HEADER_SAFE_ADDR.match(out) or _ADDR_SPECIALS.search(out.replace('"', "")) or not local:
        raise TemplateError(f"The address {addr!r} cannot be put in a To header.")
    return out


def _folded(headers: list[tuple[str, Any]]) -> bytes:
    """Headers folded and encoded by the email package (policy.SMTP: CRLF, RFC 2047)."""
    msg = EmailMessage(policy=policy.SMTP)
    for name, value in headers:
        msg[name] = value
    return b"".join(policy.SMTP.fold_binary(name, value) for name, value in msg.items())


def _zone(config: Config):
    # Without a configured zone the Date header is in UTC: the same message on every machine.
    return workspace_timezone(config.sending.timezone) if config.sending.timezone else UTC


def _check_uri(value: str, what: str) -> str:
    if _CONTROL.search(value) or re.search(r"[\s<>\"]", value):
        raise ConfigError(f"{what} {value!r} contains spaces or characters a link cannot hold.")
    return value


class Renderer:
    """Renders one campaign for any number of subscribers."""

    def __init__(
        self,
        content: Content,
        templates: Mapping[str, str],
        config: Config,
        secret: bytes,
        *,
        list_name: str,
        campaign_key: str,
        clock: Clock,
        message_id: Callable[[Subscriber], str] | None = None,
    ):
        """Compile and build everything that is the same for every subscriber, once.

        Raises TemplateError (naming file:line) for a template or content problem, found
        by rendering for a sample subscriber with and without a name; ConfigError when
        mailer.toml lacks what a message needs.
        """
        self.content = content
        self.config = config
        self.secret = secret
        self.list_name = list_name
        self.campaign_key = campaign_key
        self.clock = clock
        self._message_id = message_id
        self._zone = _zone(config)
        self._setup_addresses()
        self._setup_templates(templates)
        self._setup_headers()

    # -- setup ---------------------------------------------------------------------

    def _setup_addresses(self) -> None:
        c = self.config
        from_email = c.sender.from_email
        if not from_email or "@" not in from_email:
            raise ConfigError(
                "[sender] from_email in mailer.toml is not set, so the message has no From address.",
                hint='Set it, e.g. from_email = "news@your-practice.com".',
            )
        self.from_email = from_email
        self.domain = from_email.rpartition("@")[2].strip().lower()
        try:
            self.domain = self.domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
        unsub = _check_uri(c.unsubscribe.mailto or from_email, "[unsubscribe] mailto")
        self.unsubscribe_mailto = unsub[7:] if unsub.lower().startswith("mailto:") else unsub
        self.unsubscribe_web = _check_uri(c.unsubscribe.url, "[unsubscribe] url")
        if self.unsubscribe_web and not self.unsubscribe_web.startswith("https://"):
            raise ConfigError(f"[unsubscribe] url must start with https://, not {self.unsubscribe_web!r}.")
        self.from_name = _clean_name(self.content.from_name or c.sender.from_name or c.practice.name)
        self.reply_to = self.content.reply_to or c.sender.reply_to
        key = hashlib.sha256(self.campaign_key.encode("utf-8")).hexdigest()
        self._id_key = key
        # '=_' can never occur in quoted-printable text, so the boundary never collides.
        self.boundary = f"=_mailer_{key[:24]}"

    def _setup_templates(self, templates: Mapping[str, str]) -> None:
        content = self.content
        html_name, text_name = f"{content.template}.html.j2", f"{content.template}.txt.j2"
        for name in (html_name, text_name):
            if name not in templates:
                raise TemplateError(
                    f"{content.name}: there is no template {name} (template: {content.template}).",
                    hint="See `mailer templates list`.",
                )
        # 1. Everything as written, to find mistakes with the line numbers the author sees.
        raw_env = _environment(templates)
        for name, source in templates.items():
            try:
                raw_env.parse(source, name, name)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{name}:{exc.lineno}: {_sentence(exc.message)}.") from None
        pieces = split_sections(content)
        self._pieces = pieces
        raw_pieces: dict[str, tuple[str, int]] = {}
        body_sources: dict[str, str] = {}
        for i, piece in enumerate(pieces):
            for kind, source, line in (("title", piece.title, piece.title_line), ("body", piece.source, piece.line)):
                name = f"#raw/{i}/{kind}"
                body_sources[name] = source
                raw_pieces[name] = (source, line)
        body_env = _environment(body_sources)
        for name, (source, line) in raw_pieces.items():
            try:
                body_env.parse(source, name, name)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(
                    f"{content.name}:{line + (exc.lineno or 1) - 1}: {_sentence(exc.message)}"
                    + (" (a {% %} block cannot run across a ## heading)." if _across_sections(exc) else ".")
                ) from None
        self._raw_pieces = raw_pieces
        self._body_env = body_env

        # 2. The body as HTML and text templates; CSS inlined into the HTML ones.
        css = _stylesheet(templates)
        prepared: dict[str, str] = {}
        for name, source in templates.items():
            prepared[name] = _inline_css(name, source, css) if name.endswith(".html.j2") else source
        section_names = []
        for i, piece in enumerate(pieces):
            base = f"#body/{i}"
            prepared[f"{base}/title.html"] = self._markdown_html(piece.title, css, inline=True)
            prepared[f"{base}/title.txt"] = self._markdown_text(piece.title)
            prepared[f"{base}/body.html"] = self._markdown_html(piece.source, css)
            prepared[f"{base}/body.txt"] = self._markdown_text(piece.source)
            section_names.append(base)
        prepared["#body/all.html"] = self._markdown_html(content.body, css)
        prepared["#body/all.txt"] = self._markdown_text(content.body)
        self._env = env = _environment(prepared)
        try:
            self._html = env.get_template(html_name)
            self._text = env.get_template(text_name)
            self._sections = [
                _SectionTemplates(
                    env.get_template(f"{b}/title.html"), env.get_template(f"{b}/title.txt"),
                    env.get_template(f"{b}/body.html"), env.get_template(f"{b}/body.txt"),
                )
                for b in section_names
            ]
            self._body_html = env.get_template("#body/all.html")
            self._body_text = env.get_template("#body/all.txt")
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{exc.name or content.name}:{exc.lineno}: {_sentence(exc.message)}.") from None
        self._raw_html = raw_env.get_template(html_name)
        self._raw_text = raw_env.get_template(text_name)
        # Jinja's globals (range, dict, ...) ride along: the body pieces render with this dict as is.
        self._campaign = {**env.globals, **self._campaign_context(css)}

        # 3. Render for sample subscribers now, so an undefined name stops us before any message.
        for named in (True, False):
            self._probe(sample_subscriber(self.list_name, named=named))

    def _markdown_html(self, source: str, css: str, inline: bool = False) -> str:
        tags = _Tags(source)
        if inline:
            html = _MD.renderInline(tags.protected)
        else:
            html = tags.unwrap_statement_paragraphs(_MD.render(tags.protected))
            if html.strip():
                try:
                    html = css_inline.inline_fragment(f'<div class="md">\n{html}</div>', css, load_remote_stylesheets=False)
                except (css_inline.InlineError, ValueError) as exc:
                    raise TemplateError(f"{self.content.name}: the CSS cannot be applied to the body ({exc}).") from None
        return tags.restore(html, self.content.name)

    def _markdown_text(self, source: str) -> str:
        tags = _Tags(source)
        return tags.restore(markdown_to_text(tags.protected), self.content.name)

    def _campaign_context(self, css: str) -> dict:
        content = self.content
        offers = []
        for offer in content.offers:
            details_html = _MD.renderInline(offer.details.strip()).replace("\n", "<br>\n")
            if css:
                details_html = css_inline.inline_fragment(
                    f'<span class="offer-details-inner">{details_html}</span>', css, load_remote_stylesheets=False
                )
            offers.append(
                OfferView(
                    title=offer.title,
                    details=offer.details.strip(),
                    details_html=Markup(details_html),
                    details_text="\n".join(textwrap.wrap(" ".join(offer.details.split()), 70)),
                    price=offer.price,
                    was_price=offer.was_price,
                    code=offer.code,
                    valid_until=offer.valid_until,
                    valid_until_text=format_date(offer.valid_until) if offer.valid_until else "",
                )
            )
        practice = practice_view(self.config)
        return {
            "subject": content.subject,
            "preheader": content.preheader,
            "template": content.template,
            "list_name": self.list_name,
            "practice": practice,
            "booking_url": practice.booking_url,
            "offers": offers,
            "sender_name": self.from_name,
        }

    def _setup_headers(self) -> None:
        c = self.content
        try:
            before_to = [("From", Address(display_name=self.from_name, addr_spec=self.from_email))]
            after_to = []
            if self.reply_to:
                after_to.append(("Reply-To", Address(addr_spec=self.reply_to)))
            after_to.append(("Subject", c.subject))
            self._head_a = _folded(before_to)
            self._head_b = _folded(after_to)
            list_label = f"{self.config.practice.name or self.from_name} {self.list_name}".strip()
            self._list_id = _folded([("List-Id", f"{list_label} <{self.list_name}.{self.domain}>")])
        except (ValueError, TypeError, IndexError) as exc:
            raise ConfigError(f"The sender address {self.from_email!r} cannot be used in a From header ({exc}).") from None
        tail = b""
        if self.unsubscribe_web:
            tail += b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" + CRLF
        tail += b"MIME-Version: 1.0" + CRLF
        tail += f'Content-Type: multipart/alternative; boundary="{self.boundary}"'.encode("ascii") + CRLF + CRLF
        delimiter = b"--" + self.boundary.encode("ascii")
        part = b"Content-Transfer-Encoding: quoted-printable" + CRLF + CRLF
        self._tail = tail
        self._text_head = delimiter + CRLF + b'Content-Type: text/plain; charset="utf-8"' + CRLF + part
        self._html_head = CRLF + delimiter + CRLF + b'Content-Type: text/html; charset="utf-8"' + CRLF + part
        self._end = CRLF + delimiter + b"--" + CRLF
        self._qp = _QuotedPrintable()

    # -- per subscriber ------------------------------------------------------------

    def unsubscribe_links(self, token: str) -> tuple[str, str]:
        """(mailto URI, https URI or "") carrying this token."""
        mailto = f"mailto:{self.unsubscribe_mailto}?subject=unsubscribe%20{token}"
        web = ""
        if self.unsubscribe_web:
            web = self.unsubscribe_web + ("&" if "?" in self.unsubscribe_web else "?") + "token=" + token
        return mailto, web

    def _context(self, sub: Subscriber, token: str) -> dict:
        mailto, web = self.unsubscribe_links(token)
        ctx = dict(self._campaign)
        ctx.update(
            first_name=sub.first_name,
            last_name=sub.last_name,
            full_name=sub.full_name,
            email=sub.email,
            unsubscribe_url=web or mailto,
            unsubscribe_mailto=mailto,
            unsubscribe_web=web,
        )
        sections = [SectionView(s, ctx) for s in self._sections]
        ctx.update(
            intro_html=sections[0].html,
            intro_text=sections[0].text,
            sections=sections[1:],
            body_html=_Lazy(self._body_html, ctx),
            body_text=_Lazy(self._body_text, ctx),
        )
        return ctx

    def _probe(self, sub: Subscriber) -> None:
        """Render the sources as written for sub; a TemplateError names the file and line."""
        ctx = self._context(sub, make_token(self.secret, 0, self.list_name, date(2000, 1, 1)))
        for name, (source, line) in self._raw_pieces.items():
            try:
                self._body_env.get_template(name).render(ctx)
            except jinja2.TemplateError as exc:
                found = _error_line(exc, [name])
                at = line + found[1] - 1 if found else line
                raise self._template_error(f"{self.content.name}:{at}", exc) from None
        for template in (self._raw_html, self._raw_text):
            try:
                template.render(ctx)
            except jinja2.TemplateError as exc:
                found = _error_line(exc, self._raw_html.environment.loader.list_templates())
                where = f"{found[0]}:{found[1]}" if found else template.name
                raise self._template_error(where, exc) from None

    def _template_error(self, where: str, exc: jinja2.TemplateError) -> TemplateError:
        message = _sentence(str(exc.message if getattr(exc, "message", None) else exc))
        if isinstance(exc, jinja2.TemplateNotFound):
            message = f"there is no template {exc.name!r} to include here (content files cannot include templates)"
        hint = None
        if isinstance(exc, jinja2.UndefinedError):
            hint = (
                "Subscriber fields are first_name, last_name and email; practice details are "
                "practice.name, practice.address, practice.phone, practice.booking_url. "
                'For a field that may be empty write {{ first_name | default("there") }}.'
            )
        return TemplateError(f"{where}: {message}.", hint=hint)

    def render(self, subscriber: Subscriber) -> RenderedMessage:
        """The finished message for one subscriber (Date from the clock, a repeatable Message-ID)."""
        now = self.clock.now().astimezone(self._zone)
        sub_id = subscriber.id if subscriber.id is not None else 0
        token = make_token(self.secret, sub_id, self.list_name, now.date())
        ctx = self._context(subscriber, token)
        try:
            html = self._html.render(ctx)
            text = self._text.render(ctx)
        except jinja2.TemplateError:
            self._probe(subscriber)  # names file:line of the sources as written
            raise TemplateError(f"{self.content.name}: cannot render for {subscriber.email}.") from None
        text = _tidy_text(text)
        message_id = self._message_id(subscriber) if self._message_id else self.default_message_id(subscriber)
        if not _MESSAGE_ID.match(message_id):
            raise TemplateError(f"The Message-ID {message_id!r} is not of the form <something@domain>.")
        mailto, web = self.unsubscribe_links(token)
        unsubscribe = f"<{mailto}>" + (f",\r\n <{web}>" if web else "")
        data = b"".join(
            (
                self._head_a,
                b"To: ", format_address(subscriber.full_name, _header_addr(subscriber.email)).encode("utf-8"), CRLF,
                self._head_b,
                b"Date: ", email.utils.format_datetime(now).encode("ascii"), CRLF,
                b"Message-ID: ", message_id.encode("ascii"), CRLF,
                self._list_id,
                b"List-Unsubscribe: ", unsubscribe.encode("ascii"), CRLF,
                self._tail,
                self._text_head, self._qp(text),
                self._html_head, self._qp(html),
                self._end,
            )
        )
        return RenderedMessage(message_id=message_id, to=subscriber.email, data=data, text=text, html=html)

    def letter(self, subscriber: Subscriber) -> str:
        """What the letter says to one subscriber, without the template around it: subject,
        preheader, offers and the body's text (to compare two letters, whatever their file)."""
        c = self.content
        parts = [c.subject, c.preheader]
        for o in c.offers:
            parts += [o.title, o.details, o.price, o.was_price, o.code, str(o.valid_until or "")]
        # A fixed token date: the same letter reads the same whichever day it is compared.
        ctx = self._context(subscriber, make_token(self.secret, 0, self.list_name, date(2000, 1, 1)))
        parts.append(str(ctx["body_text"]))
        return "\n".join(p for p in parts if p)

    def default_message_id(self, subscriber: Subscriber) -> str:
        """`<hash@sender-domain>`, the same for the same campaign and subscriber (so a retry matches)."""
        who = str(subscriber.id) if subscriber.id is not None else subscriber.email_key or subscriber.email
        digest = hashlib.sha256(f"{self._id_key}\x00{who}".encode("utf-8")).hexdigest()[:32]
        return f"<{digest}@{self.domain}>"
