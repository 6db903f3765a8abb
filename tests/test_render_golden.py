"""Golden messages: a fixed content file and subscriber render to a stored .eml (*.eml.golden), byte for byte.

Date and Message-ID are fixed by a FakeClock and an injected id source. After an
intended change to the templates or the renderer, look at the difference, then run
`MAILER_UPDATE_GOLDEN=1 python -m pytest tests/test_render_golden.py` to store the new output.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.clock import FakeClock
from mailer.config import EXAMPLE_CONFIG, UnsubscribeConfig
from mailer.content import load_content
from mailer.models import Subscriber
from mailer.render import compile_campaign

from .test_render import TEMPLATES, lines_ok, parse

GOLDEN = Path(__file__).parent / "data" / "golden"
SUBSCRIBER = Subscriber(email="zoe.martin@example.com", email_key="zoe.martin@example.com",
                        first_name="Zoë", last_name="Martin", id=42, lists=("news", "specials"))
ONE_CLICK = dataclasses.replace(EXAMPLE_CONFIG, unsubscribe=UnsubscribeConfig(
    mailto="unsubscribe@closter-acupuncture.example", url="https://closter-acupuncture.example/u"))


@pytest.mark.parametrize("name, config", [("specials", EXAMPLE_CONFIG), ("news", ONE_CLICK)])
def test_golden_message(name, config):
    content = load_content(GOLDEN / f"{name}.md")
    campaign = compile_campaign(
        content, TEMPLATES, config, b"golden-secret", list_name=content.template, campaign_key="golden",
        clock=FakeClock(datetime(2026, 11, 25, 15, 30, 0, tzinfo=UTC)),
        message_id=lambda s: f"<golden.{s.id}@closter-acupuncture.example>",
    )
    data = campaign.render(SUBSCRIBER).data
    lines_ok(data)
    parse(data)
    path = GOLDEN / f"{name}.eml.golden"  # an .eml, named so it is never taken for outbox output
    if os.environ.get("MAILER_UPDATE_GOLDEN") == "1":
        path.write_bytes(data)
    assert data == path.read_bytes(), f"{path.name} differs; see the module docstring"
