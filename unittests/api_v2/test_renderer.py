"""The API's orjson renderer writes DRF's JSON: the same text for the types DRF's encoder formats
(datetimes, dates, times, Decimal, UUID, lazy translations, str subclasses), DRF's own renderer
where orjson refuses (an integer past 64 bits, a dict key that is not a string) or an indented
answer is asked for, and null (not a 500) for NaN."""

import datetime
import decimal
import enum
import json
import uuid

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer

from dojo.api_v2.renderers import JSONRenderer


class Color(enum.StrEnum):
    RED = "red"


ODD_BUT_ENCODABLE = {
    "when": datetime.datetime(2026, 12, 4, 18, 0, 1, 250000, tzinfo=datetime.UTC),
    "naive": datetime.datetime(2026, 12, 4, 18, 0),
    "day": datetime.date(2026, 12, 4),
    "time": datetime.time(18, 0, 1),
    "span": datetime.timedelta(seconds=90),
    "amount": decimal.Decimal("1.50"),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "lazy": gettext_lazy("Celery"),
    "enum": Color.RED,
    "text": "é ünïcode \u2028 line",
    "nested": [{"a": [1, 2.5, None, True]}, (3, 4)],
    "set": sorted({1, 2}),
}


def test_same_json_as_drf():
    ours, drf = JSONRenderer().render(ODD_BUT_ENCODABLE), DRFJSONRenderer().render(ODD_BUT_ENCODABLE)
    assert json.loads(ours) == json.loads(drf)
    assert json.loads(ours)["when"] == "2026-12-04T18:00:01.250000Z"  # DRF's form, not orjson's +00:00
    assert ours != drf  # orjson wrote it (DRF escapes U+2028)


@pytest.mark.parametrize("data", [{"big": 2**70}, {1: "int key"}, {"deep": [{1: 2}]}])
def test_drf_renders_what_orjson_refuses(data):
    assert JSONRenderer().render(data) == DRFJSONRenderer().render(data)


def test_indent_and_empty_bodies_are_drfs():
    data = {"a": [1, 2]}
    assert JSONRenderer().render(data, "application/json; indent=2") == DRFJSONRenderer().render(
        data, "application/json; indent=2"
    )
    assert JSONRenderer().render(None) == b""


def test_nan_is_null():
    assert json.loads(JSONRenderer().render({"x": float("nan"), "y": float("inf")})) == {"x": None, "y": None}
    with pytest.raises(ValueError, match="JSON compliant"):
        DRFJSONRenderer().render({"x": float("nan")})
