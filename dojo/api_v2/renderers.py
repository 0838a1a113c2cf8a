"""The API's JSON renderer: orjson where it gives DRF's answer, DRF's own renderer otherwise.

At 1,000 workers the status document is about 1 MB of JSON: DRF's renderer (the json module)
takes 30 to 60 ms of the request, orjson a few. orjson hands the types it would write otherwise
than DRF (datetimes, str and int subclasses, dataclasses) and the ones it does not know (Decimal,
lazy translations...) to DRF's encoder, so their text is DRF's. Where orjson refuses (integers past
64 bits, dict keys that are not strings) or an indented answer was asked for, DRF renders.
Not the same bytes as DRF in two harmless ways: NaN and infinities become null (DRF's strict JSON
refuses them, a 500), and U+2028/U+2029 are not escaped (valid JSON either way).
"""

from typing import Any

import orjson
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer
from rest_framework.utils.encoders import JSONEncoder

OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS


class JSONRenderer(DRFJSONRenderer):
    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if data is None or self.get_indent(accepted_media_type or "", renderer_context or {}):
            return super().render(data, accepted_media_type, renderer_context)
        try:
            return orjson.dumps(data, default=JSONEncoder().default, option=OPTIONS)
        except orjson.JSONEncodeError:
            return super().render(data, accepted_media_type, renderer_context)
