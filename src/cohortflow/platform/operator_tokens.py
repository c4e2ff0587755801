"""Operator tokens: the credential of the platform-wide admin API (``/admin/...``).

Partner API keys are global, not a workspace's, so no workspace's REST API key may rotate them. An operator
token is created by the operator CLI (shell access to the platform is the root of trust), stored hashed like
every key, shown once, and sent as ``Authorization: Bearer``. Tokens are named (who or what holds them) and
revoked one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from cohortflow.keys import IssuedKey
from cohortflow.platform import key_store
from cohortflow.platform.errors import AuthenticationFailed, InvalidRequest
from cohortflow.platform.key_store import KeyInfo
from cohortflow.platform.store.schema import operator_tokens

OPERATOR_TOKEN_KIND = "cfop"
MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class Operator:
    """Who an admin request acts as: the token's id and name (for logs, never the token)."""

    token_id: int
    name: str


def create_operator_token(conn: Connection, name: str) -> tuple[KeyInfo, IssuedKey]:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or "\x00" in name:
        raise InvalidRequest(f"operator token name must be 1-{MAX_NAME_LENGTH} characters (who holds the token)")
    return key_store.insert_key(conn, operator_tokens, OPERATOR_TOKEN_KIND, name=name)


def list_operator_tokens(conn: Connection) -> list[KeyInfo]:
    return key_store.list_keys(conn, operator_tokens, [])


def revoke_operator_token(conn: Connection, key_ref: str) -> KeyInfo:
    row = key_store.live_key_by_ref(conn, operator_tokens, [], key_ref, "operator token")
    return key_store.end_key(conn, operator_tokens, int(row.id))


def authenticate_operator(conn: Connection, plain: str | None) -> Operator:
    """The live operator token ``plain`` is; records its use at most once a minute."""
    if not plain:
        raise AuthenticationFailed("Invalid operator token: missing Authorization: Bearer header")
    row = key_store.find_live(conn, operator_tokens, plain, operator_tokens.c.name)
    if row is None:
        raise AuthenticationFailed("Invalid operator token")
    key_store.touch_last_used(conn, operator_tokens, row)
    return Operator(token_id=int(row.id), name=str(row.name))
