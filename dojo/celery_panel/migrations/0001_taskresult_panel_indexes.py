"""Indexes on django_celery_results' table that serve the tasks page's queries.

Every list query orders by (date_done DESC, id DESC) and takes one page:
- all tasks: (date_done DESC, id DESC)
- a state filter: (status, date_done DESC, id DESC)
- a task name prefix: (task_name, date_done DESC, id DESC), with varchar_pattern_ops on
  PostgreSQL so that LIKE 'prefix%' can use it whatever the database collation.
Search by exact id uses the table's own unique index on task_id.
"""

from django.db import migrations

TABLE = "django_celery_results_taskresult"
INDEXES = {
    "celery_panel_tr_done_id": ("date_done DESC, id DESC", "date_done DESC, id DESC"),
    "celery_panel_tr_status_done": ("status, date_done DESC, id DESC", "status, date_done DESC, id DESC"),
    # (PostgreSQL columns, SQLite columns)
    "celery_panel_tr_name_done": (
        "task_name varchar_pattern_ops, date_done DESC, id DESC",
        "task_name, date_done DESC, id DESC",
    ),
}


def create_indexes(apps, schema_editor) -> None:
    postgres = schema_editor.connection.vendor == "postgresql"
    for name, (pg_columns, other_columns) in INDEXES.items():
        columns = pg_columns if postgres else other_columns
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {TABLE} ({columns})")


def drop_indexes(apps, schema_editor) -> None:
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("django_celery_results", "0014_alter_taskresult_status")]

    operations = [migrations.RunPython(create_indexes, drop_indexes, elidable=False)]
