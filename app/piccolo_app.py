"""The Piccolo app that owns every Gantry table; its migrations live in the top-level folder."""

from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

import migrations
from app.access.tables import Role
from app.audit.tables import AuditEvent
from app.auth.tables import ApiToken, SignInAttempt, User, WebSession
from app.backends.tables import Backend, RunnerSession
from app.logs.tables import LogChunk
from app.pools.tables import Pool
from app.workflows.tables import (
    SubmissionRate,
    Task,
    TaskEvent,
    TaskGroup,
    Workflow,
    WorkflowCounter,
)

TABLES = [
    User,
    ApiToken,
    Pool,
    Backend,
    RunnerSession,
    WorkflowCounter,
    Workflow,
    TaskGroup,
    Task,
    TaskEvent,
    LogChunk,
    SubmissionRate,
    WebSession,
    SignInAttempt,
    Role,
    AuditEvent,
]

APP_CONFIG = AppConfig(
    app_name="gantry",
    migrations_folder_path=str(Path(migrations.__file__).parent),
    table_classes=TABLES,
    migration_dependencies=[],
    commands=[],
)
