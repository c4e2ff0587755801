"""Credentials inside URLs (``https://user:secret@host``, ``postgresql://u:p@h/db``) never printed or stored."""

from __future__ import annotations

import urllib.parse

MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with any user name and password replaced by ``***``; anything unparsable is returned unchanged
    only when it has no ``@`` in its authority (else it is masked whole, to be safe)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return MASK if "@" in url else url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))
