"""The Jinja side of rendering: the sandbox, its loader and filters, and error locations.

Content files and templates are code we run, and they may come from a colleague or a
download, while the SMTP password sits in the environment. So every template runs in
Jinja's immutable sandbox, with nothing in it but the values we hand over: no name
starting with `_` (no `__class__`, `__globals__`, `__subclasses__`), no change to a list
or dict, no Python function but `range` and `namespace`. A refused construct stops the
render with a SecurityError, which becomes a TemplateError naming file:line.

Also the tag protector: Markdown and the CSS inliner must not see `{{ }}` and `{% %}`.
"""

from __future__ import annotations

import difflib
import functools
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.runtime import Namespace
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import TemplateError

JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
SANDBOX_RULES = (
    "Letters and templates run in a sandbox: names that start with _ (such as __class__ or "
    "__globals__), changing a list or dict, Python functions other than range() and namespace(), "
    "and {% include %}, {% import %} or {% extends %} in a letter are refused."
)

# Every name a template or letter can use (compile.py builds the context from exactly these).
TEMPLATE_VARIABLES = (
    "first_name", "last_name", "full_name", "email", "subject", "preheader", "practice", "offers",
    "booking_url", "unsubscribe_url", "unsubscribe_mailto", "unsubscribe_web", "body_html", "body_text",
    "intro_html", "intro_text", "sections", "list_name", "sender_name", "template", "range", "namespace",
)
_JINJA_HELPERS = ("lipsum", "cycler", "joiner", "dict")  # Jinja's usual globals, left out on purpose


@dataclass(frozen=True)
class View:
    """A class whose objects templates see (practice, an offer, a section), as views.py registers it."""

    label: str  # what the author calls it: "practice", "offer"
    fields: tuple[str, ...]  # in the order to list them
    field_set: frozenset[str]


# A template reads view fields many times per message, so the sandbox looks them up in a
# set instead of running its checks on each: that is most of what the sandbox would cost.
VIEWS: dict[type, View] = {}
_READABLE: dict[tuple[type, str], bool] = {}  # (view class, field): the one lookup per attribute read


def register_view(cls: type, label: str, fields: tuple[str, ...]) -> None:
    """Let templates read these fields (and nothing else) of cls's objects, called label in messages."""
    VIEWS[cls] = View(label, fields, frozenset(fields))
    _READABLE.update(((cls, name), True) for name in fields)


def _did_you_mean(name: Any, candidates: Iterable[str]) -> str:
    name, candidates = str(name), list(candidates)
    # A name that starts like a field ("phone_numbr", "booking") means that field more
    # often than one that merely shares letters ("phone_uri").
    related = [c for c in candidates if len(name) >= 3 and (name.startswith(c) or c.startswith(name))]
    if related:
        close = [max(related, key=lambda c: difflib.SequenceMatcher(None, name, c).ratio())]
    else:
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


class Undefined(jinja2.StrictUndefined):
    """StrictUndefined that says, in the author's words, what there is instead."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        obj, name = self._undefined_obj, self._undefined_name
        if obj is jinja2.utils.missing:
            if name in _JINJA_HELPERS:
                return (f"there is no variable {name!r}: Jinja's {', '.join(_JINJA_HELPERS)} "
                        "are not available in letters and templates")
            return (f"there is no variable {name!r}; the variables are {', '.join(TEMPLATE_VARIABLES)}"
                    + _did_you_mean(name, TEMPLATE_VARIABLES))
        view = VIEWS.get(type(obj))
        if view is not None and not view.fields:
            return f"{view.label} is text and has no field {name!r}"
        if view is not None:
            return (f"{view.label} has no field {name!r}; its fields are {', '.join(view.fields)}"
                    + _did_you_mean(name, view.fields))
        kind = "text" if isinstance(obj, str) else "a number" if isinstance(obj, (int, float)) else f"a {type(obj).__name__}"
        if not isinstance(name, str):
            return f"{kind} has no item {name!r}"
        return f"{kind} has no field {name!r}"


_MAX_ITEMS = 100_000  # the sandbox's own bound for range(), used for * too
_MAX_BITS = 100_000  # a number of 30,000 digits is enough for any letter


def _range(*args: int) -> range:
    """range() with the sandbox's bound, refused in our words."""
    numbers = range(*args)
    if len(numbers) > _MAX_ITEMS:
        raise jinja2.exceptions.SecurityError(
            f"a range of more than {_MAX_ITEMS:,} numbers is not allowed in letters and templates"
        )
    return numbers


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    # An empty first name is as good as none: {{ first_name | default("there") }} should
    # greet "there", not "", for the many subscribers who never gave a name.
    if isinstance(value, jinja2.Undefined):
        # Every name we offer is always defined, so an undefined one is a typo
        # ({{ frist_name | default("there") }}): say so rather than greet everyone "there".
        value._fail_with_undefined_error()
    if value is None or value == "" or (boolean and not value):
        return default_value
    return value


