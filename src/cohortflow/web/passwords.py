"""Password hashing with Argon2id (argon2-cffi), the one place that knows the algorithm and its parameters."""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 12

_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verifying an unknown account's password against this keeps a failed login as slow as a wrong password,
    so response times do not tell which e-mail addresses have an account. Made on first use, not at import:
    hashing costs 0.2-0.4 s of CPU that every process importing the web kit paid, logins or not."""
    return _hasher.hash("cohortflow-no-such-account")


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password must be at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> tuple[bool, str | None]:
    """Whether ``password`` matches; on a match whose hash uses outdated parameters, also a fresh hash to store."""
    try:
        _hasher.verify(stored_hash or _dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    if stored_hash is None:
        return False, None
    return True, (_hasher.hash(password) if _hasher.check_needs_rehash(stored_hash) else None)
