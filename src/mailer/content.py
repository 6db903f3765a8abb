"""Content files: what the practitioner writes, as Markdown with front matter.

    ---
    subject: December specials
    preheader: First-visit electroacupuncture for $65
    template: specials            # or news (the default)
    offers:
      - title: First visit
        details: Consultation and a 60-minute treatment.
        price: "$65"
        was_price: "$95"
        code: DEC-FIRST
        valid_until: 2026-12-31
    ---
    Hi {{ first_name | default("there") }},
    ...

Parsing is pure: text in, a frozen Content out, or a TemplateError naming file:line.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TemplateError
from .files import read_head
from .text import CONTROL_BUT_TAB

TEMPLATES = ("news", "specials")
FIELDS = ("subject", "preheader", "template", "from_name", "reply_to", "offers")
OFFER_FIELDS = ("title", "details", "price", "was_price", "code", "valid_until")
_JINJA = re.compile(r"\{\{|\{%|\{#")
_DELIMITER = re.compile(r"^---[ \t]*$")
_END = re.compile(r"^(---|\.\.\.)[ \t]*$")


@dataclass(frozen=True)
class Offer:
    """One offer of a specials message."""

    title: str
    details: str
    price: str = ""
    was_price: str = ""
    code: str = ""
    valid_until: datetime.date | None = None


@dataclass(frozen=True)
class Content:
    """A parsed content file: front matter fields and the Markdown body."""

    name: str  # file name, used in file:line messages
    text: str  # the whole file as written: what a campaign stores as its snapshot
    subject: str
    preheader: str
    template: str  # "news" | "specials"
    from_name: str
    reply_to: str
    offers: tuple[Offer, ...]
    body: str  # Markdown (may use {{ first_name }} and friends)
    body_line: int  # line in the file where the body starts (for file:line)


MAX_LETTER_BYTES = 2 * 1024 * 1024


def load_content(path: str | Path) -> Content:
    """Read and parse a content file; TemplateError (exit 2) naming file:line when it is wrong."""
    path = Path(path)
    raw = read_head(path, MAX_LETTER_BYTES + 1, TemplateError, what="content file", folder_hint="give the letter's .md file")
    if b"\0" in raw[:8192]:
        raise TemplateError(f"{path.name} looks like a binary file, not a letter (Markdown text).")
    if len(raw) > MAX_LETTER_BYTES:
        raise TemplateError(f"{path.name} is larger than {MAX_LETTER_BYTES // (1024 * 1024)} MB; a letter is a few "
                            "kilobytes of Markdown (and Gmail clips messages above 102 KB).")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TemplateError(f"{path.name}:{line}: the file is not UTF-8 text; save it as UTF-8.") from None
    return parse_content(text, path.name)


def _refuse_duplicate_keys(node: yaml.Node, name: str, first_line: int) -> None:
    """Two `subject:` lines: YAML keeps the last one silently; we say so instead."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in n.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise TemplateError(
                            f"{name}:{key.start_mark.line + first_line}: '{key.value}' is given twice in the front matter; "
                            "keep one."
                        )
                    seen.add(key.value)
                stack.append(value)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)


def _value_line(node: yaml.Node, problem: str) -> int:
    """The line (within the front matter) of the first date-like value YAML cannot build."""
    stack = [node]
    while stack:
        n = stack.pop(0)
        if isinstance(n, yaml.ScalarNode) and n.tag.endswith(":timestamp"):
            try:
                datetime.date.fromisoformat(str(n.value)[:10])
            except ValueError:
                return int(n.start_mark.line)
        elif isinstance(n, yaml.MappingNode):
            stack += [v for pair in n.value for v in pair]
        elif isinstance(n, yaml.SequenceNode):
            stack += list(n.value)
    return 0


def _node_lines(node: yaml.Node, first_line: int, path: tuple = (), out: dict | None = None) -> dict:
    """Where each key and list item of the front matter starts, as file line numbers."""
    out = {} if out is None else out
    out[path] = node.start_mark.line + first_line
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                _node_lines(value, first_line, path + (key.value,), out)
                out[path + (key.value,)] = key.start_mark.line + first_line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, first_line, path + (i,), out)
    return out


