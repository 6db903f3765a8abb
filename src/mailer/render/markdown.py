"""Markdown: the body as HTML (with its Jinja tags kept whole), as plain text, and cut into sections."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from ..content import Content
from .css import inline_fragment
from .environment import Tags


def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


MD = _markdown()


def markdown_to_text(source: str) -> str:
    """Markdown as a person would write it in a plain-text email (not tag-stripped HTML)."""
    return _text_block(SyntaxTreeNode(MD.parse(source))).strip("\n")


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
            href = str(c.attrs.get("href", ""))  # typed str | int | float: a link's href is always text
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


def markdown_html(source: str, css: str, where: str, inline: bool = False) -> str:
    """Markdown (with Jinja tags) as an HTML template: a block styled by css, or inline HTML."""
    tags = Tags(source)
    if inline:
        html = MD.renderInline(tags.protected)
    else:
        html = tags.unwrap_statement_paragraphs(MD.render(tags.protected))
        if html.strip():
            html = inline_fragment(f'<div class="md">\n{html}</div>', css, where)
    return tags.restore(html, where)


def markdown_text(source: str, where: str) -> str:
    """Markdown (with Jinja tags) as a plain-text template."""
    tags = Tags(source)
    return tags.restore(markdown_to_text(tags.protected), where)


@dataclass(frozen=True)
class Piece:
    """A part of the body: the intro before the first `##`, or one section."""

    title: str  # Markdown inline source of the heading ("" for the intro)
    source: str  # Markdown block source, with its Jinja tags
    line: int  # line in the content file where source starts
    title_line: int


def split_sections(content: Content) -> list[Piece]:
    """The body cut at its top-level `##` headings: [intro, section, section, ...]."""
    tags = Tags(content.body)
    tokens = MD.parse(tags.protected)
    lines = tags.protected.split("\n")
    cuts = [(tok.map[0], tok.map[1], tokens[i + 1].content)
            for i, tok in enumerate(tokens)
            if tok.type == "heading_open" and tok.tag == "h2" and tok.level == 0 and tok.map]

    # Piece by piece, so not every tag is in each part: put back what is there.
    restore = tags.restore_some

    def line_of(index: int) -> int:
        return content.body_line + restore("\n".join(lines[:index])).count("\n") + (1 if index else 0)

    pieces = []
    first = cuts[0][0] if cuts else len(lines)
    pieces.append(Piece("", restore("\n".join(lines[:first])), line_of(0), content.body_line))
    for n, (start, end, title) in enumerate(cuts):
        stop = cuts[n + 1][0] if n + 1 < len(cuts) else len(lines)
        pieces.append(Piece(restore(title), restore("\n".join(lines[end:stop])), line_of(end), line_of(start)))
    return pieces
