"""``cohortflow.yaml``: the workspace declared as code (sources, models, destinations, syncs).

The file is parsed with PyYAML's node API so every key keeps its line number; validation is Pydantic with
unknown keys rejected, and every error names the file, the line and the dotted key. ``${ENV_VAR}`` in any
string is replaced from the environment before validation so secrets stay out of the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from cohortflow.sync.audiences.config import AudienceConfig, AudienceRef, ParentConfig, PriorityListConfig
from cohortflow.sync.audiences.filters import FILTER_TYPES
from cohortflow.sync.audiences.validate import audience_problems
from cohortflow.sync.errors import ConfigError
from cohortflow.wire.cohort_import import MAX_COHORT_ID_LENGTH, MAX_COHORT_NAME_LENGTH

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Column names end up inside generated SQL, always quoted; refusing quotes keeps quoting trivially safe.
_COLUMN = r'^[^"\x00]+$'


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- sources


class DuckDBSource(_Strict):
    type: Literal["duckdb"]
    path: str = Field(description="Database file; ':memory:' is allowed but only useful in tests.")
    read_only: bool = True


class SQLiteSource(_Strict):
    type: Literal["sqlite"]
    path: str


class PostgresSource(_Strict):
    type: Literal["postgres"]
    url: SecretStr = Field(description="postgresql://user:pass@host:5432/db")


class SQLAlchemySource(_Strict):
    """Any other warehouse with a SQLAlchemy dialect (Snowflake, BigQuery, Redshift, ...): untested here."""

    type: Literal["sqlalchemy"]
    url: SecretStr


SourceConfig = Annotated[DuckDBSource | SQLiteSource | PostgresSource | SQLAlchemySource, Field(discriminator="type")]


# ---------------------------------------------------------------- models


class ModelConfig(_Strict):
    source: str
    sql: str | None = None
    table: str | None = None
    primary_key: Annotated[str, Field(pattern=_COLUMN)]
    batch_rows: int = Field(default=50_000, ge=1, description="Rows per Arrow batch read from the source.")

    @model_validator(mode="after")
    def _one_query(self) -> ModelConfig:
        if (self.sql is None) == (self.table is None):
            raise ValueError("a model needs exactly one of 'sql' or 'table'")
        return self


# ---------------------------------------------------------------- destinations


class RetryConfig(_Strict):
    max_attempts: int = Field(default=8, ge=1)
    initial_backoff_seconds: float = Field(default=0.5, ge=0)
    max_backoff_seconds: float = Field(default=60.0, ge=0)
    max_retry_after_seconds: float = Field(
        default=300.0, ge=0, description="A longer Retry-After fails the batch for this run instead of waiting."
    )


class _DeliveryTuning(_Strict):
    timeout_seconds: float = Field(default=30.0, gt=0)
    concurrency: int = Field(default=4, ge=1, le=64)
    rate_limit_per_hour: int = Field(default=250_000, ge=1)
    retry: RetryConfig = Field(default_factory=RetryConfig)


class BrazeCohortsDestination(_DeliveryTuning):
    """Braze's partner cohort import API (or our platform, which speaks it)."""

    type: Literal["braze_cohorts"]
    rest_endpoint: str
    partner: str = Field(description="The path segment: /partners/{partner}/...")
    partner_api_key: SecretStr
    data_import_key: SecretStr
    batch_size: int = Field(default=1_000, ge=1, le=1_000)


class BrazeUsersTrackDestination(_DeliveryTuning):
    """Real Braze without partner credentials: membership as a custom attribute through /users/track."""

    type: Literal["braze_users_track"]
    rest_endpoint: str
    rest_api_key: SecretStr
    batch_size: int = Field(default=75, ge=1, le=75)


DestinationConfig = Annotated[BrazeCohortsDestination | BrazeUsersTrackDestination, Field(discriminator="type")]


# ---------------------------------------------------------------- syncs


class AliasIdentifier(_Strict):
    name_column: Annotated[str, Field(pattern=_COLUMN)]
    label: str = Field(min_length=1)


