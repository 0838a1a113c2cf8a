"""DictSerializer (the status document's task summaries, worker stats and pools) gives exactly what
DRF's own Serializer.to_representation gives, or raises what it raises, for any dict: generated
values of every JSON type and some that are not (bools where numbers go, NaN, digit strings, big
integers, nested values), keys missing or extra, and serializers with a default, an optional field,
a dotted source and a callable value, which take DRF's path."""

import math

import pytest
from hypothesis import given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework import serializers

from dojo.api_v2.dict_serializer import DictSerializer
from dojo.api_v2.serializers import PoolSerializer, TaskSummarySerializer, WorkerStatsSerializer

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["12", "-3", "1.5", "N/A", "true", "", "1e3"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


class Shaped(DictSerializer):
    """Every way a field meets a missing key, and one field DRF must look up itself."""

    counted = serializers.IntegerField(default=7)
    optional = serializers.CharField(required=False)
    nullable = serializers.FloatField(allow_null=True)
    required = serializers.CharField()
    listed = serializers.ListField(child=serializers.IntegerField(), allow_null=True)


class Dotted(DictSerializer):
    inner = serializers.CharField(source="outer.inner")


def _instances(serializer: serializers.Serializer) -> st.SearchStrategy[dict]:
    names = [*serializer.fields, "extra"]
    return st.dictionaries(st.sampled_from(names), VALUES, max_size=len(names))


def _same(left: object, right: object) -> bool:
    """Equal, NaN counting as equal to itself."""
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left) and math.isnan(right):
        return True
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right, strict=True))
    return type(left) is type(right) and left == right


def _drf(serializer: serializers.Serializer, instance: object) -> object:
    return serializers.Serializer.to_representation(serializer, instance)


def _assert_as_drf(serializer: serializers.Serializer, instance: object) -> None:
    try:
        expected = _drf(serializer, instance)
    except Exception as drf_error:
        with pytest.raises(type(drf_error)):
            serializer.to_representation(instance)
        return
    assert _same(serializer.to_representation(instance), expected)


@pytest.mark.parametrize("serializer_class", [TaskSummarySerializer, WorkerStatsSerializer, PoolSerializer, Shaped])
@seed(20261204)
@hypothesis_settings(max_examples=150, deadline=None, database=None)
@given(data=st.data())
def test_dict_serializer_gives_what_drf_gives(
    serializer_class: type[serializers.Serializer], data: st.DataObject
) -> None:
    serializer = serializer_class()
    _assert_as_drf(serializer, data.draw(_instances(serializer)))


def test_the_paths_drf_takes() -> None:
    """A dotted source, a callable value, an object that is not a dict and a missing required key
    go through DRF: same output, same error."""
    assert Dotted().to_representation({"outer": {"inner": 5}}) == {"inner": "5"}
    shaped = Shaped()
    called = {"required": lambda: "from a call", "nullable": 1}
    assert shaped.to_representation(called) == _drf(shaped, called)
    assert shaped.to_representation(called)["required"] == "from a call"

    class Holder:
        required, nullable, listed, counted = "x", None, [1, "2"], 3

    assert shaped.to_representation(Holder()) == {"counted": 3, "nullable": None, "required": "x", "listed": [1, 2]}
    with pytest.raises(KeyError, match="required"):
        shaped.to_representation({"nullable": 1})
    assert shaped.to_representation({"required": 0}) == {
        "counted": 7,
        "nullable": None,
        "required": "0",
        "listed": None,
    }


def test_a_real_worker_reply() -> None:
    """A task summary and stats as describe_worker builds them, booleans and digit strings included."""
    task = {
        "id": "a1",
        "name": "app.add",
        "args": [1, {"k": [True]}],
        "kwargs": {},
        "time_start": 12.5,
        "worker_pid": 4,
    }
    task |= {"eta": "2026-12-04T18:00:00+00:00", "priority": "3", "delivery_info": {"routing_key": "celery"}}
    stats = {"total": 3, "total_by_task": {"app.add": "3"}, "pid": True, "uptime": 9.9, "prefetch_count": None}
    stats |= {"pool": {"max-concurrency": 2, "processes": [11, "12"], "max-tasks-per-child": None}, "rusage": {"a": 1}}
    stats |= {"pool_implementation": "prefork"}
    for serializer, instance in ((TaskSummarySerializer(), task), (WorkerStatsSerializer(), stats)):
        assert serializer.to_representation(instance) == _drf(serializer, instance)
    assert TaskSummarySerializer().to_representation(task)["priority"] == 3
    assert WorkerStatsSerializer().to_representation(stats)["pool"]["processes"] == [11, 12]