def _split(text: str, name: str) -> tuple[str, int, str, int]:
    """(front matter, its first line, body, body's first line)."""
    lines = text.split("\n")
    if not lines or not _DELIMITER.match(lines[0]):
        raise TemplateError(
            f"{name}:1: a content file starts with front matter: a line '---', then 'subject: ...', then '---'.",
            hint="Copy one of the files in examples/ and edit it.",
        )
    for i in range(1, len(lines)):
        if _END.match(lines[i]):
            return "\n".join(lines[1:i]), 2, "\n".join(lines[i + 1:]), i + 2
    raise TemplateError(f"{name}:1: the front matter that starts here is never closed by a '---' line.")


MAX_FRONT_MATTER = 64 * 1024  # a letter's subject and offers; far more is a mistake or an attack


def _refuse_anchors(source: str, name: str, first_line: int) -> None:
    """YAML anchors (&a) and aliases (*a) let 400 bytes expand into gigabytes (a "billion
    laughs"); a letter's front matter never needs them, so they are refused outright."""
    if "&" not in source and "*" not in source:
        return
    try:
        for token in yaml.scan(source, Loader=yaml.SafeLoader):
            if isinstance(token, (yaml.AnchorToken, yaml.AliasToken)):
                kind = "an anchor (&)" if isinstance(token, yaml.AnchorToken) else "an alias (*)"
                raise TemplateError(
                    f"{name}:{token.start_mark.line + first_line}: the front matter uses {kind}, which letters may not use.",
                    hint='Write each value out in full; put text starting with "&" or "*" in quotes.',
                )
    except yaml.YAMLError:
        return  # not valid YAML: the loader says where, with its own words


def _load_yaml(source: str, name: str, first_line: int) -> tuple[Any, dict]:
    if len(source) > MAX_FRONT_MATTER:
        raise TemplateError(
            f"{name}:{first_line}: the front matter is {len(source) // 1024} KB; at most {MAX_FRONT_MATTER // 1024} KB "
            "are read (the letter's text goes below the closing ---)."
        )
    _refuse_anchors(source, name, first_line)
    loader = yaml.SafeLoader(source)
    try:
        node = loader.get_single_node()
        if node is not None:
            _refuse_duplicate_keys(node, name, first_line)
        try:
            data = loader.construct_document(node) if node is not None else {}
        except ValueError as exc:  # a date that does not exist: 2026-02-30, month 13
            line = first_line + (_value_line(node, str(exc)) if node is not None else 0)
            raise TemplateError(
                f"{name}:{line}: the front matter holds a date that does not exist ({exc}).",
                hint="Write dates like 2026-12-31; put other text that looks like a date in quotes.",
            ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = (mark.line + first_line) if mark else first_line
        problem = (exc.problem or exc.context or "not valid YAML").rstrip(".")
        raise TemplateError(
            f"{name}:{line}: the front matter is not valid YAML ({problem}).",
            hint='Put text containing ":" or "#" in quotes, e.g. subject: "Note: ...".',
        ) from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"{name}:{first_line}: the front matter is not valid YAML ({exc}).") from None
    finally:
        loader.dispose()
    lines = _node_lines(node, first_line) if node is not None else {(): first_line}
    return data, lines


class _Fields:
    """Reads typed values from the front matter, with file:line in every complaint."""

    def __init__(self, name: str, lines: dict):
        self.name = name
        self.lines = lines

    def where(self, path: tuple) -> str:
        while path not in self.lines and path:
            path = path[:-1]
        return f"{self.name}:{self.lines.get(path, 1)}"

    def fail(self, path: tuple, message: str, hint: str | None = None) -> TemplateError:
        return TemplateError(f"{self.where(path)}: {message}", hint=hint)

    def text(self, data: dict, path: tuple, label: str, *, required: bool = False, money: bool = False) -> str:
        value = data.get(path[-1])
        if value is None or value == "":
            if required:
                raise self.fail(path, f"'{label}' is required.")
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(path, f"'{label}' must be text, not {type(value).__name__}.")
        if money and not isinstance(value, str):
            # A bare number in YAML (price: 65) means dollars; the practice is in the US.
            value = f"${value:,.2f}".replace(".00", "")
        value = str(value).strip()
        found = CONTROL_BUT_TAB.search(value)
        if found and path[-1] != "details":
            what = "a line break" if found.group(0) in "\r\n" else f"the invisible character U+{ord(found.group(0)):04X}"
            raise self.fail(path, f"'{label}' must be one line of plain text; it holds {what}.")
        if _JINJA.search(value):
            raise self.fail(
                path,
                f"'{label}' is the same for every subscriber, so it cannot use {{{{ }}}} or {{% %}}.",
                hint="Personalise the body below the front matter instead.",
            )
        return value

    def date(self, data: dict, path: tuple, label: str) -> datetime.date | None:
        value = data.get(path[-1])
        if value is None or value == "":
            return None
        if isinstance(value, datetime.datetime):
            return value.date()
        if isinstance(value, datetime.date):
            return value
        if isinstance(value, str):
            try:
                return datetime.date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise self.fail(path, f"'{label}' must be a date written like 2026-12-31, not {value!r}.")