class IdentifierChoice(_Strict):
    """Exactly one of the three: an external id column, an alias, or a device id column."""

    external_id: Annotated[str, Field(pattern=_COLUMN)] | None = None
    alias: AliasIdentifier | None = None
    device_id: Annotated[str, Field(pattern=_COLUMN)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> IdentifierChoice:
        if sum(x is not None for x in (self.external_id, self.alias, self.device_id)) != 1:
            raise ValueError("name exactly one of 'external_id', 'alias' or 'device_id'")
        return self


class IdentifierConfig(_Strict):
    """One identifier, or ``fallback``: an ordered list tried per row (first non-null wins)."""

    external_id: Annotated[str, Field(pattern=_COLUMN)] | None = None
    alias: AliasIdentifier | None = None
    device_id: Annotated[str, Field(pattern=_COLUMN)] | None = None
    fallback: list[IdentifierChoice] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> IdentifierConfig:
        if sum(x is not None for x in (self.external_id, self.alias, self.device_id, self.fallback)) != 1:
            raise ValueError("name exactly one of 'external_id', 'alias', 'device_id' or 'fallback'")
        return self

    def choices(self) -> list[IdentifierChoice]:
        if self.fallback is not None:
            return list(self.fallback)
        return [IdentifierChoice(external_id=self.external_id, alias=self.alias, device_id=self.device_id)]


class CreateCohort(_Strict):
    mode: Literal["create"]
    name: str = Field(min_length=1, max_length=MAX_COHORT_NAME_LENGTH)
    cohort_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_COHORT_ID_LENGTH,
        description="Override the id derived from the sync name (rarely needed).",
    )


class ExistingCohort(_Strict):
    mode: Literal["existing"]
    cohort_id: str = Field(min_length=1, max_length=MAX_COHORT_ID_LENGTH)


CohortConfig = Annotated[CreateCohort | ExistingCohort, Field(discriminator="mode")]


# ---------------------------------------------------------------- alerts


class WebhookChannel(_Strict):
    """An HTTP POST with a Slack-compatible body (a Slack incoming webhook URL works as it is)."""

    type: Literal["webhook"]
    url: SecretStr = Field(description="Secret: incoming webhook URLs carry their token (use ${VAR}).")


class EmailChannel(_Strict):
    """An e-mail over SMTP (COHORTFLOW_SYNC__SMTP_* settings)."""

    type: Literal["email"]
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(min_length=1)


AlertChannel = Annotated[WebhookChannel | EmailChannel, Field(discriminator="type")]


class AlertRules(_Strict):
    """When to alert; a sync's ``alerts:`` overrides, key by key, the workspace's ``alerts:`` (null turns one off)."""

    failed: bool | None = Field(default=None, description="A run failed (default true).")
    rejected_rows_percent: float | None = Field(
        default=None, ge=0, le=100, description="Rejected rows above this percentage of the model's rows."
    )
    no_success_hours: float | None = Field(default=None, gt=0, description="No successful run for this many hours.")
    recovery: bool | None = Field(default=None, description="Say so when an incident is over (default true).")
    notify: list[str] | None = Field(default=None, description="Channel names; an empty list silences the sync.")


class AlertsConfig(AlertRules):
    """The workspace's alert channels and default rules."""

    channels: dict[str, AlertChannel] = Field(default_factory=dict)


# ---------------------------------------------------------------- schedules


class ManualSchedule(_Strict):
    """Runs only when asked (CLI, API, web app)."""

    type: Literal["manual"]


class IntervalSchedule(_Strict):
    type: Literal["interval"]
    minutes: float = Field(gt=0, description="Every this many minutes (fractions allowed: 0.5 is 30 seconds).")


class CronSchedule(_Strict):
    type: Literal["cron"]
    expression: str = Field(description="Five-field cron expression, e.g. '0 6 * * 1-5'.")
    timezone: str = Field(default="UTC", description="IANA time zone the expression is read in.")

    @model_validator(mode="after")
    def _valid(self) -> CronSchedule:
        if len(self.expression.split()) != 5 or not croniter.is_valid(self.expression):
            raise ValueError(f"{self.expression!r} is not a five-field cron expression (e.g. '0 6 * * 1-5')")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r} (an IANA name such as Europe/Paris)") from exc
        return self


class AfterSchedule(_Strict):
    """Runs each time another sync's run succeeds (a sequence)."""

    type: Literal["after"]
    sync: str


ScheduleConfig = Annotated[
    ManualSchedule | IntervalSchedule | CronSchedule | AfterSchedule, Field(discriminator="type")
]


