from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from cohortflow.platform.api.deps import Runtime

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health, summary="Liveness and database reachability")
def healthz(runtime: Runtime) -> Health:
    with runtime.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return Health(status="ok")
