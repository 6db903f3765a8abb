"""`python -m mailer` runs the command line."""

from .cli import main

main()
