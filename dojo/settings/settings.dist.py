# Every knob of the project is a DD_ environment variable declared once below,
# with its cast, its default and what it does. Local overrides go in
# dojo/settings/local_settings.py (optional, not committed).
import json
import sys
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env(
    # Django's signing key. Without one, a development key is used and the web server (dojo/wsgi.py)
    # refuses to start unless DD_DEBUG is on; scripts/run.sh makes one once and keeps it under var/.
    DD_SECRET_KEY=(str, ""),
    # Send the session and CSRF cookies over HTTPS only (on behind TLS, as in docker-compose.yml).
    DD_SECURE_COOKIES=(bool, False),
    # Trust X-Forwarded-Proto: https from the reverse proxy that terminates TLS.
    DD_SECURE_PROXY_SSL_HEADER=(bool, False),
    # Redirect plain HTTP to HTTPS (the health probes and /metrics are exempt: they are called inside).
    DD_SECURE_SSL_REDIRECT=(bool, False),
    # HSTS max-age in seconds (with subdomains and preload); 0 = off.
    DD_SECURE_HSTS_SECONDS=(int, 0),
    # Debug pages and static serving by runserver; never on in production.
    DD_DEBUG=(bool, False),
    # Host names the web server answers to (comma separated).
    DD_ALLOWED_HOSTS=(list, ["localhost", "127.0.0.1", "[::1]"]),
    # Database URL; the default is a SQLite file under var/.
    DD_DATABASE_URL=(str, f"sqlite:///{VAR_DIR / 'dojo.sqlite3'}"),
    # Seconds to wait for a PostgreSQL connection (libpq's connect_timeout, which counts at least 2).
    DD_DATABASE_CONNECT_TIMEOUT=(int, 3),
    # The most seconds one PostgreSQL statement of a web process may run (statement_timeout); 0 = no limit.
    # Celery workers, beat and `manage.py migrate` have no limit.
    DD_DATABASE_STATEMENT_TIMEOUT=(float, 10.0),
    # Seconds a web process's write waits for the SQLite file's lock; workers, beat and migrate wait 20 s.
    DD_DATABASE_BUSY_TIMEOUT=(float, 5.0),
    # Time zone for the pages and Celery beat.
    DD_TIME_ZONE=(str, "UTC"),
    # Where collectstatic puts files for the production web server.
    DD_STATIC_ROOT=(str, str(BASE_DIR / "staticfiles")),
    # Django's cache (status document, single flight); use a shared one (redis://) with several web processes.
    DD_CACHE_URL=(str, "locmemcache://"),
    # The most seconds a call to a redis:// cache may take to connect or answer; past it the status is read uncached.
    DD_CACHE_TIMEOUT=(float, 1.0),
    # Turn the Celery integration off: the status API then answers {"enabled": false} and touches no broker.
    DD_CELERY_ENABLED=(bool, True),
    # Celery broker URL; the default is kombu's filesystem transport under var/.
    DD_CELERY_BROKER_URL=(str, "filesystem://localhost/"),
    # Broker transport options as JSON (Redis priority steps, key prefix, ...).
    DD_CELERY_BROKER_TRANSPORT_OPTIONS=(str, "{}"),
    # More brokers (the name says "backends" for compatibility) the pages and the API can switch to, as JSON
    # {alias: broker URL or {"broker_url": ..., "transport_options": {...}}}; the main broker above is "default".
    DD_CELERY_BACKENDS=(str, "{}"),
    # Turn every Celery control (purge, pause, retry, revoke, ...) off: 403, and no buttons.
    DD_CELERY_READ_ONLY=(bool, False),
    # The most seconds a queue's break down scans; past it the counts cover what was scanned.
    DD_CELERY_BREAKDOWN_SECONDS=(float, 10.0),
    # The most seconds one purge by task name works; past it, it answers complete=false and a second call goes on.
    DD_CELERY_PURGE_TASK_SECONDS=(float, 10.0),
    # Celery result backend; django-db stores results in the project's database.
    DD_CELERY_RESULT_BACKEND=(str, "django-db"),
    # The queues workers consume and the API may purge; the first is the default queue.
    DD_CELERY_QUEUES=(list, ["celery"]),
    # Seconds before a running task is killed; 0 turns the limit off.
    DD_CELERY_TASK_TIME_LIMIT=(int, 43200),
    # Seconds before a running task gets SoftTimeLimitExceeded; 0 turns it off.
    DD_CELERY_TASK_SOFT_TIME_LIMIT=(int, 0),
    # Seconds after its ETA (or its publishing, without one) that a task expires unless it sets its own; 0 = never.
    DD_CELERY_TASK_DEFAULT_EXPIRES=(int, 43200),
    # Seconds a revoke lasts: stored, loaded by starting workers, kept by every worker (Celery's own: 3 h).
    DD_CELERY_REVOKE_WINDOW=(int, 604800),
    # Seconds of a concurrency slot's lease; a live run renews it every third of that, a dead one frees it then.
    DD_CELERY_SLOT_LEASE_SECONDS=(float, 30.0),
    # The longest wait (seconds) between the tries of a run blocked on a concurrency limit (1 s, doubling).
    DD_CELERY_SLOT_WAIT_MAX_SECONDS=(float, 30.0),
    # The most seconds any broker call made by the web process may take.
    DD_CELERY_BROKER_TIMEOUT=(float, 2.0),
    # Seconds the status document is cached; 0 reads the broker on every request.
    DD_CELERY_STATUS_CACHE_SECONDS=(int, 5),
    # The most tasks of each list (active, reserved, scheduled) the status document keeps per worker; counts stay exact.
    DD_CELERY_STATUS_MAX_TASKS_PER_WORKER=(int, 100),
    # Fewer live workers than this: not ready (health probe 503, CLI exit 1) and an alert.
    DD_CELERY_MIN_WORKERS=(int, 1),
    # A queue holding more ready messages than this raises an alert; 0 = never.
    DD_CELERY_QUEUE_ALERT_LENGTH=(int, 1000),
    # Days of recorded status history kept.
    DD_CELERY_HISTORY_DAYS=(int, 7),
    # Bearer token accepted by /metrics besides superusers' DRF tokens; empty = DRF tokens only.
    DD_METRICS_TOKEN=(str, ""),
    # Requests per user to the expensive Celery endpoints (status, tasks, history), DRF rate syntax.
    DD_CELERY_API_THROTTLE_RATE=(str, "120/min"),
    # Requests per user to the Celery controls (purge, pause, retry, revoke, ...), refusals included.
    DD_CELERY_CONTROL_THROTTLE_RATE=(str, "60/min"),
    # Seconds between runs of the broker clean-up task scheduled by beat.
    DD_CELERY_PRUNE_BROKER_INTERVAL=(int, 300),
    # Hours a worker that stopped answering is still listed as offline in the admin's Celery panel.
    DD_CELERY_WORKER_OFFLINE_HOURS=(int, 24),
    # Beat's scheduler class; the default keeps the schedule (and each entry's last run) in the database.
    DD_CELERY_BEAT_SCHEDULER=(str, "django_celery_beat.schedulers:DatabaseScheduler"),
    # The event monitor (manage.py celery_monitor): task events kept in memory per backend (oldest dropped first).
    DD_CELERY_MONITOR_MAX_TASKS=(int, 10000),
    # The event monitor: workers kept in memory per backend (the one heard from least recently dropped first).
    DD_CELERY_MONITOR_MAX_WORKERS=(int, 2000),
    # The event monitor re-sends enable_events to every worker this often, seconds; 0 = never (never when read only).
    DD_CELERY_MONITOR_ENABLE_EVENTS_SECONDS=(float, 5.0),
    # Enqueue a registered task (the panel's and the API's apply): the JSON args and kwargs at most this many bytes.
    DD_CELERY_APPLY_MAX_BYTES=(int, 65536),
    # Task analytics (rollups of task events written by the event monitor): minute rows kept, hours.
    DD_ANALYTICS_MINUTE_HOURS=(int, 48),
    # Task analytics: hour rows kept, days.
    DD_ANALYTICS_HOUR_DAYS=(int, 90),
    # Task analytics: how often the monitor writes its rollups (one transaction each), seconds.
    DD_ANALYTICS_FLUSH_SECONDS=(float, 5.0),
    # Task analytics: tasks tracked in memory between their received and terminal events (oldest dropped first).
    DD_ANALYTICS_MAX_TRACKED_TASKS=(int, 100000),
    # Lost tasks: seconds after its worker went away that a started task with no terminal event is lost.
    DD_ANALYTICS_LOST_GRACE_SECONDS=(float, 30.0),
    # "Running far longer than usual": an active task past this many times its own 24 h p95 runtime.
    DD_ANALYTICS_SLOW_FACTOR=(float, 3.0),
    # "Failure rate up": a task name failing more than this % over 15 minutes, and more than its own 24 h rate.
    DD_ANALYTICS_FAILURE_RATE_PERCENT=(float, 10.0),
    # "Periodic task late": seconds past an entry's interval before its next send is late.
    DD_ANALYTICS_PERIODIC_GRACE_SECONDS=(float, 60.0),
    # /metrics: label the task series by worker hostname too (hostnames churn: high cardinality).
    DD_ANALYTICS_METRICS_BY_WORKER=(bool, False),
    # Bulk operations: how much the matched set may grow between preview and start, % of the confirmed count.
    DD_BULK_GROWTH_PERCENT=(float, 0.0),
    # Bulk operations: stored results acted on per batch (one transaction each).
    DD_BULK_BATCH_SIZE=(int, 500),
    # Bulk operations: seconds the runner pauses between batches, so the broker and the database keep serving.
    DD_BULK_BATCH_PAUSE_SECONDS=(float, 0.2),
    # Bulk operations: a running one not updated for this many seconds is resumed by beat (its runner died).
    DD_BULK_STALE_SECONDS=(float, 60.0),
    # Bulk operations: per-item failures kept per operation (the rest are only counted).
    DD_BULK_MAX_FAILURES=(int, 1000),
    # Bulk operations: the queue their runner task is sent to; blank = the default queue.
    DD_BULK_QUEUE=(str, ""),
    # Bulk revoke/purge: seconds a preview reads the queue at most (longer: refused with 503, nothing done).
    DD_BULK_SCAN_SECONDS=(float, 10.0),
)

