"""Letters and templates run in a sandbox: no way from {{ }} to the environment, files or processes.

Each escape route is tried in a content file and in a workspace template, through
compile_campaign and through the real `mailer preview` and `mailer send --dry-run`.
Every attempt must stop with a TemplateError (exit 2) that names file:line and says
the construct is not allowed, and nothing of the environment may reach a message.
"""

from __future__ import annotations

import pytest

from mailer.errors import TemplateError

from .conftest import REPO
from .test_render import EXAMPLES, JANE, TEMPLATES, renderer

SECRET_VALUE = "hunter2-smtp-password"

# Each one would print the environment, run a command, or reach Python's internals.
ESCAPES = [
    '{{ lipsum.__globals__.os.environ.get("MAILER_SMTP_PASSWORD") }}',
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ joiner.__init__.__globals__.os.environ }}",
    "{{ namespace.__init__.__globals__.os.environ }}",
    "{{ range.__globals__ }}",
    "{{ range.__self__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ first_name.__class__.__base__.__subclasses__() }}",
    "{{ practice.__class__ }}",
    "{{ practice.__dict__ }}",
    "{{ practice.__init__.__globals__ }}",
    "{{ offers[0].details_html.__class__ }}",
    "{{ offers[0].valid_until.__class__.__mro__ }}",
    "{{ practice | attr('__class__') }}",
    "{{ practice | attr('__init__') | attr('__globals__') }}",
    "{{ offers | map(attribute='__class__') | list }}",
    "{{ offers | map('attr', '__class__') | list }}",
    "{{ offers | selectattr('__class__') | list }}",
    "{{ offers | sort(attribute='__class__.__mro__') | list }}",
    '{{ "{0.__class__.__mro__}".format(first_name) }}',
    '{{ "{0.__init__.__globals__}".format(practice) }}',
    '{{ "{x.__class__}".format_map({"x": practice}) }}',
    "{{ '{0.__class__}'|attr('format')(practice) }}",
    "{{ '%s' | format(practice.__class__) }}",
    "{{ body_html._template.environment }}",
    "{{ intro_html._context }}",
    "{{ (sections or [intro_html])[0].__class__ }}",
    "{% set x = offers.append(1) %}{{ x }}",
    "{% set d = {} %}{{ d.update(a=1) }}",
    "{{ practice.__dict__ | default('x') }}",
    "{{ first_name.__class__ is defined }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ 'x' * 1000000000 }}",
    "{{ 9 ** 999999 }}",
    "{{ ((9 ** 999) ** 999) ** 999 }}",
    "{% for i in range(10**9) %}{% endfor %}",
]


def letter(expression: str) -> str:
    return f"---\nsubject: Hi\ntemplate: specials\noffers:\n  - title: A\n    details: B\n---\nHello,\n\n{expression}\n"


@pytest.mark.parametrize("expression", ESCAPES)
def test_an_escape_in_a_letter_is_refused_naming_the_line(expression, monkeypatch):
    monkeypatch.setenv("MAILER_SMTP_PASSWORD", SECRET_VALUE)
    with pytest.raises(TemplateError) as info:
        renderer(letter(expression))
    message = info.value.message
    assert message.startswith("letter.md:10: "), message
    assert SECRET_VALUE not in message and "environ" not in message.replace(expression, "")
    assert "not allowed in letters" in message or "undefined" in message or "no field" in message or "there is no" in message, message


@pytest.mark.parametrize("expression", [e for e in ESCAPES if "__" in e or "_template" in e or "_context" in e
                                        or "append" in e or "update" in e])
def test_internals_are_refused_with_a_sentence_saying_so(expression):
    with pytest.raises(TemplateError, match="not allowed in letters and templates"):
        renderer(letter(expression))


