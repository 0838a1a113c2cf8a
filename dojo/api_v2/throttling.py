"""The API's rate limit (DEFAULT_THROTTLE_RATES): DRF's ScopedRateThrottle, which keeps its counts
in Django's cache, let through when that cache fails.

DRF reads and writes the cache on every throttled request, so a cache that does not answer
(DD_CACHE_URL, bounded by DD_CACHE_TIMEOUT) made every throttled endpoint a 500. The request goes
on unthrottled instead, as the status read goes on uncached: the rate limit protects the broker
from a flood, it is not a reason to refuse every read while the cache is down. The controls are
still superuser-or-permission only and audited.
"""

import logging

from rest_framework import throttling
from rest_framework.request import Request
from rest_framework.views import APIView

from dojo.ops.fleet.status_cache import CACHE_ERRORS
from dojo.ops.redaction import redact

logger = logging.getLogger(__name__)


class ScopedRateThrottle(throttling.ScopedRateThrottle):
    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)
        except CACHE_ERRORS as exc:
            logger.warning(
                "The cache failed; the request is not rate limited: %s", redact(f"{type(exc).__name__}: {exc}")
            )
            return True
