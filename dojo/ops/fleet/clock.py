"""The database's clock, for liveness: a heartbeat's age is its database row's timestamp against
the database's now, read once per request, never the web server's clock, so a web server whose
clock is skewed (or several web servers that disagree) shows the same liveness as the others."""

from datetime import UTC, datetime

from django.db import connection
from django.utils import timezone


def database_now() -> datetime:
    """Now by the database's clock (one statement, bounded like every other by the database
    settings); raises DatabaseError when the database does not answer. A backend this does not
    know gives the web server's clock."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT STATEMENT_TIMESTAMP()")
            return cursor.fetchone()[0]
        if connection.vendor == "sqlite":  # SQLite's 'now' is UTC, with milliseconds
            cursor.execute("SELECT STRFTIME('%Y-%m-%d %H:%M:%f', 'now')")
            return datetime.fromisoformat(cursor.fetchone()[0]).replace(tzinfo=UTC)
    return timezone.now()
