import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dojo.settings.settings")
application = get_wsgi_application()


def _refuse_the_development_key() -> None:
    """The web server signs sessions and CSRF tokens: with DD_DEBUG off it never runs on the
    public development key (management commands and workers may: they sign nothing for users)."""
    from django.conf import settings

    if not settings.DEBUG and settings.SECRET_KEY == settings.DEV_SECRET_KEY:
        raise ImproperlyConfigured(
            "DD_SECRET_KEY is not set: the web server refuses to start with the public development key "
            "while DD_DEBUG is off. Set DD_SECRET_KEY to a long random string (scripts/run.sh keeps one in var/)."
        )


_refuse_the_development_key()
