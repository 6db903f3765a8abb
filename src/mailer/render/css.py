"""CSS: the templates' <style> blocks moved into style="" attributes, once per campaign (css-inline)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

import css_inline

from ..errors import TemplateError
from .environment import JINJA_TAG, Tags

_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style>", re.DOTALL | re.IGNORECASE)


def stylesheet(sources: Mapping[str, str]) -> str:
    """The CSS of every <style> block of the HTML templates, base first."""
    names = sorted((n for n in sources if n.endswith(".html.j2")), key=lambda n: (not n.startswith("base"), n))
    return "\n".join(m.group(1) for n in names for m in _STYLE_BLOCK.finditer(JINJA_TAG.sub("", sources[n])))


@lru_cache(maxsize=64)
def inline_css(name: str, source: str, css: str) -> str:
    """A template with its CSS moved into style attributes; @media rules stay in <style>."""
    tags = Tags(source, html_statements=True)
    is_document = re.search(r"<html[\s>]|<!doctype", tags.protected, re.IGNORECASE) is not None
    try:
        if is_document:
            inlined = css_inline.inline(tags.protected, keep_at_rules=True, load_remote_stylesheets=False)
        else:
            inlined = css_inline.inline_fragment(tags.protected, css, load_remote_stylesheets=False)
    except (css_inline.InlineError, ValueError) as exc:
        raise TemplateError(f"{name}: its CSS cannot be inlined ({exc}).") from None
    return tags.restore(inlined, name)


def inline_fragment(html: str, css: str, where: str) -> str:
    """A piece of HTML (the body, an offer's details) styled by the templates' CSS."""
    try:
        return css_inline.inline_fragment(html, css, load_remote_stylesheets=False)
    except (css_inline.InlineError, ValueError) as exc:
        raise TemplateError(f"{where}: the CSS cannot be applied to the body ({exc}).") from None
