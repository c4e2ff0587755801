"""``cohortflow platform rest-key|app-key|operator-token ...`` and ``partner keys|rotate-key|revoke-key``.

Each key kind has the same three verbs: create (or rotate), list (masked), revoke (by id or masked prefix). The
commands call the domain functions the HTTP key API calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from cohortflow.keys import IssuedKey
from cohortflow.platform import operator_tokens, partners, workspaces
from cohortflow.platform.cli_common import (
    emit,
    json_option,
    resolve_workspace,
    table,
    transaction,
    when,
    workspace_option,
)
from cohortflow.platform.key_store import KeyInfo


def key_payload(info: KeyInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "masked_key": info.masked_key,
        "name": info.name,
        "created_at": info.created_at,
        "last_used_at": info.last_used_at,
        "revoked_at": info.revoked_at,
        "state": info.state,
    }


def _emit_list(as_json: bool, infos: list[KeyInfo], empty: str) -> None:
    rows = [
        [
            i.id,
            i.masked_key,
            i.name or "-",
            when(i.created_at),
            when(i.last_used_at),
            "active" if i.active else f"revoked {when(i.revoked_at)}",
        ]
        for i in infos
    ]
    human = table(["ID", "KEY", "NAME", "CREATED", "LAST USED", "STATE"], rows) if infos else empty
    emit(as_json, [key_payload(i) for i in infos], human)


def _emit_new(as_json: bool, info: KeyInfo, key: IssuedKey, title: str, label: str, usage: str) -> None:
    human = "\n".join(
        [
            f"{title} {info.id} ({info.masked_key})",
            f"  {label}  {key.plain}",
            f"The key is stored hashed and shown only now: {usage}",
        ]
    )
    emit(as_json, {**key_payload(info), "key": key.plain}, human)


def _emit_revoked(as_json: bool, info: KeyInfo, what: str) -> None:
    emit(as_json, key_payload(info), f"Revoked {what} {info.id} ({info.masked_key}): 401 from its next request on.")


name_option = click.option("--name", default="", help="What the key is for (shown in listings).")


def _workspace_key_group(
    group_name: str,
    what: str,
    create: Callable[..., tuple[KeyInfo, IssuedKey]],
    list_: Callable[..., list[KeyInfo]],
    revoke: Callable[..., KeyInfo],
    usage: str,
) -> click.Group:
    """The create / list / revoke commands of one workspace key kind (REST API keys, app keys)."""

    @click.group(group_name, help=f"A workspace's {what}s: create (shown once), list (masked), revoke.")
    def group() -> None:
        pass

    @group.command("create", help=f"Create a {what}; other keys stay active. Prints the key (shown once).")
    @workspace_option
    @name_option
    @json_option
    def create_cmd(workspace_ref: str, name: str, as_json: bool) -> None:
        with transaction() as conn:
            info, key = create(conn, resolve_workspace(conn, workspace_ref), name)
        _emit_new(as_json, info, key, f"Created {what}", what, usage)

    @group.command("list", help=f"List {what}s (masked), with when each was created and last used, and its state.")
    @workspace_option
    @json_option
    def list_cmd(workspace_ref: str, as_json: bool) -> None:
        with transaction() as conn:
            infos = list_(conn, resolve_workspace(conn, workspace_ref))
        _emit_list(as_json, infos, f"No {what}s.")

    @group.command("revoke", help=f"Revoke a {what}, named by its id or masked prefix.")
    @workspace_option
    @click.argument("key_ref")
    @json_option
    def revoke_cmd(workspace_ref: str, key_ref: str, as_json: bool) -> None:
        with transaction() as conn:
            info = revoke(conn, resolve_workspace(conn, workspace_ref), key_ref)
        _emit_revoked(as_json, info, what)

    return group


rest_key_group = _workspace_key_group(
    "rest-key",
    "REST API key",
    workspaces.create_rest_api_key,
    workspaces.list_rest_api_keys,
    workspaces.revoke_rest_api_key,
    "send it as Authorization: Bearer.",
)
app_key_group = _workspace_key_group(
    "app-key",
    "app key",
    workspaces.create_app_key,
    workspaces.list_app_keys,
    workspaces.revoke_app_key,
    "ship it in the app as the SDK's api_key; older app keys keep working until revoked.",
)


# --- partner API keys ------------------------------------------------------------------------------------


def register_partner_key_commands(partner_group: click.Group) -> None:
    @partner_group.command("keys")
    @click.argument("name")
    @json_option
    def partner_keys(name: str, as_json: bool) -> None:
        """List a partner's API keys (masked), with last use and state."""
        with transaction() as conn:
            infos = partners.list_partner_keys(conn, name)
        _emit_list(as_json, infos, "No partner API keys.")

    @partner_group.command("rotate-key")
    @click.argument("name")
    @json_option
    def partner_rotate_key(name: str, as_json: bool) -> None:
        """Issue a new partner API key (shown once); the current key keeps working until revoke-key."""
        with transaction() as conn:
            info, key = partners.rotate_partner_key(conn, name)
        usage = f"give it to the partner, then `cohortflow platform partner revoke-key {name} OLD_KEY`."
        _emit_new(as_json, info, key, f"New partner API key for {name!r}:", "partner API key", usage)

    @partner_group.command("revoke-key")
    @click.argument("name")
    @click.argument("key_ref")
    @json_option
    def partner_revoke_key(name: str, key_ref: str, as_json: bool) -> None:
        """Revoke one of a partner's API keys (by id or masked prefix); not its last live one."""
        with transaction() as conn:
            info = partners.revoke_partner_key(conn, name, key_ref)
        _emit_revoked(as_json, info, "partner API key")


# --- operator tokens --------------------------------------------------------------------------------------


@click.group("operator-token")
def operator_token_group() -> None:
    """Operator tokens for the admin HTTP API (/admin/..., e.g. partner key rotation)."""


@operator_token_group.command("create")
@click.argument("name")
@json_option
def operator_token_create(name: str, as_json: bool) -> None:
    """Create an operator token named NAME (who holds it); prints it (shown once)."""
    with transaction() as conn:
        info, key = operator_tokens.create_operator_token(conn, name)
    _emit_new(as_json, info, key, "Created operator token", "operator token", "send it as Authorization: Bearer.")


@operator_token_group.command("list")
@json_option
def operator_token_list(as_json: bool) -> None:
    """List operator tokens (masked)."""
    with transaction() as conn:
        infos = operator_tokens.list_operator_tokens(conn)
    _emit_list(as_json, infos, "No operator tokens.")


@operator_token_group.command("revoke")
@click.argument("key_ref")
@json_option
def operator_token_revoke(key_ref: str, as_json: bool) -> None:
    """Revoke an operator token by id or masked prefix."""
    with transaction() as conn:
        info = operator_tokens.revoke_operator_token(conn, key_ref)
    _emit_revoked(as_json, info, "operator token")
