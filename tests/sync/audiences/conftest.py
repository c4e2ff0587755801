"""The generated warehouse in each tested dialect, written once per module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cohortflow.sync.config import WorkspaceConfig
from cohortflow.sync.workspace import Workspace
from tests.support import fresh_database
from tests.sync.audiences.warehouse import Data, generate, workspace_doc, write_duckdb, write_postgres, write_sqlite


@dataclass
class AudienceWarehouse:
    dialect: str
    source: dict[str, Any]
    data: Data
    directory: Path

    def workspace(self, audiences: dict[str, Any] | None = None, **extra: Any) -> Workspace:
        """A workspace over this warehouse (validated like a loaded file), without writing it."""
        config = WorkspaceConfig.model_validate(workspace_doc(self.source, audiences, **extra))
        return Workspace(path=self.directory / "cohortflow.yaml", config=config, state_url="sqlite://")

    def write(self, audiences: dict[str, Any] | None = None, **extra: Any) -> Path:
        path = self.directory / "cohortflow.yaml"
        path.write_text(yaml.safe_dump(workspace_doc(self.source, audiences, **extra), sort_keys=False))
        return path


@pytest.fixture(scope="module", params=["duckdb", "sqlite", "postgres"])
def audience_wh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AudienceWarehouse]:
    dialect: str = request.param
    directory = tmp_path_factory.mktemp(f"audiences-{dialect}")
    data = generate()
    if dialect == "duckdb":
        yield AudienceWarehouse(dialect, write_duckdb(data, directory / "wh.duckdb"), data, directory)
    elif dialect == "sqlite":
        yield AudienceWarehouse(dialect, write_sqlite(data, directory / "wh.sqlite"), data, directory)
    else:
        with fresh_database("postgres", directory) as url:
            yield AudienceWarehouse(dialect, write_postgres(data, url), data, directory)