class SyncConfig(_Strict):
    model: str | None = None
    audience: AudienceRef | None = Field(default=None, description="Sync an audience instead of a model.")
    destination: str
    identifier: IdentifierConfig
    cohort: CohortConfig | None = None
    attribute: str | None = Field(
        default=None, min_length=1, description="braze_users_track only: the custom attribute that marks members."
    )
    on_row_removed: Literal["remove", "keep"] = "remove"
    quarantine_after_runs: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Runs in which the destination rejects an identifier before it is quarantined (not sent).",
    )
    schedule: ScheduleConfig = Field(default_factory=lambda: ManualSchedule(type="manual"))
    enabled: bool = Field(default=True, description="A disabled sync is never scheduled and cannot be triggered.")
    alerts: AlertRules | None = None

    @model_validator(mode="after")
    def _model_or_audience(self) -> SyncConfig:
        if (self.model is None) == (self.audience is None):
            raise ValueError("a sync needs exactly one of 'model' or 'audience'")
        return self


class WorkspaceConfig(_Strict):
    version: Literal[1] = 1
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)
    syncs: dict[str, SyncConfig] = Field(default_factory=dict)
    # Audiences (docs/audiences.md): the schema marketers pick from, their audiences, priority lists.
    parents: dict[str, ParentConfig] = Field(default_factory=dict)
    audiences: dict[str, AudienceConfig] = Field(default_factory=dict)
    priority_lists: dict[str, PriorityListConfig] = Field(default_factory=dict)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    @model_validator(mode="after")
    def _references(self) -> WorkspaceConfig:
        problems: list[tuple[tuple[str, ...], str]] = []
        channels = self.alerts.channels
        for where, rules in [(("alerts",), self.alerts)] + [
            (("syncs", n, "alerts"), s.alerts) for n, s in self.syncs.items() if s.alerts is not None
        ]:
            for channel in (rules.notify if rules is not None else None) or []:
                if channel not in channels:
                    known = ", ".join(sorted(channels)) or "none declared under alerts.channels"
                    problems.append(((*where, "notify"), f"unknown alert channel {channel!r} ({known})"))
        for name, model in self.models.items():
            if model.source not in self.sources:
                problems.append((("models", name, "source"), f"unknown source {model.source!r}"))
        for name, sync in self.syncs.items():
            if sync.model is not None and sync.model not in self.models:
                is_audience = sync.model in self.audiences
                hint = f"; {sync.model!r} is an audience: use 'audience: {sync.model}'" if is_audience else ""
                problems.append((("syncs", name, "model"), f"unknown model {sync.model!r}{hint}"))
            dest = self.destinations.get(sync.destination)
            if dest is None:
                problems.append((("syncs", name, "destination"), f"unknown destination {sync.destination!r}"))
            elif isinstance(dest, BrazeCohortsDestination):
                if sync.cohort is None:
                    problems.append((("syncs", name), "a braze_cohorts sync needs 'cohort'"))
                if sync.attribute is not None:
                    problems.append((("syncs", name, "attribute"), "only braze_users_track syncs take 'attribute'"))
            else:
                if sync.attribute is None:
                    problems.append((("syncs", name), "a braze_users_track sync needs 'attribute'"))
                if sync.cohort is not None:
                    problems.append(
                        (("syncs", name, "cohort"), "braze_users_track syncs take 'attribute', not 'cohort'")
                    )
                if all(c.device_id is not None for c in sync.identifier.choices()):
                    problems.append((("syncs", name, "identifier"), "/users/track cannot address users by device id"))
            if isinstance(sync.schedule, AfterSchedule):
                if sync.schedule.sync not in self.syncs:
                    problems.append((("syncs", name, "schedule", "sync"), f"unknown sync {sync.schedule.sync!r}"))
                elif _after_cycle(self.syncs, name):
                    problems.append((("syncs", name, "schedule", "sync"), "'after' schedules form a cycle"))
        problems.extend(audience_problems(self))
        if problems:
            raise _ReferenceErrors(problems)
        return self


def _after_cycle(syncs: Mapping[str, SyncConfig], start: str) -> bool:
    """Whether following ``after`` schedules from ``start`` comes back to it (a sequence that never ends)."""
    seen = {start}
    current = syncs[start].schedule
    while isinstance(current, AfterSchedule) and current.sync in syncs:
        if current.sync in seen:
            return current.sync == start
        seen.add(current.sync)
        current = syncs[current.sync].schedule
    return False


