#!/usr/bin/env bash
# Run dojo on the embedded defaults: SQLite and the filesystem broker under var/, so no
# server has to be installed. Migrates, makes sure a superuser exists (password from
# DD_ADMIN_PASSWORD, or generated and printed once), then starts a Celery worker, beat
# and the web server on http://127.0.0.1:${DD_PORT:-8080}/. Ctrl-C stops all three.
set -euo pipefail
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
trap 'kill $worker $beat 2>/dev/null; wait $worker $beat 2>/dev/null' EXIT
echo "Worker and beat log to var/log/. Open http://127.0.0.1:${DD_PORT:-8080}/system_settings"
python manage.py runserver --insecure --noreload "127.0.0.1:${DD_PORT:-8080}"
