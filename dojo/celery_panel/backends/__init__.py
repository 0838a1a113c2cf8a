"""Backends serve the panel's pages; which class serves which page is set in DJ_CELERY_PANEL_SETTINGS."""
