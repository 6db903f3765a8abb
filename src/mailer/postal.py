"""Does a text look like a postal address? (CAN-SPAM wants one in every message.)"""

from __future__ import annotations

import re

# A street number and name ("1 Example Street", "221B Baker St", "Hauptstraße 5") or a PO box.
_STREET = re.compile(r"\b\d+[A-Za-z]?(?:[-/]\d+[A-Za-z]?)?\s+[^\W\d_]{2,}|[^\W\d_]{3,}\.?\s+\d+[A-Za-z]?\b")
_PO_BOX = re.compile(
    r"\b(?:P\.?\s*O\.?\s*Box|Post\s+Office\s+Box|Postfach|Apartado(?:\s+postal)?|Case\s+postale|Casilla)\s*\d+",
    re.IGNORECASE,
)
_POSTCODE = re.compile(
    r"\b\d{5}(?:-\d{4})?\b"  # US ZIP, ZIP+4; also Germany, France, Spain, Italy ...
    r"|\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b"  # UK
    r"|\b[A-Z]\d[A-Z]\s?\d[A-Z]\d\b"  # Canada
    r"|\b\d{4}\s?[A-Z]{2}\b"  # the Netherlands
    r"|\b\d{2,5}-\d{3,4}\b"  # Poland, Japan, Portugal, Brazil
    r"|\b\d{4}\b|\b\d{6}\b",  # Australia, Switzerland, Austria, Denmark ...; India, Singapore ...
    re.IGNORECASE,
)


def looks_like_postal_address(address: str) -> bool:
    """Does this look like a postal address: a street and number or a PO box, and a ZIP or postcode?

    Meant for `[practice] address` (CAN-SPAM wants a valid physical postal address in
    every message): "1 Example Street, Closter, NJ 07624", "PO Box 12, Closter NJ 07624",
    "10 Downing Street, London SW1A 2AA" and "Hauptstraße 5, 10115 Berlin" pass; "n/a",
    "TBD", "Closter" or a street without a postcode do not. The street's own number
    never counts as the postcode.
    """
    text = " ".join(address.split())
    place = _PO_BOX.search(text) or _STREET.search(text)
    if place is None:
        return False
    rest = text[: place.start()] + " , " + text[place.end():]
    return _POSTCODE.search(rest) is not None