class SourceLoader(jinja2.BaseLoader):
    """Templates from a mapping; the name doubles as the file name, so errors can name it."""

    def __init__(self, sources: Mapping[str, str]):
        self.sources = sources

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        if template not in self.sources:
            raise jinja2.TemplateNotFound(template)
        return self.sources[template], template, lambda: True

    def list_templates(self) -> list[str]:
        return sorted(self.sources)


_DIGITS = re.compile(r"\d+")


def _refuse_large(args: Any, kwargs: Any, text: Any = None) -> None:
    """A width, count or padding beyond the sandbox's bound (in an argument, or written in a
    format string) would make one call build gigabytes: refused like a huge range."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_ITEMS:
            raise jinja2.exceptions.SecurityError(
                f"a width or count over {_MAX_ITEMS:,} is not allowed in letters and templates"
            )
    if isinstance(text, str) and any(len(d) > 6 or int(d) > _MAX_ITEMS for d in _DIGITS.findall(text)):
        raise jinja2.exceptions.SecurityError(
            f"a format with a width over {_MAX_ITEMS:,} is not allowed in letters and templates"
        )


def _bounded(f: Callable[..., Any], *, formats: bool = False) -> Callable[..., Any]:
    """A filter that refuses huge widths and counts (center(10**9); with formats, '%0999999999d'|format)."""

    @functools.wraps(f)  # keeps Jinja's pass_environment / pass_eval_context marks
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _refuse_large(args, kwargs, args[0] if formats and args else None)
        return f(*args, **kwargs)

    return guarded


def _no_safe(value: Any) -> Any:
    """`| safe` would print a subscriber's name as HTML: refused (a letter's own HTML needs no filter)."""
    raise jinja2.exceptions.SecurityError(
        "the safe filter is not allowed in letters and templates: what subscribers gave is always escaped "
        "(write HTML straight into the letter instead)"
    )


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, refusing at once (not with a silent Undefined) and fast on our views."""

    intercepted_binops = frozenset(["*", "**"])

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        # 'x'.ljust(10**9), '{:>999999999}'.format(1): a str method builds what it is asked to.
        owner = getattr(__obj, "__self__", None)
        is_format = isinstance(owner, str) and getattr(__obj, "__name__", "") in ("format", "format_map", "__mod__")
        _refuse_large(args, kwargs, owner if is_format else None)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # '{:>999999999}'.format(1): the sandbox checks what a format reaches, not its widths.
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = value.__self__

        def bounded(*args: Any, **kwargs: Any) -> str:
            _refuse_large(args, kwargs, text)
            return wrapped(*args, **kwargs)

        return bounded

    def getattr(self, obj: Any, attribute: str, _readable: dict = _READABLE, _get: Callable = getattr) -> Any:
        if (obj.__class__, attribute) in _readable:  # a view's field: most reads of a message
            return _get(obj, attribute)
        view = VIEWS.get(type(obj))
        if attribute.startswith("_"):  # refused whether or not it exists
            return self.unsafe_undefined(obj, attribute)
        if view is not None:
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        # Jinja returns an Undefined that fails only when printed, so `| default` or
        # `is defined` would quietly swallow an attempt; we stop it where it stands.
        raise jinja2.exceptions.SecurityError(
            f"{attribute!r} is not allowed in letters and templates (they run in a sandbox that "
            "refuses names starting with _ and anything that changes a list or dict)"
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        # 'x' * 10**9 or 9**9**9 would take the memory or the processor of a whole send.
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and left.bit_length() * abs(right) > _MAX_BITS:
            raise jinja2.exceptions.SecurityError("a number that large is not allowed in letters and templates")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > _MAX_ITEMS:
                    raise jinja2.exceptions.SecurityError(
                        f"text or a list repeated to more than {_MAX_ITEMS:,} characters or items is not allowed in letters and templates"
                    )
        return super().call_binop(context, operator, left, right)


def make_environment(sources: Mapping[str, str]) -> jinja2.Environment:
    """A sandboxed Jinja environment over these sources: strict about undefined names, HTML autoescaped."""
    env = Sandbox(
        loader=SourceLoader(sources),
        undefined=Undefined,
        autoescape=lambda name: bool(name) and (name.endswith(".html.j2") or name.endswith(".html")),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
        cache_size=-1,
    )
    for name in ("center", "indent", "slice", "batch", "truncate", "wordwrap", "join", "replace"):
        env.filters[name] = _bounded(env.filters[name])
    env.filters["format"] = _bounded(env.filters["format"], formats=True)
    env.filters["default"] = env.filters["d"] = _default
    env.filters["safe"] = _no_safe
    # Only what a letter needs: lipsum, cycler, joiner and dict go (each a way into Python).
    env.globals.clear()
    env.globals.update(range=_range, namespace=Namespace)
    return env


def sentence(message: str | None) -> str:
    """Jinja's message as the middle of one of our sentences: no trailing full stop."""
    return (message or "a template error").strip().rstrip(".")


def across_sections(exc: jinja2.TemplateSyntaxError) -> bool:
    """Is this the syntax error of a {% %} block cut in two by a `##` heading?"""
    return any(s in (exc.message or "") for s in ("Unexpected end of template", "Encountered unknown tag"))


def error_place(exc: BaseException, places: Mapping[str, Callable[[int], str]]) -> str | None:
    """Where exc was raised, as the author's `file:line`: the innermost template frame that places knows.

    places maps a template name (the file name Jinja gives its frames) to a function from
    that template's line to the place to show, e.g. the content file and its real line.
    """
    found = None
    tb = exc.__traceback__
    while tb is not None:
        place = places.get(tb.tb_frame.f_code.co_filename)
        if place is not None:
            found = place(tb.tb_lineno)
        tb = tb.tb_next
    return found


class Tags:
    """Jinja tags swapped for inert markers while Markdown or the CSS inliner works on the text.

    Both would otherwise mangle them: Markdown escapes quotes and reads `*` and `_`,
    an HTML parser moves text out of tables. Markers are plain letters and digits
    (`{% ... %}` in HTML becomes a comment, which may stand anywhere in a table).
    """

    def __init__(self, source: str, html_statements: bool = False):
        self.nonce = "JJ" + secrets.token_hex(4)
        self.tags: list[str] = []
        self.html_statements = html_statements
        self.protected = JINJA_TAG.sub(self._swap, source)
        self._marker = re.compile(r"(?:<!--)?" + self.nonce + r"(\d+)JJ(?:-->)?")

    def _swap(self, match: re.Match) -> str:
        self.tags.append(match.group(0))
        marker = f"{self.nonce}{len(self.tags) - 1}JJ"
        if self.html_statements and not match.group(0).startswith("{{"):
            return f"<!--{marker}-->"
        return marker

    def is_statement(self, index: int) -> bool:
        """Is the tag at index a {% %} statement (rather than a {{ }} value)?"""
        return not self.tags[index].startswith("{{")

    def restore(self, text: str, where: str) -> str:
        """Every marker swapped back for its tag; a lost tag is a TemplateError naming where."""
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

    def restore_some(self, text: str) -> str:
        """The markers in text swapped back, without insisting that every tag is there."""
        return self._marker.sub(lambda m: self.tags[int(m.group(1))], text)

    def unwrap_statement_paragraphs(self, html: str) -> str:
        """`<p>{% if x %}</p>` from a tag on a line of its own: keep the tag, drop the paragraph."""

        def unwrap(match: re.Match) -> str:
            indexes = [int(i) for i in re.findall(self.nonce + r"(\d+)JJ", match.group(1))]
            if indexes and all(self.is_statement(i) for i in indexes):
                return match.group(1).strip() + "\n"
            return match.group(0)

        return re.sub(r"<p>((?:\s*" + self.nonce + r"\d+JJ)+)\s*</p>\n?", unwrap, html)
