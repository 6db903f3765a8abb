"""Content + templates + subscriber -> a finished MIME message, ready for SMTP.

    campaign = compile_campaign(content, templates, config, secret,
                                list_name="news", campaign_key="...", clock=clock)
    message = campaign.render(subscriber)        # a RenderedMessage: .data is the .eml

Content files and templates run in Jinja's immutable sandbox (environment.py; SANDBOX_RULES
says what it refuses), and every template error names the author's file and line.

The package, by concern: templates (where templates come from), environment (Jinja),
css (inlining), markdown (the body as HTML, text and sections), views (what templates
see), mime (headers, addresses, quoted-printable) and compile (the campaign, compiled
once, rendered per subscriber).

Subscriber data is data: it reaches templates as values (escaped in HTML, never
compiled as a template) and headers only through the encoders in mime, which cannot
produce a line break.
"""

from __future__ import annotations

from .compile import CompiledCampaign, RenderedMessage, compile_campaign
from .environment import SANDBOX_RULES
from .markdown import markdown_to_text
from .mime import format_address, message_zone
from .templates import TEMPLATE_FILES, packaged_templates_dir, resolve_templates, templates_in_use
from .views import sample_subscriber

__all__ = [
    "TEMPLATE_FILES",
    "CompiledCampaign",
    "RenderedMessage",
    "SANDBOX_RULES",
    "compile_campaign",
    "format_address",
    "markdown_to_text",
    "message_zone",
    "packaged_templates_dir",
    "resolve_templates",
    "sample_subscriber",
    "templates_in_use",
]
