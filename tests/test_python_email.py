"""CVE-2024-6923: older Pythons' email package can be led to write an injected header.

mailer writes every outgoing header itself (mailer.render.mime), so the affected code is
never on the send path; this test keeps it that way, and cron --check names the risk.
"""

from __future__ import annotations

import ast
import email.errors
from pathlib import Path

SRC = Path(__file__).parent.parent / "src" / "mailer"


def test_no_outgoing_mail_is_written_by_the_email_package():
    offenders = []
    for path in SRC.rglob("*.py"):
        if "inbox" in path.parts:  # the mailbox loop only parses what comes in
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("email"):
                names = {a.name for a in node.names}
                if names & {"EmailMessage", "Message", "generator", "BytesGenerator", "Generator", "policy", "message"}:
                    offenders.append(f"{path.name}: from {node.module} import {', '.join(sorted(names))}")
            if isinstance(node, ast.Attribute) and node.attr in ("as_bytes", "as_string", "fold_binary"):
                offenders.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert offenders == []


def test_cron_check_names_a_python_without_the_fix(mailer):
    result = mailer("cron", "--check")
    said = "CVE-2024-6923" in result.stderr
    assert said == (not hasattr(email.errors, "HeaderWriteError"))