@pytest.mark.parametrize("expression", ["{{ lipsum() }}", "{{ cycler(1, 2).next() }}", "{{ joiner() }}", "{{ dict(a=1) }}"])
def test_jinjas_python_helpers_are_not_there(expression):
    with pytest.raises(TemplateError, match=r"^letter.md:10: .*(lipsum|cycler|joiner|dict)"):
        renderer(letter(expression))


@pytest.mark.parametrize("expression", ESCAPES[:20])
def test_an_escape_in_a_template_is_refused_naming_the_template_line(expression):
    templates = dict(TEMPLATES)
    source = templates["specials.txt.j2"].replace("{{ body_text }}", "{{ body_text }}\n" + expression)
    templates["specials.txt.j2"] = source
    line = source.splitlines().index(expression) + 1
    with pytest.raises(TemplateError) as info:
        renderer(letter("x"), templates=templates)
    assert info.value.message.startswith(f"specials.txt.j2:{line}: "), info.value.message


@pytest.mark.parametrize("tag", ['{% include "base.txt.j2" %}', '{% import "base.html.j2" as b %}',
                                 '{% from "base.html.j2" import x %}', '{% extends "base.txt.j2" %}'])
def test_a_letter_cannot_load_templates(tag):
    with pytest.raises(TemplateError, match=r"^letter.md:10: \{% (include|import|from \.\.\. import|extends) %\} is not allowed in letters"):
        renderer(letter(tag))


def test_a_template_that_includes_itself_is_an_error_not_a_crash():
    templates = dict(TEMPLATES)
    templates["specials.txt.j2"] = '{% include "specials.txt.j2" %}\n'
    with pytest.raises(TemplateError, match=r"^specials.txt.j2:1: the template includes or calls itself without end"):
        renderer(letter("x"), templates=templates)


def test_what_a_letter_may_do_still_works():
    m = renderer(letter(
        "{% set ns = namespace(n=0) %}{% for o in offers %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }} offer,"
        " {{ practice | attr('name') }}, {{ offers | map(attribute='title') | join('+') }},"
        " {{ '%s!' | format(first_name) }} {{ '{}?'.format(last_name) }} {{ '-' * 3 }} {{ range(3) | list | length }}"
    )).render(JANE)
    assert "1 offer, Closter Acupuncture, A, Jane! Doe? --- 3" in " ".join(m.text.split())


# -- through the commands a user runs ------------------------------------------------------


def test_preview_of_a_letter_that_reads_the_password_stops_and_prints_nothing_of_it(mailer, tmp_path):
    path = tmp_path / "letter.md"
    path.write_text(letter('{{ lipsum.__globals__.os.environ.get("MAILER_SMTP_PASSWORD") }}'))
    result = mailer("preview", path, "--format", "eml", env={"MAILER_SMTP_PASSWORD": SECRET_VALUE})
    assert result.exit_code == 2
    assert result.stderr.startswith("error: letter.md:10: ")
    assert SECRET_VALUE not in result.output and result.stdout == ""