# --- Django core ---------------------------------------------------------
DEV_SECRET_KEY = "dev-only-insecure-key-change-me"  # never accepted by the web server without DD_DEBUG
SECRET_KEY = env("DD_SECRET_KEY") or DEV_SECRET_KEY
DEBUG = env("DD_DEBUG")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env("DD_SECURE_COOKIES")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env("DD_SECURE_PROXY_SSL_HEADER") else None
SECURE_SSL_REDIRECT = env("DD_SECURE_SSL_REDIRECT")
SECURE_REDIRECT_EXEMPT = [r"^api/v2/celery/health/", r"^metrics$"]
SECURE_HSTS_SECONDS = env("DD_SECURE_HSTS_SECONDS")
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
ALLOWED_HOSTS = env("DD_ALLOWED_HOSTS")
DATABASES = {"default": env.db_url_config(env("DD_DATABASE_URL"))}
# Celery's own processes and migrations may run long statements and queue behind each other's
# writes; a web request (and the CLI) must answer within its bound instead.
_LONG_RUNNING = "celery" in (Path(sys.argv[0]).name, Path(sys.argv[0]).parent.name) or sys.argv[1:2] == ["migrate"]
DATABASE_CONNECT_TIMEOUT = env("DD_DATABASE_CONNECT_TIMEOUT")
DATABASE_STATEMENT_TIMEOUT = 0.0 if _LONG_RUNNING else env("DD_DATABASE_STATEMENT_TIMEOUT")
DATABASE_BUSY_TIMEOUT = 20.0 if _LONG_RUNNING else env("DD_DATABASE_BUSY_TIMEOUT")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web processes and workers (heartbeats, pauses, results) write to the one file at once:
    # WAL lets readers go on, IMMEDIATE takes the write lock up front, and a writer waits up to
    # DATABASE_BUSY_TIMEOUT for it (a status read then goes on without the seen-workers record).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=DATABASE_BUSY_TIMEOUT, transaction_mode="IMMEDIATE", init_command="PRAGMA journal_mode=WAL;"
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Without these a PostgreSQL that stops answering holds a request (and the status read) forever.
    _pg_options = DATABASES["default"].setdefault("OPTIONS", {})
    _pg_options.setdefault("connect_timeout", DATABASE_CONNECT_TIMEOUT)
    if DATABASE_STATEMENT_TIMEOUT:
        _statement_ms = int(DATABASE_STATEMENT_TIMEOUT * 1000)
        _pg_options["options"] = f"{_pg_options.get('options', '')} -c statement_timeout={_statement_ms}".strip()