class _ReferenceErrors(ValueError):
    def __init__(self, problems: list[tuple[tuple[str, ...], str]]) -> None:
        super().__init__("; ".join(msg for _, msg in problems))
        self.problems = problems


# ---------------------------------------------------------------- loading


def _line_index(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_index(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, str(i)), out)


def _interpolate(value: Any, path: tuple[str, ...], env: Mapping[str, str], missing: list[tuple[str, ...]]) -> Any:
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                missing.append((*path, f"${{{name}}}"))
                return match.group(0)  # left as written: a deferred check reports it where it is used
            return env[name]

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, str(k)), env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, str(i)), env, missing) for i, v in enumerate(value)]
    return value


def _line_for(lines: dict[tuple[str, ...], int], loc: tuple[str, ...]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _unbuildable_line(root: yaml.Node | None) -> int:
    """The line of the first scalar under ``root`` that PyYAML cannot build (1 when none is found)."""
    pending = [root] if root is not None else []
    while pending:
        node = pending.pop(0)
        if isinstance(node, yaml.ScalarNode):
            try:
                yaml.SafeLoader("").construct_object(node)
            except ValueError:
                return node.start_mark.line + 1
        elif isinstance(node, yaml.MappingNode):
            pending.extend(part for pair in node.value for part in pair)
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
    return 1


def parse_workspace(
    text: str,
    file: str,
    env: Mapping[str, str] | None = None,
    *,
    deferred: dict[tuple[str, ...], str] | None = None,
) -> WorkspaceConfig:
    """Validate a workspace file's text; ``file`` only names it in errors.

    A ``${VAR}`` the environment lacks is an error, unless ``deferred`` is given: then the reference stays as
    written and ``deferred`` maps its dotted location to the error, for the code that uses that value to raise
    (so commands that never touch a destination's keys do not need them).
    """
    env = os.environ if env is None else env
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else {}
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{file}:{line}: invalid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: invalid YAML: {exc}") from exc
    except ValueError as exc:  # a scalar YAML types but cannot build, e.g. the date 2024-13-01
        raise ConfigError(f"{file}:{_unbuildable_line(node)}: invalid value: {exc}") from None
    lines: dict[tuple[str, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    if not isinstance(data, dict):
        raise ConfigError(f"{file}:1: the workspace file must be a mapping with sources, models, destinations, syncs")
    missing: list[tuple[str, ...]] = []
    data = _interpolate(data, (), env, missing)
    if missing:
        unset = {
            loc[:-1]: f"{file}:{_line_for(lines, loc[:-1])}: {'.'.join(loc[:-1])}: "
            f"environment variable {loc[-1]} is not set"
            for loc in missing
        }
        if deferred is None:
            raise ConfigError("\n".join(unset.values()))
        deferred.update(unset)
    try:
        return WorkspaceConfig.model_validate(data)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors(include_url=False):
            ctx_error = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_error, _ReferenceErrors):
                for loc, msg in ctx_error.problems:
                    msgs.append(f"{file}:{_line_for(lines, loc)}: {'.'.join(loc)}: {msg}")
                continue
            loc = tuple(str(p) for p in err["loc"])
            file_loc = _file_loc(lines, loc)
            where = ".".join(file_loc) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            msgs.append(f"{file}:{_line_for(lines, file_loc)}: {where}: {msg}")
        raise ConfigError("\n".join(msgs)) from None


def _file_loc(lines: dict[tuple[str, ...], int], loc: tuple[str, ...]) -> tuple[str, ...]:
    """Drop the union tags Pydantic puts into a location ("create", "duckdb"): they are not keys in the file."""
    kept: list[str] = []
    for part in loc:
        if part in _UNION_TAGS and (*kept, part) not in lines:
            continue
        kept.append(part)
    return tuple(kept)


_UNION_TAGS = frozenset(
    {
        "duckdb",
        "sqlite",
        "postgres",
        "sqlalchemy",
        "braze_cohorts",
        "braze_users_track",
        "create",
        "existing",
        "manual",
        "interval",
        "cron",
        "after",
        "webhook",
        "email",
    }
    | set(FILTER_TYPES)
)


def load_workspace_config(
    path: Path | str, env: Mapping[str, str] | None = None, *, deferred: dict[tuple[str, ...], str] | None = None
) -> WorkspaceConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the workspace file: {exc.strerror or exc}") from exc
    return parse_workspace(text, str(path), env, deferred=deferred)
