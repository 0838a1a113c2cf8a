"""The status round reads the workers' replies with orjson where it gives what kombu's JSON reader
gives (mailbox.json_loads), and kombu's reader for the rest: typed values kombu writes (datetimes,
UUIDs, Decimals as {"__type__": ...}), integers past 64 bits, NaN and infinities, lone surrogates."""

import datetime
import decimal
import math
import uuid

import pytest
from hypothesis import given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kombu.utils.json import dumps, loads

from dojo.ops.fleet.mailbox import json_loads

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _same(left: object, right: object) -> bool:
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right, strict=True))
    return type(left) is type(right) and left == right


@seed(20261204)
@hypothesis_settings(max_examples=300, deadline=None, database=None)
@given(value=JSON_VALUES)
def test_json_values_read_as_kombu_reads_them(value):
    text = dumps(value)
    assert _same(json_loads(text.encode()), loads(text))
    assert _same(json_loads(text), loads(text))


@pytest.mark.parametrize(
    "value",
    [
        {"eta": datetime.datetime(2026, 12, 4, 18, 0, tzinfo=datetime.UTC), "id": uuid.uuid4()},
        {"amount": decimal.Decimal("1.50"), "day": datetime.date(2026, 12, 4)},
        {"args": [2**64, -(2**63) - 1, 2**70, 2**63 - 1]},
        {"args": [float("nan"), float("inf"), -float("inf")]},
        {"text": "\ud800 lone"},
        {"id": "12345678901234567890123", "ratio": 0.00012345678901234567, "under": [2**63 - 1, -(2**63)]},
    ],
    ids=[
        "datetime and uuid",
        "decimal and date",
        "huge integers",
        "nan and infinities",
        "lone surrogate",
        "long digit runs that fit",
    ],
)
def test_what_orjson_would_read_otherwise_is_kombus(value):
    text = dumps(value)
    assert _same(json_loads(text.encode()), loads(text))
    assert _same(json_loads(text.encode()), value)
