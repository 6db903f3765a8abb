"""DKIM signing for people who run their own relay: signed once per campaign's key, verified over DNS."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tomllib
from pathlib import Path

import dkim as dkimpy
import pytest

from mailer.config import EXAMPLE_CONFIG, DkimConfig, parse_config
from mailer.dkim import SIGNED_HEADERS, Signer, load_private_key, signer_for
from mailer.dnscheck import dkim_dnsfunc
from mailer.errors import ConfigError

from .conftest import DATA
from .test_render import JANE, parse, renderer
from .test_send import sample_workspace, sending, set_config  # noqa: F401

DOMAIN = "closter-acupuncture.example"


@pytest.fixture
def home(tmp_path):
    for name in ("test-2048.pem", "test-1024.pem", "test-512.pem"):
        shutil.copy(DATA / "dkim" / name, tmp_path / name)
        os.chmod(tmp_path / name, 0o600)
    return tmp_path


@pytest.fixture
def signer(home) -> Signer:
    return Signer(DkimConfig(selector="mail2026", private_key_file="test-2048.pem"), DOMAIN, base_dir=home)


@pytest.fixture
def published(dns_server, signer):
    """The signer's public key at mail2026._domainkey in the test DNS; a verify function that asks it."""
    dns_server.txt[f"mail2026._domainkey.{DOMAIN}"] = signer.key.public_record()
    dnsfunc = dkim_dnsfunc(dns_server.resolver())
    return lambda data: dkimpy.verify(data, dnsfunc=dnsfunc)


def rendered() -> bytes:
    return renderer().render(JANE).data


def signature_tags(data: bytes) -> dict[str, str]:
    msg = parse(data)
    value = re.sub(r"\s+", "", str(msg["DKIM-Signature"]))
    return dict(part.split("=", 1) for part in value.split(";") if part)


def test_a_rendered_message_signed_verifies_against_the_published_key(signer, published, dns_server):
    data = signer.sign(rendered())
    assert data.startswith(b"DKIM-Signature: ")
    assert published(data)
    assert f"mail2026._domainkey.{DOMAIN}" in dns_server.queries  # the real DNS path, not a stub


def test_the_signature_covers_the_headers_a_newsletter_is_judged_by(signer):
    data = rendered()
    tags = signature_tags(signer.sign(data))
    assert tags["a"] == "rsa-sha256" and tags["c"] == "relaxed/relaxed"
    assert tags["d"] == DOMAIN and tags["s"] == "mail2026"
    present = {k.lower() for k in parse(data).keys()}
    assert tags["h"].split(":") == [h for h in SIGNED_HEADERS if h in present]
    assert {"from", "to", "subject", "date", "message-id", "list-unsubscribe", "list-id"} <= set(tags["h"].split(":"))


def test_only_headers_present_are_signed(signer, published):
    data = b"From: news@closter-acupuncture.example\r\nTo: jane@example.com\r\nSubject: Hi\r\n\r\nHello\r\n"
    signed = signer.sign(data)
    assert signature_tags(signed)["h"] == "from:to:subject"
    assert published(signed)


def test_a_changed_subject_or_body_fails_verification(signer, published):
    signed = signer.sign(rendered())
    for old, new in ((b"Subject: ", b"Subject: Re: "), (b"electroacupuncture", b"electro-acupuncture")):
        changed = signed.replace(old, new, 1)
        assert changed != signed and not published(changed)


def test_relaxed_canonicalisation_survives_refolding_on_the_way(signer, published):
    signed = signer.sign(rendered())
    # A relay that turns a header's space into two, adds trailing spaces, and pads body lines.
    head, _, body = signed.partition(b"\r\n\r\n")
    changed = head.replace(b"\r\nSubject: ", b"\r\nSubject:  ", 1) + b"  \r\n\r\n" + body.replace(b"\r\n", b" \r\n")
    assert changed != signed and published(changed)


def test_lf_messages_keep_their_line_endings_and_verify_as_sent_with_crlf(signer, published):
    data = rendered().replace(b"\r\n", b"\n")
    signed = signer.sign(data)
    assert b"\r" not in signed
    assert published(signed.replace(b"\n", b"\r\n"))


