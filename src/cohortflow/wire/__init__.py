"""The partner cohort import contract, shared by the sender (sync) and the receiver (platform).

Both sides import the request models and the error messages from here so they cannot drift apart.
"""

from cohortflow.wire.cohort_import import (
    MAX_IDENTIFIERS_PER_REQUEST,
    MAX_PAYLOAD_BYTES,
    Alias,
    CohortChange,
    CohortListRequest,
    CohortListResponse,
    CohortNameRequest,
    CohortSummary,
    CohortUsersRequest,
    ImportCounts,
    ImportResponse,
    Messages,
)

__all__ = [
    "MAX_IDENTIFIERS_PER_REQUEST",
    "MAX_PAYLOAD_BYTES",
    "Alias",
    "CohortChange",
    "CohortListRequest",
    "CohortListResponse",
    "CohortNameRequest",
    "CohortSummary",
    "CohortUsersRequest",
    "ImportCounts",
    "ImportResponse",
    "Messages",
]
