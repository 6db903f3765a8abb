"""The Jinja side of rendering: the environment, its loader and filters, and error locations.

Also the tag protector: Markdown and the CSS inliner must not see `{{ }}` and `{% %}`.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Iterable, Mapping

import jinja2

from ..errors import TemplateError

JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    # An empty first name is as good as none: {{ first_name | default("there") }} should
    # greet "there", not "", for the many subscribers who never gave a name.
    if isinstance(value, jinja2.Undefined) or value is None or value == "" or (boolean and not value):
        return default_value
    return value


class SourceLoader(jinja2.BaseLoader):
    """Templates from a mapping; the name doubles as the file name, so errors can name it."""

    def __init__(self, sources: Mapping[str, str]):
        self.sources = sources

    def get_source(self, environment, template):
        if template not in self.sources:
            raise jinja2.TemplateNotFound(template)
        return self.sources[template], template, lambda: True

    def list_templates(self):
        return sorted(self.sources)


def make_environment(sources: Mapping[str, str]) -> jinja2.Environment:
    """A Jinja environment over these sources: strict about undefined names, HTML autoescaped."""
    env = jinja2.Environment(
        loader=SourceLoader(sources),
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


def sentence(message: str | None) -> str:
    """Jinja's message as the middle of one of our sentences: no trailing full stop."""
    return (message or "a template error").strip().rstrip(".")


def across_sections(exc: jinja2.TemplateSyntaxError) -> bool:
    """Is this the syntax error of a {% %} block cut in two by a `##` heading?"""
    return any(s in (exc.message or "") for s in ("Unexpected end of template", "Encountered unknown tag"))


def error_line(exc: BaseException, names: Iterable[str]) -> tuple[str, int] | None:
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
