"""check_sender_dns: SPF, DMARC and DKIM of the From domain, asked of a real DNS server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest
from dkim.crypto import parse_pem_private_key

from mailer.config import EXAMPLE_CONFIG, Config, DkimConfig
from mailer.dkim import DkimKey, load_private_key
from mailer.dnscheck import SPF_LOOKUP_LIMIT, check_sender_dns, make_resolver

from .conftest import DATA

DOMAIN = "closter-acupuncture.example"
GOOGLE_SPF = {
    "_spf.google.com": "v=spf1 include:_netblocks.google.com include:_netblocks2.google.com include:_netblocks3.google.com ~all",
    "_netblocks.google.com": "v=spf1 ip4:35.190.247.0/24 ip4:64.233.160.0/19 ~all",
    "_netblocks2.google.com": "v=spf1 ip6:2001:4860:4000::/36 ~all",
    "_netblocks3.google.com": "v=spf1 ip4:172.217.32.0/20 ~all",
}
MAILGUN_SPF = {"mailgun.org": "v=spf1 include:_spf.mailgun.org ~all", "_spf.mailgun.org": "v=spf1 ip4:209.61.151.0/24 ~all"}
GOOD_DMARC = f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{DOMAIN}"


def config(host="smtp.gmail.com", from_email=f"news@{DOMAIN}", **smtp) -> Config:
    return dataclasses.replace(
        EXAMPLE_CONFIG,
        sender=dataclasses.replace(EXAMPLE_CONFIG.sender, from_email=from_email),
        smtp=dataclasses.replace(EXAMPLE_CONFIG.smtp, host=host, **smtp),
    )


def find(findings, record):
    [found] = [f for f in findings if f.record == record]
    return found


@pytest.fixture
def zone(dns_server):
    """The practice's domain set up right for Google Workspace; tests spoil one record at a time."""
    dns_server.txt.update(GOOGLE_SPF)
    dns_server.txt.update(MAILGUN_SPF)
    dns_server.txt[DOMAIN] = ["google-site-verification=abc123", "v=spf1 include:_spf.google.com ~all"]
    dns_server.txt[f"_dmarc.{DOMAIN}"] = GOOD_DMARC
    return dns_server


def check(zone, cfg=None, home=None):
    return check_sender_dns(cfg or config(), zone.resolver(), home=home)


def test_a_domain_set_up_for_its_relay_passes(zone):
    findings = check(zone)
    spf, dmarc = find(findings, "SPF"), find(findings, "DMARC")
    assert spf.level == "pass" and "_spf.google.com" in spf.verdict and "4 of 10" in spf.verdict
    assert spf.found == "v=spf1 include:_spf.google.com ~all" and spf.name == DOMAIN
    assert dmarc.level == "pass" and "p=quarantine" in dmarc.verdict
    # Workspace signs as google._domainkey; none is published in this zone.
    dkim = find(findings, "DKIM")
    assert dkim.level == "warning" and "google._domainkey." + DOMAIN in dkim.verdict


def test_no_spf_record_is_an_error_with_the_record_to_publish(zone):
    zone.txt[DOMAIN] = "google-site-verification=abc123"
    spf = find(check(zone), "SPF")
    assert spf.level == "error" and "no SPF record" in spf.verdict
    assert spf.publish == "v=spf1 include:_spf.google.com ~all"


def test_an_spf_record_without_the_relay_gets_it_added(zone):
    zone.txt[DOMAIN] = "v=spf1 include:mailgun.org -all"
    spf = find(check(zone), "SPF")
    assert spf.level == "error" and "does not include _spf.google.com" in spf.verdict
    assert spf.publish == "v=spf1 include:_spf.google.com include:mailgun.org -all"


def test_the_relay_found_through_a_nested_include_or_a_redirect(zone):
    zone.txt[DOMAIN] = "v=spf1 include:spf.host.example ~all"
    zone.txt["spf.host.example"] = "v=spf1 include:_spf.google.com include:mailgun.org ~all"
    assert find(check(zone), "SPF").level == "pass"
    zone.txt[DOMAIN] = "v=spf1 redirect=spf.host.example"
    spf = find(check(zone), "SPF")
    assert spf.level == "pass" and "7 of 10" in spf.verdict  # redirect, 2 includes, google's 3, mailgun's 1


def test_more_than_ten_lookups_is_an_error(zone):
    includes = []
    for i in range(6):
        zone.txt[f"s{i}.example"] = f"v=spf1 a mx ip4:192.0.2.{i} ~all"
        includes.append(f"include:s{i}.example")
    zone.txt[DOMAIN] = "v=spf1 include:_spf.google.com " + " ".join(includes) + " ~all"
    spf = find(check(zone), "SPF")
    assert spf.level == "error" and f"more than {SPF_LOOKUP_LIMIT} DNS lookups" in spf.verdict and "RFC 7208" in spf.verdict


