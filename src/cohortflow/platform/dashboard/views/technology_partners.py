"""Partner Integrations > Technology Partners: the partners, and one partner's REST endpoint and data import keys.

Admins only: these pages show and change keys.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

from cohortflow.keys import IssuedKey
from cohortflow.platform import import_keys, partners
from cohortflow.platform.dashboard.access import AdminOnly, WorkspacePage
from cohortflow.platform.errors import NotFound

router = APIRouter(prefix="/w/{workspace_id}/technology-partners")


@router.get("", response_class=HTMLResponse)
def partner_list(page: AdminOnly, q: str = "") -> HTMLResponse:
    needle = q.strip().lower()
    with page.transaction() as conn:
        rows = [
            (p, import_keys.partner_enabled(conn, page.workspace_id, p.id))
            for p in partners.list_partners(conn)
            if needle in p.name or needle in p.display_name.lower()
        ]
    return page.render("dashboard/technology_partners.html", {"partners": rows, "q": q})


def _partner_page(page: WorkspacePage, partner_name: str, new_key: IssuedKey | None = None) -> HTMLResponse:
    with page.transaction() as conn:
        partner = partners.get_partner(conn, partner_name)
        keys = import_keys.list_import_keys(conn, page.workspace_id, partner.name)
    return page.render(
        "dashboard/technology_partner.html",
        {
            "partner": partner,
            "keys": list(reversed(keys)),
            "live_keys": sum(1 for k in keys if k.active),
            "new_key": new_key,
            "rest_endpoint": page.runtime.settings.public_base_url.rstrip("/"),
            "replace_url": f"{page.kit.prefix(page.request)}/w/{page.workspace_id}/technology-partners/{partner.name}",
        },
        status_code=201 if new_key else 200,
    )


@router.get("/{partner_name}", response_class=HTMLResponse)
def partner_detail(page: AdminOnly, partner_name: str) -> HTMLResponse:
    return _partner_page(page, partner_name)


@router.post("/{partner_name}/keys", response_class=HTMLResponse)
def generate_key(page: AdminOnly, partner_name: str) -> HTMLResponse:
    # The answer shows the new key itself, never a redirect: the key exists in full only in this response.
    with page.transaction() as conn:
        _info, key = import_keys.create_import_key(conn, page.workspace_id, partner_name)
    return _partner_page(page, partner_name, new_key=key)


def _live_key(
    page: WorkspacePage, partner_name: str, key_id: int
) -> tuple[partners.Partner, import_keys.ImportKeyInfo]:
    with page.transaction() as conn:
        partner = partners.get_partner(conn, partner_name)
        keys = import_keys.list_import_keys(conn, page.workspace_id, partner.name, include_invalidated=False)
    for key in keys:
        if key.id == key_id:
            return partner, key
    raise NotFound(f"no live data import key {key_id} for {partner.display_name} in this workspace")


@router.get("/{partner_name}/keys/{key_id}/invalidate", response_class=HTMLResponse)
def confirm_invalidate(page: AdminOnly, partner_name: str, key_id: int) -> HTMLResponse:
    partner, key = _live_key(page, partner_name, key_id)
    return page.render("dashboard/confirm_invalidate.html", {"partner": partner, "key": key})


@router.post("/{partner_name}/keys/{key_id}/invalidate")
def invalidate_key(page: AdminOnly, partner_name: str, key_id: int) -> RedirectResponse:
    with page.transaction() as conn:
        info = import_keys.invalidate_import_key(conn, page.workspace_id, partner_name, str(key_id))
    return page.redirect(
        f"/technology-partners/{info.partner}",
        f"Key {info.masked_key} is invalidated: imports using it are refused from now on.",
    )
