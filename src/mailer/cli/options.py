"""Options that several commands share, defined once (their names and help are the contract)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (and nothing else there).")]
# Choosing people by tag (list, export); adding a tag (import, add) is worded apart.
TagFilterOpt = Annotated[
    Optional[list[str]], typer.Option("--tag", "-t", metavar="TAG", help="Only subscribers with this tag; repeatable.")
]

# How a send goes; the same keys, without the dashes, set the defaults in [sending] of mailer.toml.
BatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Messages per connection before a pause.", min=1)]
PauseOpt = Annotated[Optional[float], typer.Option("--pause", help="Seconds between batches.", min=0)]
RateOpt = Annotated[Optional[float], typer.Option("--rate", help="At most this many messages a minute.", min=0)]
PerDayOpt = Annotated[Optional[int], typer.Option("--per-day", help="At most this many messages a day.", min=0)]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Send at most this many now.", min=0)]
ConnectionsOpt = Annotated[
    Optional[int],
    typer.Option("--connections", help="SMTP connections at once (default 1; relays throttle).", min=1, max=20),
]
DryRunSendOpt = Annotated[bool, typer.Option("--dry-run", help="Write .eml files to outbox/; send and change nothing.")]
