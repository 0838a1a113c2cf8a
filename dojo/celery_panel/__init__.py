"""The Celery panel in the Django admin: pages served by swappable, read-only backends."""