def parse_content(text: str, name: str) -> Content:
    """Parse the text of a content file; TemplateError naming name:line when it is wrong."""
    text = text.lstrip("\ufeff")
    normal = text.replace("\r\n", "\n").replace("\r", "\n")
    front, first_line, body, body_line = _split(normal, name)
    data, lines = _load_yaml(front, name, first_line)
    f = _Fields(name, lines)
    if not isinstance(data, dict):
        raise f.fail((), "the front matter must be 'key: value' lines (subject: ..., template: ...).")
    for key in data:
        if key not in FIELDS:
            raise f.fail(
                (str(key),),
                f"unknown front matter key '{key}'; the keys are {', '.join(FIELDS)}.",
            )
    subject = f.text(data, ("subject",), "subject", required=True)
    template = f.text(data, ("template",), "template") or "news"
    if template not in TEMPLATES:
        raise f.fail(("template",), f"'template' must be news or specials, not {template!r}.")
    reply_to = f.text(data, ("reply_to",), "reply_to")
    if reply_to:
        from .validate import InvalidValue, normalise_email

        try:
            reply_to = normalise_email(reply_to)[0]
        except InvalidValue as exc:
            raise f.fail(("reply_to",), f"'reply_to' is not a usable address: {exc}") from None
    offers = _offers(data, f)
    _check_body_syntax(body, name, body_line)
    return Content(
        name=name,
        text=text,
        subject=subject,
        preheader=f.text(data, ("preheader",), "preheader"),
        template=template,
        from_name=f.text(data, ("from_name",), "from_name"),
        reply_to=reply_to,
        offers=offers,
        body=body,
        body_line=body_line,
    )


def _offers(data: dict, f: _Fields) -> tuple[Offer, ...]:
    raw = data.get("offers")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise f.fail(("offers",), "'offers' must be a list of offers, each starting with '- title: ...'.")
    offers = []
    for i, item in enumerate(raw):
        path = ("offers", i)
        if not isinstance(item, dict):
            raise f.fail(path, f"offer {i + 1} must be 'key: value' lines (title, details, price, ...).")
        for key in item:
            if key not in OFFER_FIELDS:
                raise f.fail(path + (str(key),), f"unknown offer key '{key}'; the keys are {', '.join(OFFER_FIELDS)}.")
        offers.append(
            Offer(
                title=f.text(item, path + ("title",), "title", required=True),
                details=f.text(item, path + ("details",), "details", required=True),
                price=f.text(item, path + ("price",), "price", money=True),
                was_price=f.text(item, path + ("was_price",), "was_price", money=True),
                code=f.text(item, path + ("code",), "code"),
                valid_until=f.date(item, path + ("valid_until",), "valid_until"),
            )
        )
    return tuple(offers)


_REFUSED_IN_LETTERS = {
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.Extends: "{% extends %}",
}


def _check_body_syntax(body: str, name: str, body_line: int) -> None:
    """Template syntax errors in the body, found now rather than at send time.

    Parsed by a sandboxed environment like every template of ours; a letter may not pull
    in other templates (they are the renderer's, and one could include itself forever).
    """
    try:
        tree = ImmutableSandboxedEnvironment().parse(body)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{name}:{body_line + (exc.lineno or 1) - 1}: {(exc.message or 'a template syntax error').rstrip('.')}.") from None
    for node in tree.find_all(tuple(_REFUSED_IN_LETTERS)):
        raise TemplateError(
            f"{name}:{body_line + node.lineno - 1}: {_REFUSED_IN_LETTERS[type(node)]} is not allowed in letters "
            "(they run in a sandbox and cannot load templates).",
            hint="Write the text into the letter, or change the template (see `mailer templates list`).",
        )


def format_date(day: datetime.date) -> str:
    """`Wednesday, December 31, 2026`: a date in words, the same on every machine (no locale)."""
    return f"{_DAYS[day.weekday()]}, {_MONTHS[day.month - 1]} {day.day}, {day.year}"


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