CACHES = {"default": env.cache_url_config(env("DD_CACHE_URL"))}
CACHE_TIMEOUT = env("DD_CACHE_TIMEOUT")
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # Django hands OPTIONS to redis-py's ConnectionPool.from_url: every connection gets these
    # socket timeouts (redis-py's defaults wait forever) and no retry.
    CACHES["default"].setdefault("OPTIONS", {}).update(
        socket_connect_timeout=CACHE_TIMEOUT, socket_timeout=CACHE_TIMEOUT
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
TIME_ZONE = env("DD_TIME_ZONE")
USE_TZ = True
LANGUAGE_CODE = "en-us"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "django_celery_beat",
    "dojo",
    "dojo.celery_panel",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "dojo.urls"
WSGI_APPLICATION = "dojo.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The project's templates first, so dojo/templates/admin/index.html extends the admin's own.
        "DIRS": [BASE_DIR / "dojo" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dojo.context_processors.system_settings",
            ],
        },
    },
]

STATIC_URL = "static/"
STATIC_ROOT = env("DD_STATIC_ROOT")
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)
# whitenoise serves collected files in production, and the apps' own files when not collected.
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "system_settings"
LOGOUT_REDIRECT_URL = "login"

# --- REST API ------------------------------------------------------------
# Token first, so an anonymous request gets 401 with a WWW-Authenticate header.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["dojo.permissions.IsSuperUser"],
    "DEFAULT_SCHEMA_CLASS": "dojo.api_v2.schema.ErrorsAutoSchema",  # documents every error answer
    "DEFAULT_RENDERER_CLASSES": ["dojo.api_v2.renderers.JSONRenderer"],
    # One error body for every refusal; a database that does not answer is a 503, never an HTML 500.
    "EXCEPTION_HANDLER": "dojo.api_v2.exceptions.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "celery": env("DD_CELERY_API_THROTTLE_RATE"),
        "celery_controls": env("DD_CELERY_CONTROL_THROTTLE_RATE"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "dojo API",
    "DESCRIPTION": "Celery operations: status of workers and broker, queue purge.",
    "VERSION": "2.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v2",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
}