def test_preview_runs_no_command(mailer, tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "letter.md"
    path.write_text(letter(f"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}"))
    result = mailer("preview", path)
    assert result.exit_code == 2 and not marker.exists()
    path.write_text(letter(f"{{{{ ''.__class__.__mro__[1].__subclasses__() }}}} {marker}"))
    result = mailer("preview", path)
    assert result.exit_code == 2
    assert "error: letter.md:10: '__class__' is not allowed in letters and templates" in result.stderr


def test_a_workspace_template_cannot_reach_the_environment(mailer):
    (mailer.home / "templates" / "specials.txt.j2").write_text(
        "{{ body_text }}\n{{ practice.address }} {{ unsubscribe_url }}\n"
        "{{ self.__init__.__globals__['os'].environ['MAILER_SMTP_PASSWORD'] }}\n"
    )
    result = mailer("preview", EXAMPLES / "december-specials.md", env={"MAILER_SMTP_PASSWORD": SECRET_VALUE})
    assert result.exit_code == 2
    assert "error: specials.txt.j2:3: '__init__' is not allowed in letters and templates" in result.stderr
    assert SECRET_VALUE not in result.output


def test_send_dry_run_of_a_hostile_letter_writes_no_message(mailer, tmp_path):
    assert mailer("subscribers", "add", "mary@example.com", "--first-name", "Mary").exit_code == 0
    path = tmp_path / "letter.md"
    path.write_text(letter("{{ offers | map(attribute='__class__') | list }}"))
    result = mailer("send", path, "--dry-run", env={"MAILER_SMTP_PASSWORD": SECRET_VALUE})
    assert result.exit_code == 2
    assert "letter.md:10: '__class__' is not allowed in letters and templates" in result.output
    assert SECRET_VALUE not in result.output
    outbox = mailer.home / "outbox"
    assert not outbox.exists() or not list(outbox.rglob("*.eml"))


def test_check_says_what_the_sandbox_refuses(mailer, tmp_path):
    result = mailer("check", EXAMPLES / "december-specials.md")
    assert "pass\tsandbox\tLetters and templates run in a sandbox: names that start with _" in result.stdout
    path = tmp_path / "letter.md"
    path.write_text(letter("{{ practice.__dict__ }}"))
    result = mailer("check", path)
    assert result.exit_code == 2
    assert "error\ttemplates\tletter.md:10: '__dict__' is not allowed in letters and templates" in result.stdout


@pytest.mark.parametrize("expression", [
    "{{ 'x'|center(200000000) }}",
    "{{ '%0200000000d'|format(1) }}",
    "{{ '%*d'|format(200000000, 1) }}",
    "{{ 'x'.ljust(200000000) }}",
    "{{ '{:>200000000}'.format(1) }}",
    "{{ 'x'|indent(200000000, true) }}",
])
def test_a_huge_width_is_refused_before_it_is_built(expression):
    with pytest.raises(TemplateError, match=r"^letter.md:10: .*not allowed"):
        renderer(letter(expression))


def test_a_letter_that_loops_without_end_is_stopped(monkeypatch):
    import mailer.render.compile as compile_module

    monkeypatch.setattr(compile_module, "PROBE_SECONDS", 0.5)
    nested = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError, match="took more than 0.5 seconds"):
        renderer(letter(nested))


def test_a_letter_that_loops_without_end_for_one_person_fails_that_person_only(mailer, tmp_path, monkeypatch):
    """`check` renders samples; a loop that runs away only for one subscriber is stopped at send time."""
    import mailer.send as send_module

    monkeypatch.setattr(send_module, "RENDER_SECONDS", 0.5)
    for who in ("ann", "priya", "zoe"):
        assert mailer("subscribers", "add", f"{who}@example.com").exit_code == 0
    nested = "{% if email.startswith('priya') %}{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}{% endif %}"
    path = tmp_path / "letter.md"
    path.write_text(letter(nested))
    assert mailer("check", path).exit_code == 0  # the samples render at once
    result = mailer("send", path, "--dry-run")
    assert result.exit_code == 1, result.stderr
    assert "priya@example.com: failed (rendering the message for this person took too long" in result.stderr
    written = sorted(p.name.split("-", 1)[1] for p in (mailer.home / "outbox").rglob("*.eml"))
    assert written == ["ann@example.com.eml", "zoe@example.com.eml"]


def test_subscriber_data_cannot_be_printed_as_html():
    with pytest.raises(TemplateError, match=r"^letter.md:10: the safe filter is not allowed"):
        renderer(letter("{{ first_name | safe }}"))


def test_a_template_that_is_a_link_to_another_file_is_refused(mailer, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the key to everything")
    (mailer.home / "templates" / "news.txt.j2").symlink_to(secret)
    result = mailer("preview", REPO / "examples" / "monthly-news.md", "--format", "text", "-o", "-")
    assert result.exit_code == 2 and "symbolic link" in result.stderr
    assert "the key to everything" not in result.stdout