def test_an_include_loop_ends(zone):
    zone.txt[DOMAIN] = "v=spf1 include:a.example include:_spf.google.com ~all"
    zone.txt["a.example"] = "v=spf1 include:b.example ~all"
    zone.txt["b.example"] = "v=spf1 include:a.example ~all"
    spf = find(check(zone), "SPF")
    assert spf.level == "pass" and "7 of 10" in spf.verdict  # a, b, a again (counted, not followed), google's 4
    assert zone.queries.count("a.example") == 1


def test_an_include_with_no_spf_record_is_an_error(zone):
    zone.txt[DOMAIN] = "v=spf1 include:_spf.google.com include:gone.example ~all"
    spf = find(check(zone), "SPF")
    assert spf.level == "error" and "include:gone.example has no SPF record" in spf.verdict


def test_two_spf_records_and_plus_all_are_errors(zone):
    zone.txt[DOMAIN] = ["v=spf1 include:_spf.google.com ~all", "v=spf1 include:mailgun.org ~all"]
    assert "2 SPF records" in find(check(zone), "SPF").verdict
    zone.txt[DOMAIN] = "v=spf1 include:_spf.google.com +all"
    spf = find(check(zone), "SPF")
    assert spf.level == "error" and "lets anyone send" in spf.verdict
    assert spf.publish == "v=spf1 include:_spf.google.com ~all"


def test_a_record_that_ends_without_all_is_a_warning(zone):
    zone.txt[DOMAIN] = "v=spf1 include:_spf.google.com"
    spf = find(check(zone), "SPF")
    assert spf.level == "warning" and spf.publish == "v=spf1 include:_spf.google.com ~all"


def test_an_unknown_relay_cannot_be_judged(zone):
    spf = find(check(zone, config(host="mail.closter-acupuncture.example")), "SPF")
    assert spf.level == "warning" and spf.verdict.startswith("Cannot tell")
    dkim = find(check(zone, config(host="mail.closter-acupuncture.example")), "DKIM")
    assert dkim.level == "info" and "Not checked" in dkim.verdict


def test_spf_is_judged_on_the_envelope_senders_domain(zone):
    zone.txt["bounces.example"] = "v=spf1 include:mailgun.org ~all"
    spf = find(check(zone, config(host="smtp.mailgun.org", envelope_from="b@bounces.example")), "SPF")
    assert spf.name == "bounces.example" and spf.level == "pass"


def test_no_dmarc_record_is_a_warning_with_one_to_publish(zone):
    del zone.txt[f"_dmarc.{DOMAIN}"]
    dmarc = find(check(zone), "DMARC")
    assert dmarc.level == "warning" and "no DMARC record" in dmarc.verdict
    assert dmarc.publish == f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{DOMAIN}"


@pytest.mark.parametrize(
    "record, level, words",
    [
        (f"v=DMARC1; p=none; rua=mailto:d@{DOMAIN}", "pass", "p=none"),
        ("v=DMARC1; p=reject", "warning", "no rua="),
        ("v=DMARC1; rua=mailto:d@x.example", "error", "no valid p="),
        ("v=DMARC1; p=maybe; rua=mailto:d@x.example", "error", "no valid p="),
    ],
)
def test_dmarc_policies(zone, record, level, words):
    zone.txt[f"_dmarc.{DOMAIN}"] = record
    dmarc = find(check(zone), "DMARC")
    assert dmarc.level == level and words in dmarc.verdict


def test_a_subdomain_sender_is_covered_by_its_parents_policy(zone):
    zone.txt[f"news.{DOMAIN}"] = "v=spf1 include:_spf.google.com ~all"
    zone.txt[f"_dmarc.{DOMAIN}"] = GOOD_DMARC + "; sp=reject"
    dmarc = find(check(zone, config(from_email=f"letters@news.{DOMAIN}")), "DMARC")
    assert dmarc.level == "pass" and "p=reject" in dmarc.verdict and f"the policy of {DOMAIN}" in dmarc.verdict


def published(name: str) -> str:
    """The DKIM TXT record of a test key (read without the mode check: it is the DNS side)."""
    key = parse_pem_private_key((DATA / "dkim" / name).read_bytes())
    return DkimKey(DATA / "dkim" / name, b"", key["modulus"], key["publicExponent"]).public_record()


def test_a_relays_known_selector_is_checked(zone):
    zone.txt[f"google._domainkey.{DOMAIN}"] = published("test-2048.pem")
    dkim = find(check(zone, config(host="smtp-relay.gmail.com")), "DKIM")
    assert dkim.level == "pass" and "2048 bits" in dkim.verdict and dkim.name == f"google._domainkey.{DOMAIN}"


@pytest.fixture
def dkim_home(tmp_path):
    for name in ("test-2048.pem", "test-1024.pem", "test-512.pem"):
        shutil.copy(DATA / "dkim" / name, tmp_path / name)
        os.chmod(tmp_path / name, 0o600)
    return tmp_path


def with_dkim(cfg: Config, key_file: str, selector: str = "mail2026") -> Config:
    return dataclasses.replace(cfg, dkim=DkimConfig(selector=selector, private_key_file=key_file))


