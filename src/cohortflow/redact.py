"""Credentials inside URLs (``https://user:secret@host``, ``postgresql://u:p@h/db``) never printed or stored."""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"

# A URL with credentials inside free text: ``scheme://userinfo@``, greedy up to the authority's last "@" (passwords
# often hold an unencoded "@"), then the rest of the URL up to white space or a quote.
_URL_WITH_USERINFO = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s'\"]*@[^\s'\"]*")
_SECRET_NAME = re.compile(r"(secret|api_key|apikey|api-key|password|passwd|token|authorization|cookie|key$)", re.I)


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


def redact_urls(text: str) -> str:
    """``text`` (a message, a log field, a driver's error) with :func:`redact_url` applied to every URL in it."""
    return _URL_WITH_USERINFO.sub(lambda m: redact_url(m.group(0)), text)


def is_secret_name(name: str) -> bool:
    """Whether a field or header called ``name`` carries a credential (``client_secret``, ``Authorization``...)."""
    return bool(_SECRET_NAME.search(name))