# --- Celery --------------------------------------------------------------
# Read by dojo/celery.py (namespace CELERY_) and, at call time, by dojo/ops.
CELERY_ENABLED = env("DD_CELERY_ENABLED")
CELERY_BROKER_URL = env("DD_CELERY_BROKER_URL")
CELERY_BROKER_TRANSPORT_OPTIONS = json.loads(env("DD_CELERY_BROKER_TRANSPORT_OPTIONS"))
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The embedded broker: producers, workers and the web process share these folders.
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "data"),
        "data_folder_out": str(_broker_dir / "data"),
        "control_folder": str(_broker_dir / "control"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        "polling_interval": 0.1,
        **CELERY_BROKER_TRANSPORT_OPTIONS,
    }
    for _key in ("data_folder_in", "data_folder_out", "control_folder", "processed_folder"):
        Path(CELERY_BROKER_TRANSPORT_OPTIONS[_key]).mkdir(parents=True, exist_ok=True)
CELERY_BACKENDS = {
    alias: spec if isinstance(spec, dict) else {"broker_url": spec}
    for alias, spec in json.loads(env("DD_CELERY_BACKENDS")).items()
}
# Not a Celery setting: turns off every control in the API and on the pages.
CELERY_READ_ONLY = env("DD_CELERY_READ_ONLY")
CELERY_BREAKDOWN_SECONDS = env("DD_CELERY_BREAKDOWN_SECONDS")
CELERY_PURGE_TASK_SECONDS = env("DD_CELERY_PURGE_TASK_SECONDS")
CELERY_RESULT_BACKEND = env("DD_CELERY_RESULT_BACKEND")
CELERY_RESULT_EXTENDED = True
CELERY_TASK_TRACK_STARTED = True
# Every publish of the project's (web, workers' retries, beat) sends a task-sent event: the event
# monitor's analytics take the task's queue and publish time from it (the publish -> start wait).
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Queues: the first name is the default queue; each gets its own direct exchange.
CELERY_QUEUE_NAMES = env("DD_CELERY_QUEUES")
CELERY_TASK_DEFAULT_QUEUE = CELERY_QUEUE_NAMES[0]
CELERY_TASK_QUEUES = {name: {"exchange": name, "routing_key": name} for name in CELERY_QUEUE_NAMES}
# Limits: 0 in the environment means off (None for Celery).
CELERY_TASK_TIME_LIMIT = env("DD_CELERY_TASK_TIME_LIMIT") or None
CELERY_TASK_SOFT_TIME_LIMIT = env("DD_CELERY_TASK_SOFT_TIME_LIMIT") or None
# Not a Celery setting: applied to every published task by dojo.publishing.apply_default_expires.
CELERY_TASK_DEFAULT_EXPIRES = env("DD_CELERY_TASK_DEFAULT_EXPIRES") or None
# Not a Celery setting: how long a revoke lasts (dojo.ops.controls.revocations, dojo.worker.startup).
CELERY_REVOKE_WINDOW = env("DD_CELERY_REVOKE_WINDOW")
# Not Celery settings: concurrency limits (dojo.worker.concurrency): the slot lease and the waiters' longest wait.
CELERY_SLOT_LEASE_SECONDS = env("DD_CELERY_SLOT_LEASE_SECONDS")
CELERY_SLOT_WAIT_MAX_SECONDS = env("DD_CELERY_SLOT_WAIT_MAX_SECONDS")
# Not a Celery setting: the bound on every broker call made by the web process.
CELERY_BROKER_TIMEOUT = env("DD_CELERY_BROKER_TIMEOUT")
# Not Celery settings: the status document, its alerts and history, and the metrics endpoint.
CELERY_STATUS_CACHE_SECONDS = env("DD_CELERY_STATUS_CACHE_SECONDS")
CELERY_STATUS_MAX_TASKS_PER_WORKER = env("DD_CELERY_STATUS_MAX_TASKS_PER_WORKER")
CELERY_MIN_WORKERS = env("DD_CELERY_MIN_WORKERS")
CELERY_QUEUE_ALERT_LENGTH = env("DD_CELERY_QUEUE_ALERT_LENGTH")
CELERY_HISTORY_DAYS = env("DD_CELERY_HISTORY_DAYS")
METRICS_TOKEN = env("DD_METRICS_TOKEN")
# Not a Celery setting: how long the admin's Celery panel lists a silent worker as offline.
CELERY_WORKER_OFFLINE_HOURS = env("DD_CELERY_WORKER_OFFLINE_HOURS")
# Not Celery settings: the event monitor's memory caps and how often it asks workers for task events.
CELERY_MONITOR_MAX_TASKS = env("DD_CELERY_MONITOR_MAX_TASKS")
CELERY_MONITOR_MAX_WORKERS = env("DD_CELERY_MONITOR_MAX_WORKERS")
CELERY_MONITOR_ENABLE_EVENTS_SECONDS = env("DD_CELERY_MONITOR_ENABLE_EVENTS_SECONDS")
CELERY_APPLY_MAX_BYTES = env("DD_CELERY_APPLY_MAX_BYTES")
# Not Celery settings: task analytics and detection (dojo.ops.observe.rollups, dojo.ops.read_models.analytics).
ANALYTICS_MINUTE_HOURS = env("DD_ANALYTICS_MINUTE_HOURS")
ANALYTICS_HOUR_DAYS = env("DD_ANALYTICS_HOUR_DAYS")
ANALYTICS_FLUSH_SECONDS = env("DD_ANALYTICS_FLUSH_SECONDS")
ANALYTICS_MAX_TRACKED_TASKS = env("DD_ANALYTICS_MAX_TRACKED_TASKS")
ANALYTICS_LOST_GRACE_SECONDS = env("DD_ANALYTICS_LOST_GRACE_SECONDS")
ANALYTICS_SLOW_FACTOR = env("DD_ANALYTICS_SLOW_FACTOR")
ANALYTICS_FAILURE_RATE_PERCENT = env("DD_ANALYTICS_FAILURE_RATE_PERCENT")
ANALYTICS_PERIODIC_GRACE_SECONDS = env("DD_ANALYTICS_PERIODIC_GRACE_SECONDS")
ANALYTICS_METRICS_BY_WORKER = env("DD_ANALYTICS_METRICS_BY_WORKER")
# Not Celery settings: bulk operations over a filter (dojo.ops.controls.bulk).
BULK_GROWTH_PERCENT = env("DD_BULK_GROWTH_PERCENT")
BULK_BATCH_SIZE = env("DD_BULK_BATCH_SIZE")
BULK_BATCH_PAUSE_SECONDS = env("DD_BULK_BATCH_PAUSE_SECONDS")
BULK_STALE_SECONDS = env("DD_BULK_STALE_SECONDS")
BULK_MAX_FAILURES = env("DD_BULK_MAX_FAILURES")
BULK_QUEUE = env("DD_BULK_QUEUE")
BULK_SCAN_SECONDS = env("DD_BULK_SCAN_SECONDS")
# Beat: django-celery-beat's DatabaseScheduler adds CELERY_BEAT_SCHEDULE to the entries edited in the admin.
CELERY_BEAT_SCHEDULER = env("DD_CELERY_BEAT_SCHEDULER")
# Write an entry's last run right after each send (one small UPDATE), not every 3 minutes, so
# the dashboard's "last run" and "next run" are current.
CELERY_BEAT_SYNC_EVERY = 1
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "record-celery-snapshot": {"task": "dojo.tasks.record_celery_snapshot", "schedule": 60.0},
    "prune-broker-files": {
        "task": "dojo.tasks.prune_broker_files",
        "schedule": env("DD_CELERY_PRUNE_BROKER_INTERVAL"),
    },
    # Task analytics: minute and hour rollups past DD_ANALYTICS_MINUTE_HOURS / _HOUR_DAYS.
    "prune-analytics": {"task": "dojo.tasks.prune_analytics", "schedule": 600.0},
    # Bulk operations whose runner died (no update for DD_BULK_STALE_SECONDS) are sent to a runner again.
    "resume-bulk-operations": {"task": "dojo.tasks.resume_bulk_operations", "schedule": 60.0},
}

# --- Logging -------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
