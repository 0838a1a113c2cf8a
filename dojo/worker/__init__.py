"""Everything that runs inside a Celery worker or beat process, and nothing else.

Imported by Celery in worker and beat processes (dojo/celery.py: ``include``) after Django is
set up; the web side never imports it. Importing it connects the signal handlers and
registers the remote-control commands and the project's tasks.
"""

from dojo.worker import bulk, commands, signals, startup, tasks  # noqa: F401
