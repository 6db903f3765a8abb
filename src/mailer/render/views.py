"""What templates see: the practice, the offers, the body's sections, and a sample subscriber."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from datetime import date

import jinja2
from markupsafe import Markup

from ..config import Config
from ..content import Offer, format_date
from ..models import Subscriber
from .css import inline_fragment
from .environment import register_view
from .markdown import MD


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


def offer_view(offer: Offer, css: str, where: str) -> OfferView:
    """An offer of the front matter with its details as styled HTML and as wrapped text."""
    details_html = MD.renderInline(offer.details.strip()).replace("\n", "<br>\n")
    if css:
        details_html = inline_fragment(f'<span class="offer-details-inner">{details_html}</span>', css, where)
    return OfferView(
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


def fast_render(template: jinja2.Template, context: dict) -> str:
    """Template.render without copying the context for every small body template.

    Errors surface untranslated; CompiledCampaign.render then re-renders the sources as
    written to name the file and line.
    """
    return template.environment.concat(template.root_render_func(template.new_context(context, shared=True)))


class Lazy:
    """A piece of the body rendered for this subscriber only when a template prints it.

    Its parts start with _ so that the sandbox keeps templates away from them: the
    template object would lead to its environment.
    """

    __slots__ = ("_template", "_context", "_value")

    def __init__(self, template: jinja2.Template, context: dict):
        self._template = template
        self._context = context
        self._value: str | None = None

    def _render(self) -> str:
        if self._value is None:
            self._value = fast_render(self._template, self._context)
        return self._value

    def __html__(self) -> str:
        return self._render()

    def __str__(self) -> str:
        return self._render()

    def __bool__(self) -> bool:
        return bool(self._render().strip())


@dataclass(frozen=True)
class SectionTemplates:
    """The compiled templates of one section: title and body, as HTML and as text."""

    title_html: jinja2.Template
    title_text: jinja2.Template
    html: jinja2.Template
    text: jinja2.Template


class SectionView:
    """A `##` section of a news letter: title and body, as HTML and as text."""

    __slots__ = ("title_html", "title", "html", "text")

    def __init__(self, parts: SectionTemplates, context: dict):
        self.title_html = Lazy(parts.title_html, context)
        self.title = Lazy(parts.title_text, context)
        self.html = Lazy(parts.html, context)
        self.text = Lazy(parts.text, context)


register_view(PracticeView, "practice", tuple(PracticeView.__dataclass_fields__))
register_view(OfferView, "offer", tuple(OfferView.__dataclass_fields__))
register_view(SectionView, "section", ("title", "title_html", "text", "html"))
register_view(Lazy, "this part of the letter", ())


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
