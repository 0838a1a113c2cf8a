"""The status document as the cache pickles it (CeleryStatus.__getstate__): the worker replies as
one orjson string when orjson gives them back as they were, pickled as they are otherwise."""

import datetime
import pickle

import pytest
from django.core.cache import cache

from dojo.ops.fleet.status import CeleryStatus, QueueState
from dojo.ops.fleet.status_cache import _PickledOnce

REPLY = {
    "stats": {"pid": 12, "pool": {"max-concurrency": 2, "processes": [1, 2]}, "rusage": {"utime": 0.5}},
    "active": [{"id": "a", "name": "app.t", "args": [1, "é", {"k": [None, True, 2.5]}], "kwargs": {}}],
    "reserved": [],
    "scheduled": [],
    "registered": ["app.t"],
}


def _status(replies: dict) -> CeleryStatus:
    return CeleryStatus(broker_status=True, queue="celery", queues={"celery": QueueState(3, 1)}, worker_replies=replies)


def test_replies_travel_as_json_and_come_back_equal():
    status = _status({"w1@h": REPLY, "w2@h": {"error": "no answer"}})
    assert status.worker_counts["w1@h"].active == 1  # cached on the instance, not pickled
    assert isinstance(status.__getstate__()["worker_replies"], bytes)
    assert "worker_counts" not in status.__getstate__()
    copy = pickle.loads(pickle.dumps(status))  # noqa: S301 - our own document
    assert (
        copy == status and copy.worker_replies == status.worker_replies and copy.worker_counts == status.worker_counts
    )


@pytest.mark.parametrize(
    "odd",
    [{"eta": datetime.datetime(2026, 12, 4, tzinfo=datetime.UTC)}, {1: "int key"}, {"big": 2**70}],
    ids=["datetime", "int key", "big int"],
)
def test_replies_orjson_would_change_are_pickled_as_they_are(odd):
    status = _status({"w@h": {**REPLY, "stats": {**REPLY["stats"], "odd": odd}}})
    assert not isinstance(status.__getstate__()["worker_replies"], bytes)
    assert pickle.loads(pickle.dumps(status)) == status  # noqa: S301 - our own document


def test_a_document_pickled_once_for_several_keys_comes_back_as_itself():
    """_PickledOnce: the cache stores the bytes of one pickle; what it gives back is the document."""
    status = _status({"w1@h": REPLY})
    pickled = _PickledOnce(status)
    cache.set_many({"a": pickled, "b": pickled})
    for key in ("a", "b"):
        copy = cache.get(key)
        assert isinstance(copy, CeleryStatus) and copy == status and copy.worker_replies == status.worker_replies
