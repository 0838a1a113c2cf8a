#!/usr/bin/env bash
# Run dojo on the embedded defaults: SQLite and the filesystem broker under var/, so no
# server has to be installed. Migrates, makes sure a superuser exists (password from
# DD_ADMIN_PASSWORD, or generated and printed once), then starts a Celery worker, beat, the
# event monitor (manage.py celery_monitor: every worker's events, for the processes table) and
# the web server on http://127.0.0.1:${DD_PORT:-8080}/. Ctrl-C stops all four.
#
# The web server is gunicorn with gunicorn.conf.py, as in production (static files by
# whitenoise, no collectstatic needed). Without a shared DD_CACHE_URL it runs one process
# (DD_WEB_THREADS threads), so the status cache is one for all requests; set DD_CACHE_URL
# to a redis:// URL for DD_WEB_WORKERS processes. `scripts/run.sh --dev` (or
# DD_DEV_SERVER=true) runs Django's development server instead.
set -euo pipefail
dev_server="${DD_DEV_SERVER:-false}"
case "${1:-}" in
  --dev) dev_server=true ;;
  "") ;;
  *) echo "usage: $0 [--dev]   (--dev: Django's development server instead of gunicorn)" >&2; exit 2 ;;
esac
. "$(dirname "$0")/bootstrap.sh" requirements.txt
mkdir -p var/log
if [ -z "${DD_SECRET_KEY:-}" ]; then  # made once, kept under var/ (the web server refuses the public dev key)
  [ -s var/secret_key ] || (umask 077 && python -c "import secrets; print(secrets.token_urlsafe(50))" > var/secret_key)
  DD_SECRET_KEY="$(cat var/secret_key)"
  export DD_SECRET_KEY
fi

python manage.py migrate --noinput -v 0
python manage.py ensure_superuser --username "${DD_ADMIN_USER:-admin}"

celery -A dojo worker -l info > var/log/celery-worker.log 2>&1 &
worker=$!
celery -A dojo beat -l info > var/log/celery-beat.log 2>&1 &
beat=$!
python manage.py celery_monitor > var/log/celery-monitor.log 2>&1 &
monitor=$!
trap 'kill $worker $beat $monitor 2>/dev/null; wait $worker $beat $monitor 2>/dev/null' EXIT
echo "Worker, beat and the event monitor log to var/log/. Open http://127.0.0.1:${DD_PORT:-8080}/system_settings"
if [ "$dev_server" = true ]; then
  python manage.py runserver --insecure --noreload "127.0.0.1:${DD_PORT:-8080}"
else
  if [ -z "${DD_CACHE_URL:-}" ]; then
    export DD_WEB_WORKERS="${DD_WEB_WORKERS:-1}"
  fi
  gunicorn dojo.wsgi:application
fi
