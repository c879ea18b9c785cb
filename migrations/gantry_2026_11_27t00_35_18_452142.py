from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Integer
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-27T00:35:18:452142"
VERSION = "1.38.0"
DESCRIPTION = "log_chunk.newlines, for line numbers"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="gantry", description=DESCRIPTION
    )

    manager.add_column(
        table_class_name="LogChunk",
        tablename="log_chunk",
        column_name="newlines",
        db_column_name="newlines",
        column_class_name="Integer",
        column_class=Integer,
        params={
            "default": 0,
            "null": False,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    return manager
