"""User profiles as the dashboard's *Users* page shows them: found by an identifier, then the whole profile
(identities, attributes, cohorts, events, purchases) and the messages the user received.

Lookups are the identity rules' own (:mod:`cohortflow.platform.identity`); the profile is the users API's export
(:func:`cohortflow.platform.user_export.export_users`), so the page and ``/users/export/ids`` never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from cohortflow.platform import identity
from cohortflow.platform.errors import InvalidRequest, NotFound
from cohortflow.platform.messaging.history import ReceivedMessage, received_messages
from cohortflow.platform.partners import list_partners
from cohortflow.platform.user_export import ExportedUser, export_users

# What a user can be found by, as Braze's user search names it.
SEARCH_BY: dict[str, str] = {
    "external_id": "External ID",
    "alias": "User alias",
    "device_id": "Device ID",
    "braze_id": "Braze ID",
    "email": "Email address",
}


@dataclass(frozen=True)
class Profile:
    user: ExportedUser
    partner_labels: dict[str, str]  # partner name -> "Hightouch"
    messages: list[ReceivedMessage]

    @property
    def identified(self) -> bool:
        return self.user.external_id is not None


def find_users(conn: Connection, workspace_id: str, by: str, value: str, alias_label: str = "") -> list[int]:
    """Users of the workspace matching one identifier (an email address may name several); none is an empty list."""
    value = value.strip()
    if by not in SEARCH_BY:
        raise InvalidRequest(f"search by one of: {', '.join(SEARCH_BY.values())}")
    if not value or (by == "alias" and not alias_label.strip()):
        raise InvalidRequest(
            "enter the alias label and the alias name" if by == "alias" else "enter a value to search for"
        )
    if by == "email":
        return identity.find_by_email(conn, workspace_id, value)
    if by == "alias":
        found = identity.find_by_alias(conn, workspace_id, identity.AliasKey(alias_label.strip(), value))
    elif by == "device_id":
        found = identity.find_by_device(conn, workspace_id, value)
    elif by == "braze_id":
        found = identity.find_by_braze_id(conn, workspace_id, value)
    else:
        found = identity.find_by_external_id(conn, workspace_id, value)
    return [] if found is None else [int(found)]


def get_profile(conn: Connection, workspace_id: str, braze_id: str, *, messages: int = 50) -> Profile:
    """The profile of the workspace's user ``braze_id`` (another workspace's user does not exist here)."""
    user_id = identity.find_by_braze_id(conn, workspace_id, braze_id)
    if user_id is None:
        raise NotFound(f"no user with Braze ID {braze_id!r} in this workspace")
    (user,) = export_users(conn, workspace_id, [int(user_id)])
    labels = {p.name: p.display_name for p in list_partners(conn)}
    return Profile(user, labels, received_messages(conn, workspace_id, int(user_id), limit=messages))


def summaries(conn: Connection, workspace_id: str, user_ids: list[int]) -> list[ExportedUser]:
    """Several users at once, for a list of search results."""
    return export_users(conn, workspace_id, user_ids)
