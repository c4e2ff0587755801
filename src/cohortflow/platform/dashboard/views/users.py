"""Users: find a profile by external ID, user alias, device ID, Braze ID or email address, and show it whole:
identities, attributes, cohorts, events, purchases and the messages the user received."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from cohortflow.platform import user_profiles
from cohortflow.platform.dashboard.access import AnyRole
from cohortflow.platform.errors import InvalidRequest

router = APIRouter(prefix="/w/{workspace_id}/users")


@router.get("", response_class=HTMLResponse)
def search(page: AnyRole, by: str = "external_id", q: str | None = None, label: str = "") -> Response:
    by = by if by in user_profiles.SEARCH_BY else "external_id"
    context = {
        "by": by,
        "q": q or "",
        "label": label,
        "search_by": user_profiles.SEARCH_BY,
        "results": None,
        "error": None,
    }
    if q is None:
        return page.render("dashboard/users.html", context)
    try:
        with page.transaction() as conn:
            found = user_profiles.find_users(conn, page.workspace_id, by, q, label)
            results = user_profiles.summaries(conn, page.workspace_id, found)
    except InvalidRequest as exc:
        message = exc.message[:1].upper() + exc.message[1:] + "."
        return page.render("dashboard/users.html", {**context, "error": message}, status_code=400)
    if len(results) == 1 and results[0].braze_id:
        return page.redirect(f"/users/{results[0].braze_id}")
    return page.render("dashboard/users.html", {**context, "results": results})


@router.get("/{braze_id}", response_class=HTMLResponse)
def profile(page: AnyRole, braze_id: str) -> HTMLResponse:
    with page.transaction() as conn:
        found = user_profiles.get_profile(conn, page.workspace_id, braze_id)
    return page.render("dashboard/user.html", {"profile": found, "user_record": found.user})
