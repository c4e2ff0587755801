"""Issuing and checking secret keys (REST API keys, partner API keys, data import keys, app keys).

Keys are 32 random bytes (256 bits) from :mod:`secrets`, so a fast keyed hash is the right storage: a
slow password hash protects low-entropy passwords from guessing, which a 256-bit key does not need, and
would cost every API request tens of milliseconds. Only the SHA-256 digest is stored (looked up by
an index), and the comparison after lookup is constant-time. The plain key is returned once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

_PREFIX_LEN = 8


@dataclass(frozen=True, repr=False)
class IssuedKey:
    """A freshly issued key. ``repr`` hides the secret so it cannot leak into logs by accident."""

    plain: str
    digest: str
    display_prefix: str

    def __repr__(self) -> str:
        return f"IssuedKey(display_prefix={self.display_prefix!r})"


def hash_key(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def issue_key(kind: str) -> IssuedKey:
    """A new key such as ``cfdi_3kT...``; the kind prefix tells a human which key they hold."""
    plain = f"{kind}_{secrets.token_urlsafe(32)}"
    return IssuedKey(plain=plain, digest=hash_key(plain), display_prefix=plain[: len(kind) + 1 + _PREFIX_LEN])


def digests_match(stored: str, candidate: str) -> bool:
    return hmac.compare_digest(stored.encode(), candidate.encode())


def masked(display_prefix: str) -> str:
    return f"{display_prefix}…"
