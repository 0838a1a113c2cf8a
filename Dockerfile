# The dojo image: one image for the web server (default CMD), the Celery worker,
# Celery beat and the one-shot migration job (see docker-compose.yml).
# Every setting is a DD_ environment variable (dojo/settings/settings.dist.py; the web
# server's own, DD_WEB_*, in gunicorn.conf.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=dojo.settings.settings \
    DD_STATIC_ROOT=/app/staticfiles \
    DD_WEB_BIND=0.0.0.0:8080

WORKDIR /app

# Unprivileged runtime user; the code stays owned by root so it cannot rewrite itself.
# It gets a writable home: gunicorn (25.1+) puts its control socket in ~/.gunicorn.
RUN groupadd --system --gid 1001 dojo \
    && useradd --system --uid 1001 --gid dojo --home-dir /home/dojo --create-home --shell /usr/sbin/nologin dojo

# Dependencies first, so code changes do not invalidate this layer.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .

# collectstatic imports the settings, which need a secret key: this one exists only
# during the build and never ends up in the image's environment. Importing the
# settings with the default filesystem broker creates var/broker, so var/ is
# recreated empty afterwards and handed to the runtime user (celerybeat keeps its
# schedule file there; docker-compose.yml mounts a volume on it).
RUN DD_SECRET_KEY=build-only-collectstatic-key python manage.py collectstatic --noinput \
    && rm -rf /app/var \
    && mkdir -p /app/var \
    && chown dojo:dojo /app/var

USER dojo

EXPOSE 8080

# gunicorn reads /app/gunicorn.conf.py: DD_WEB_WORKERS processes of DD_WEB_THREADS threads
# (2 x 4) on DD_WEB_BIND, access log on stdout.
CMD ["gunicorn", "dojo.wsgi:application"]
