"""Can we send? Settings that stop a real send before anyone gets anything, named by their key."""

from __future__ import annotations

from tests.test_send import EVERYONE, sample_workspace, sending, set_config  # noqa: F401  (fixtures)


def test_a_hipaa_practice_without_a_baa_sends_nothing(sending):
    set_config(sending.home, "practice", hipaa=True)
    result = sending.send(sending.content)
    assert result.exit_code == 2
    assert "business associate agreement" in result.stderr and "[smtp] baa" in result.stderr
    assert sending.server.received == [] and sending.rows(None) == []  # no campaign was even stored
    set_config(sending.home, "smtp", baa=True)
    assert sending.send(sending.content).exit_code == 0
    assert len(sending.server.received) == EVERYONE


def test_a_free_mail_sender_through_another_relay_is_refused(sending):
    set_config(sending.home, "sender", from_email="closter.acupuncture@gmail.com")
    set_config(sending.home, "smtp", host="email-smtp.us-east-1.amazonaws.com")
    result = sending.send(sending.content, "--dry-run")
    assert result.exit_code == 2
    assert "gmail.com" in result.stderr and "DMARC" in result.stderr
    assert sending.server.received == []


def test_a_campaign_aimed_by_condition_is_warned_about(sending):
    set_config(sending.home, "practice", hipaa=True)
    set_config(sending.home, "smtp", baa=True)
    result = sending.send(sending.content, "--tag", "back-pain", "--dry-run")
    assert "back-pain" in result.stderr and "warning" in result.stderr
