"""The start page is the list of syncs, as in Hightouch."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from cohortflow.sync.webapp.access import AnyRole

router = APIRouter()


@router.get("/")
def home(page: AnyRole) -> RedirectResponse:
    return page.redirect("/syncs")
