"""What a table load returns and how a job is run: types shared by the per-table
skeleton (`loaders.pipeline`), the source engines (`loaders.engines`) and the
Redshift warehouse path, kept here so none of them imports another to get them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from loaders.exceptions import TableLoadFailed

Status = Literal["succeeded", "failed", "skipped"]
# Opens one new connection to a source or the warehouse: a psycopg2 connection for
# PostgreSQL and Redshift, the source engine's driver connection for other kinds.
ConnectFn = Callable[[], Any]


@dataclass
class TableResult:
    """The numbers of one table load."""

    source: str
    table: str
    mode: str
    batch_id: str
    status: Status = "succeeded"
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    reread: int = 0
    mark_before: datetime | None = None
    mark_after: datetime | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_s: float = 0.0
    # how long the source transaction was held (its snapshot and its read locks)
    source_held_s: float | None = None
    # incremental loads: 'proven', 'held: …', 'unproven: …' or 'off' (see
    # loaders.extract.plan_next_read)
    late_commit_safety: str | None = None
    # how rows streamed from the source: 'text', 'csv' or 'binary' (COPY formats)
    copy_format: str | None = None
    attempts: int = 1
    error: str | None = None
    error_class: str | None = None
    warnings: list[str] = field(default_factory=list)
    failure: TableLoadFailed | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"


@dataclass(frozen=True)
class LoadOptions:
    workers: int = 4
    retries: int = 5
    keep_going: bool = False
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    warehouse_type: Literal["postgres", "redshift"] = "postgres"
    s3_staging: str | None = None  # s3://bucket/prefix, for a Redshift warehouse
    iam_role: str | None = None  # the role Redshift's COPY reads S3 with
    # PostgreSQL → PostgreSQL streams in COPY's binary format where every type allows
    # (`loaders.source_postgres.PostgresSource.choose_format`); False: always text.
    binary_copy: bool = True


DEFAULT_OPTIONS = LoadOptions()


def new_batch_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def aware(value: datetime | None) -> datetime | None:
    """Cursor values of `timestamp without time zone` columns are taken as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
