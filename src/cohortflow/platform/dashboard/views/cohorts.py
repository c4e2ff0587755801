"""Cohorts: the cohorts technology partners imported into the workspace, and one cohort's import history."""

from __future__ import annotations

from itertools import groupby

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from cohortflow.platform import audit, cohorts, partners
from cohortflow.platform.dashboard.access import AnyRole
from cohortflow.platform.segments.service import segments_using_cohort

router = APIRouter(prefix="/w/{workspace_id}/cohorts")
IMPORTS_SHOWN = 20


@router.get("", response_class=HTMLResponse)
def cohort_list(page: AnyRole) -> HTMLResponse:
    with page.transaction() as conn:
        infos = cohorts.list_cohorts(conn, page.workspace_id)
        names = {p.name: p.display_name for p in partners.list_partners(conn)}
    ordered = sorted(infos, key=lambda c: (c.partner, c.name.lower()))
    by_partner = [(names.get(p, p), list(group)) for p, group in groupby(ordered, key=lambda c: c.partner)]
    return page.render("dashboard/cohorts.html", {"by_partner": by_partner})


@router.get("/{partner_name}/{cohort_id:path}", response_class=HTMLResponse)
def cohort_detail(page: AnyRole, partner_name: str, cohort_id: str) -> HTMLResponse:
    with page.transaction() as conn:
        partner = partners.get_partner(conn, partner_name)
        info = cohorts.get_cohort(conn, page.workspace_id, partner.name, cohort_id)
        imports = audit.recent_imports(conn, info.pk, limit=IMPORTS_SHOWN)
        used_by = segments_using_cohort(conn, page.workspace_id, partner.name, cohort_id)
    return page.render(
        "dashboard/cohort.html",
        {
            "partner": partner,
            "cohort": info,
            "imports": imports,
            "imports_shown": IMPORTS_SHOWN,
            "segments": used_by,
            "describe": audit.describe_identifier,
        },
    )
