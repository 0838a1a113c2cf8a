"""GET /metrics: the Celery metrics in the Prometheus text format.

Callers: a superuser's DRF token (``Authorization: Token KEY``), or, when DD_METRICS_TOKEN
is set, ``Authorization: Bearer <DD_METRICS_TOKEN>`` for a scraper that has no user.
"""

import hmac

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework.authentication import BaseAuthentication, TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.views import APIView

from dojo.api_v2.backends import requested_backend
from dojo.ops.observe.metrics import exposition
from dojo.permissions import IsSuperUser


class MetricsToken:
    """`request.auth` of a caller that presented DD_METRICS_TOKEN."""


METRICS_TOKEN_AUTH = MetricsToken()


class MetricsTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <DD_METRICS_TOKEN>``; ignored while the setting is empty."""

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[AnonymousUser, MetricsToken] | None:
        expected = settings.METRICS_TOKEN
        parts = get_authorization_header(request).split()
        if not expected or not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2 or not hmac.compare_digest(parts[1], expected.encode()):
            raise AuthenticationFailed("Invalid metrics token.")
        return AnonymousUser(), METRICS_TOKEN_AUTH

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class IsSuperUserOrMetricsToken(IsSuperUser):
    """Superusers, or a caller that presented DD_METRICS_TOKEN."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.auth is METRICS_TOKEN_AUTH or super().has_permission(request, view)


class FirstRenderer(BaseContentNegotiation):
    """Errors (401, 403) in JSON whatever the scraper accepts, instead of 406."""

    def select_parser(self, request: Request, parsers: list) -> object:
        return parsers[0]

    def select_renderer(self, request: Request, renderers: list, format_suffix: str | None = None) -> tuple:
        return renderers[0], renderers[0].media_type


class MetricsView(APIView):
    # Token first: an anonymous caller gets 401 with "WWW-Authenticate: Token".
    authentication_classes = [TokenAuthentication, MetricsTokenAuthentication]
    permission_classes = [IsSuperUserOrMetricsToken]
    content_negotiation_class = FirstRenderer

    @extend_schema(exclude=True)  # Prometheus text, not part of the JSON API
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(exposition(requested_backend(request)), content_type=CONTENT_TYPE_LATEST)
