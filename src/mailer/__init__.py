"""mailer: a newsletter and mailing-list manager for a small practice."""

__version__ = "0.1.0"
