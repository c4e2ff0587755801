"""The workspace's global frequency caps: at most N messages per user per channel per period."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from cohortflow.platform.api.deps import RestWorkspace, Runtime
from cohortflow.platform.messaging import frequency
from cohortflow.platform.messaging.frequency import FrequencyCap

router = APIRouter(prefix="/messaging/frequency_caps", tags=["campaigns"])


class FrequencyCaps(BaseModel):
    model_config = ConfigDict(extra="forbid")

    caps: list[FrequencyCap] = Field(max_length=2, description="At most one per channel; empty removes every cap.")


@router.get("", summary="The workspace's frequency caps")
def get_caps(runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return {"caps": [c.model_dump() for c in frequency.list_caps(conn, workspace_id)]}


@router.put("", summary="Replace the workspace's frequency caps (campaigns and Canvases may ignore them)")
def put_caps(body: FrequencyCaps, runtime: Runtime, workspace_id: RestWorkspace) -> dict[str, Any]:
    with runtime.transaction() as conn:
        return {"caps": [c.model_dump() for c in frequency.set_caps(conn, workspace_id, body.caps)]}
