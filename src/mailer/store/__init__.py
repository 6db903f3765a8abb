"""The SQLite store: the only package that speaks SQL.

`Store` holds the connection, transactions and migrations; what it keeps is reached
through `store.subscribers`, `store.campaigns` and `store.deliveries`, each changing
statuses only through the transitions of `mailer.lifecycle`.
"""

from .db import Store, translate_error
from .migrations import MIGRATIONS
from .subscribers import address_hash

__all__ = ["MIGRATIONS", "Store", "address_hash", "translate_error"]