def test_the_configured_dkim_key_published_right_passes(zone, dkim_home):
    key = load_private_key(dkim_home / "test-2048.pem")
    zone.txt[f"mail2026._domainkey.{DOMAIN}"] = key.public_record()
    dkim = find(check(zone, with_dkim(config(), "test-2048.pem"), home=dkim_home), "DKIM")
    assert dkim.level == "pass" and "2048 bits" in dkim.verdict and "test-2048.pem" in dkim.verdict
    assert dkim.name == f"mail2026._domainkey.{DOMAIN}"


def test_an_unpublished_dkim_key_shows_the_record_to_publish(zone, dkim_home):
    key = load_private_key(dkim_home / "test-2048.pem")
    dkim = find(check(zone, with_dkim(config(), "test-2048.pem"), home=dkim_home), "DKIM")
    assert dkim.level == "error" and "No DKIM key is published" in dkim.verdict
    assert dkim.publish == key.public_record() and dkim.publish.startswith("v=DKIM1; k=rsa; p=MIIB")


def test_a_published_key_that_is_not_ours_is_an_error(zone, dkim_home):
    zone.txt[f"mail2026._domainkey.{DOMAIN}"] = published("test-1024.pem")
    dkim = find(check(zone, with_dkim(config(), "test-2048.pem"), home=dkim_home), "DKIM")
    assert dkim.level == "error" and "not the public half" in dkim.verdict


def test_key_sizes(zone, dkim_home):
    cfg = with_dkim(config(), "test-1024.pem")
    zone.txt[f"mail2026._domainkey.{DOMAIN}"] = published("test-1024.pem")
    dkim = find(check(zone, cfg, home=dkim_home), "DKIM")
    assert dkim.level == "warning" and "1024 bits" in dkim.verdict and "2048" in dkim.verdict
    # A 512-bit key as published for a relay's own selector: receivers ignore it.
    zone.txt[f"google._domainkey.{DOMAIN}"] = published("test-512.pem")
    dkim = find(check(zone, config(host="smtp-relay.gmail.com")), "DKIM")
    assert dkim.level == "error" and "512 bits" in dkim.verdict and "under 1024" in dkim.verdict


def test_revoked_and_non_rsa_keys(zone):
    cfg = config(host="smtp-relay.gmail.com")
    zone.txt[f"google._domainkey.{DOMAIN}"] = "v=DKIM1; k=rsa; p="
    assert "revoked" in find(check(zone, cfg), "DKIM").verdict
    zone.txt[f"google._domainkey.{DOMAIN}"] = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    assert "not RSA" in find(check(zone, cfg), "DKIM").verdict
    zone.txt[f"google._domainkey.{DOMAIN}"] = "v=DKIM1; k=rsa; p=bm90IGEga2V5"
    assert find(check(zone, cfg), "DKIM").level == "error"


def test_a_key_file_others_can_read_is_reported(zone, dkim_home):
    os.chmod(dkim_home / "test-2048.pem", 0o644)
    dkim = find(check(zone, with_dkim(config(), "test-2048.pem"), home=dkim_home), "DKIM")
    assert dkim.level == "error" and "chmod 600" in dkim.verdict


def test_a_free_mail_from_through_another_relay_is_one_error_and_no_lookup(zone):
    findings = check(zone, config(host="email-smtp.us-east-1.amazonaws.com", from_email="closter.acu@gmail.com"))
    assert [f.record for f in findings] == ["From domain"]
    assert findings[0].level == "error" and "5.7.26" in findings[0].verdict and "own domain" in findings[0].verdict
    assert zone.queries == []


def test_a_free_mail_from_through_its_own_relay_is_not_ours_to_publish(zone):
    [finding] = check(zone, config(host="smtp.gmail.com", from_email="closter.acu@gmail.com"))
    assert finding.level == "pass" and "gmail.com" in finding.verdict
    assert zone.queries == []


def test_no_dns_answer_is_one_warning_that_says_dns_is_needed(zone):
    zone.silent = True
    findings = check_sender_dns(config(), zone.resolver(lifetime=0.3))
    assert [(f.record, f.level) for f in findings] == [("DNS", "warning")]
    assert "Cannot check: no DNS answer" in findings[0].verdict and "needs to reach a DNS server" in findings[0].verdict


def test_make_resolver_takes_ip_and_port():
    r = make_resolver("127.0.0.1:5353", timeout=1)
    assert [str(n) for n in r.nameservers] == ["127.0.0.1"] and r.port == 5353 and r.lifetime == 1
    assert make_resolver("[::1]:5300").port == 5300
    with pytest.raises(ValueError):
        make_resolver("not-an-address")


def test_the_missing_relay_is_named_before_a_broken_include(zone):
    zone.txt[DOMAIN] = "v=spf1 include:gone.example ~all"
    spf = find(check(zone), "SPF")
    assert "does not include _spf.google.com" in spf.verdict
    assert spf.publish == "v=spf1 include:_spf.google.com include:gone.example ~all"
    unknown = find(check(zone, config(host="mail.closter-acupuncture.example")), "SPF")
    assert unknown.level == "error" and "include:gone.example has no SPF record" in unknown.verdict