def test_the_key_is_loaded_once_for_the_campaign(home, published, signer):
    (home / "test-2048.pem").unlink()  # gone after the campaign started: every message still signs
    assert all(published(signer.sign(rendered())) for _ in range(3))


def test_a_key_that_other_users_can_read_is_refused(home):
    os.chmod(home / "test-2048.pem", 0o640)
    with pytest.raises(ConfigError) as err:
        Signer(DkimConfig("mail2026", "test-2048.pem"), DOMAIN, base_dir=home)
    assert f"chmod 600 {home / 'test-2048.pem'}" in err.value.message and "0640" in err.value.message


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "does not exist"),
        (b"not a key\n", "not an RSA private key"),
        ("test-512.pem", "512 bits"),
    ],
)
def test_unusable_keys_are_refused_in_one_sentence(home, content, words):
    path = home / "key.pem"
    if isinstance(content, bytes):
        path.write_bytes(content)
        os.chmod(path, 0o600)
    elif content:
        path = home / content
    with pytest.raises(ConfigError) as err:
        load_private_key(path)
    assert words in err.value.message


def test_a_1024_bit_key_still_signs(home, dns_server):
    signer = Signer(DkimConfig("old", "test-1024.pem"), DOMAIN, base_dir=home)
    dns_server.txt[f"old._domainkey.{DOMAIN}"] = signer.key.public_record()
    assert dkimpy.verify(signer.sign(rendered()), dnsfunc=dkim_dnsfunc(dns_server.resolver()))


def test_a_bad_selector_is_refused(home):
    with pytest.raises(ConfigError, match="selector"):
        Signer(DkimConfig("mail 2026", "test-2048.pem"), DOMAIN, base_dir=home)


def test_signer_for_follows_the_config(home):
    assert signer_for(EXAMPLE_CONFIG, home) is None  # the relay signs
    config = dataclasses.replace(EXAMPLE_CONFIG, dkim=DkimConfig("mail2026", "test-2048.pem"))
    signer = signer_for(config, home)
    assert signer.domain == DOMAIN.encode() and signer.key.path == home / "test-2048.pem"
    absolute = dataclasses.replace(EXAMPLE_CONFIG, dkim=DkimConfig("mail2026", str(home / "test-1024.pem")))
    assert signer_for(absolute, Path("/nonexistent")).key.bits == 1024


def test_dkim_selector_and_key_go_together_in_mailer_toml():
    with pytest.raises(ConfigError, match="selector and private_key_file go together"):
        parse_config(tomllib.loads('[dkim]\nselector = "mail2026"\n'), Path("mailer.toml"))
    config = parse_config(tomllib.loads('[dkim]\nselector = "mail2026"\nprivate_key_file = "dkim.pem"\n'), Path("mailer.toml"))
    assert config.dkim == DkimConfig("mail2026", "dkim.pem")


def test_a_campaign_sent_with_dkim_configured_arrives_signed(sending, dns_server):
    """Through the real command and the test SMTP server: every message verifies against the published key."""
    key = sending.home / "dkim.pem"
    shutil.copy(DATA / "dkim" / "test-2048.pem", key)
    os.chmod(key, 0o600)
    set_config(sending.home, "dkim", selector="mail2026", private_key_file="dkim.pem")
    signer = Signer(DkimConfig(selector="mail2026", private_key_file=str(key)), DOMAIN)
    dns_server.txt[f"mail2026._domainkey.{DOMAIN}"] = signer.key.public_record()
    result = sending.send(sending.content, "--limit", "3")
    assert result.exit_code == 0, result.stderr
    dnsfunc = dkim_dnsfunc(dns_server.resolver())
    assert len(sending.server.received) == 3
    for rec in sending.server.received:
        assert dkimpy.verify(rec.data, dnsfunc=dnsfunc), rec.rcpt_tos


def test_a_dkim_key_others_can_read_stops_the_send_before_anything_goes(sending):
    key = sending.home / "dkim.pem"
    shutil.copy(DATA / "dkim" / "test-2048.pem", key)
    os.chmod(key, 0o644)
    set_config(sending.home, "dkim", selector="mail2026", private_key_file="dkim.pem")
    result = sending.send(sending.content)
    assert result.exit_code == 2 and "chmod 600" in result.stderr
    assert sending.server.received == [] and sending.rows(None) == []
