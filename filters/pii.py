"""PII: e-mail and public IP address counts always; redaction with datatrove's ``PIIFormatter`` when the
recipe asks for it (applied to kept documents only)."""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1)
def _pii():
    from datatrove.pipeline.formatters import PIIFormatter

    return PIIFormatter()


# what every match needs: an e-mail address an "@", an IPv4 address a digit, a dot, a digit. Most pages have
# neither, and the cheap test spares them datatrove's patterns, which try every position (same counts)
_IP_HINT = re.compile(r"\d\.\d")


def pii_signals(text: str) -> dict:
    f = _pii()
    emails = len(f.emails_replacer.regex.findall(text)) if "@" in text else 0
    ips = sum(1 for m in f.ip_replacer.regex.finditer(text) if f.ip_replacer.validator(m.group(0))) if _IP_HINT.search(text) else 0
    return {"emails": emails, "ips": ips}


def redact(text: str, emails: bool, ips: bool) -> str:
    f = _pii()
    # the replacers cycle through their replacements; restart per document so output never depends on
    # which documents a worker saw before
    f.emails_replacer._replace_i = f.ip_replacer._replace_i = 0
    if emails:
        text = f.emails_replacer.replace(text)
    if ips:
        text = f.ip_replacer.replace(text)
    return text
