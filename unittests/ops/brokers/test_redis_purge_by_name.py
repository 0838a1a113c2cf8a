"""Purge by task name on a real Redis (dojo.ops.brokers.redis.PURGE_SCRIPT): deep matches in a long
list, a time budget that cuts it short and a second call that finishes, and producers and
consumers working on the list meanwhile.

The messages are real: one envelope per task name is published through Celery and read back,
then cloned with new ids (publishing tens of thousands through Celery would take most of a
minute)."""

import json
import math
import threading
import time
import uuid
from collections.abc import Callable

import pytest
import redis

from dojo.ops.brokers import redis as redis_lists
from dojo.ops.brokers.messages import task_name
from dojo.ops.controls.purge import purge_task_name
from unittests.conftest import LiveBroker

ADD = "dojo.tasks.add"
SLEEP = "dojo.tasks.sleep"
ACCENTED = "dojo.tasks.\u00e9t\u00e9"  # JSON writes it with \u escapes: no substring test can rule messages out
ID = "0f0f0f0f-0000-4000-8000-0f0f0f0f0f0f"


def envelope_factory(broker: LiveBroker) -> Callable[..., bytes]:
    """A function (task, argsrepr=None) -> a new raw message of that task, cloned from an envelope
    the project's Celery client really published (headers, properties, body as kombu writes them)."""
    client = broker.client()
    client.send_task(ADD, args=(1, 2), queue="template", task_id=ID)
    client.close()
    plain = redis.Redis.from_url(broker.url)
    raw = plain.rpop("template")
    envelope = json.loads(raw)
    assert envelope["headers"]["task"] == ADD and ID in raw.decode()

    def make(task: str, argsrepr: str | None = None) -> bytes:
        copy = json.loads(raw)
        copy["headers"]["task"] = task
        if argsrepr is not None:
            copy["headers"]["argsrepr"] = argsrepr
        return json.dumps(copy).replace(ID, str(uuid.uuid4())).encode()

    return make


@pytest.fixture
def make(redis_only: LiveBroker) -> Callable[..., bytes]:
    return envelope_factory(redis_only)


@pytest.fixture
def plain(redis_only: LiveBroker) -> redis.Redis:
    return redis.Redis.from_url(redis_only.url)


def push_oldest_first(plain: redis.Redis, key: str, raws: list[bytes]) -> None:
    """LPUSH as producers do: the first of `raws` ends at the tail (consumed first)."""
    for i in range(0, len(raws), 1000):
        plain.lpush(key, *raws[i : i + 1000])


def lrem_calls(plain: redis.Redis) -> int:
    return plain.info("commandstats").get("cmdstat_lrem", {}).get("calls", 0)


@pytest.mark.django_db
def test_deep_matches_of_a_long_list_go_in_one_lrem_per_window_and_only_they_go(make, plain):
    """30,000 messages, one in ten of the task (so most matches are deep), a run of matches next to
    the consuming end, decoys that mention the name without being that task, a name that JSON
    escapes, and a message that is not JSON: exactly the task's messages go, the others stay in
    their order, and LREM runs once per bounded window, not once per match. Fails on the old
    code, which sent one LREM per matching message (3,000 of them, each walking the list from its
    head to the message)."""
    raws = []
    for i in range(30_000):
        if i < 40 or i % 10 == 7:
            raws.append(make(ADD))
        elif i % 1000 == 3:
            raws.append(make("dojo.tasks.add_more", argsrepr="('dojo.tasks.add',)"))  # contains the name
        elif i % 1000 == 5:
            raws.append(make(ACCENTED))
        elif i == 12_345:
            raws.append(b'not json at all, "task": "dojo.tasks.add')
        else:
            raws.append(make(SLEEP))
    push_oldest_first(plain, "celery", raws)
    matches = sum(task_name(raw) == ADD for raw in raws)
    assert matches == 3036
    plain.config_resetstat()

    result = purge_task_name("celery", ADD, seconds=60)

    assert (result.purged, result.complete) == (matches, True)
    # A call ends after PURGE_WINDOW messages or PURGE_WINDOW_MATCHES matches; one LREM per call.
    calls = math.ceil(len(raws) / redis_lists.PURGE_WINDOW) + math.ceil(matches / redis_lists.PURGE_WINDOW_MATCHES)
    assert lrem_calls(plain) <= calls < matches / 40
    survivors = [raw for raw in raws if task_name(raw) != ADD]
    assert plain.lrange("celery", 0, -1) == survivors[::-1]  # the same messages in the same order

    accented = purge_task_name("celery", ACCENTED, seconds=60)
    assert accented.purged == 29 and accented.complete
    assert plain.llen("celery") == len(survivors) - 29


@pytest.mark.django_db
def test_a_purge_cut_short_by_its_budget_says_so_and_the_next_call_goes_on(make, plain):
    """With no time at all, one call still does one bounded window and answers complete=False with
    what it removed; a second call with time enough removes the rest, each match once. Fails on the
    old code, which had no budget (and no `seconds`)."""
    raws = [make(ADD) if i % 10 == 0 else make(SLEEP) for i in range(5_000)]
    push_oldest_first(plain, "celery", raws)

    first = purge_task_name("celery", ADD, seconds=0)
    assert first.complete is False
    assert first.purged == redis_lists.PURGE_WINDOW // 10  # the head's window of 1,000: 100 matches

    second = purge_task_name("celery", ADD, seconds=60)
    assert second.complete is True
    total = first.purged + second.purged
    assert total == 500
    assert plain.llen("celery") == 4_500
    assert not any(task_name(raw) == ADD for raw in plain.lrange("celery", 0, -1))


@pytest.mark.django_db
def test_producers_and_consumers_meanwhile_lose_nothing_and_only_the_task_goes(make, plain):
    """While the purge runs over 40,000 messages, a producer LPUSHes new messages of both names at
    the head and a consumer RPOPs at the tail, as workers do. Afterwards every message is accounted
    for exactly once: taken by the consumer, still in the list, or removed by the purge; every
    removed one is of the task, their number is what the purge answered, and no message of the task
    that was there before the purge is left. Fails on the old code, whose result had no `complete`."""
    initial = [make(ADD) if i % 7 == 0 else make(SLEEP) for i in range(40_000)]
    push_oldest_first(plain, "celery", initial)
    produced: list[bytes] = []
    consumed: list[bytes] = []
    stop = threading.Event()

    def produce() -> None:
        producer = redis.Redis(connection_pool=plain.connection_pool)
        while not stop.is_set():
            batch = [make(ADD), make(SLEEP)]
            producer.lpush("celery", *batch)
            produced.extend(batch)
            time.sleep(0.001)

    def consume() -> None:
        consumer = redis.Redis(connection_pool=plain.connection_pool)
        while not stop.is_set():
            raw = consumer.rpop("celery")
            if raw is not None:
                consumed.append(raw)

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.05)
        result = purge_task_name("celery", ADD, seconds=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)

    assert result.complete is True
    remaining = plain.lrange("celery", 0, -1)
    everything = initial + produced
    assert len(set(everything)) == len(everything)  # every message is unique
    assert len(set(consumed)) == len(consumed) and not set(consumed) & set(remaining)  # nothing twice
    assert set(consumed) | set(remaining) <= set(everything)
    removed = set(everything) - set(consumed) - set(remaining)
    assert removed and all(task_name(raw) == ADD for raw in removed)
    assert len(removed) == result.purged
    assert len(produced) > 10 and len(consumed) > 10  # both really ran during the purge
    left_over = {raw for raw in initial if task_name(raw) == ADD} & set(remaining)
    assert not left_over
