"""Concurrency limits ("semaphores"): at most `limit` runs with the same key hold a slot at once
across the fleet. A slot is a lease of `expires` seconds (DD_CELERY_SLOT_LEASE_SECONDS) that its
run renews while it is alive (`renew_slot`), so a holder that dies without releasing it (killed,
out of memory, its worker gone) frees it within one lease. The worker side is
dojo.worker.concurrency.ConcurrencyLimitedTask.

Where the slots live depends on the backend's broker:

- Redis: on the broker's own Redis (with the transport's `global_keyprefix`), through the bounded
  connection of `broker_connection()`. Key K is a sorted set ``dojo:semaphore:K`` (member: the
  holder's task id, score: the epoch its lease ends at); Lua scripts drop the expired members
  and take or renew a slot atomically, timed by the Redis server's clock so hosts' clocks do
  not matter. ``dojo:semaphore-holder:ID`` (expiring with the lease) names the key run ID holds,
  so the worker can release a run's slot knowing only its id (`release_run`). Known keys are the
  sorted set ``dojo:semaphores`` (score: until when the key is listed, KEY_LISTED_SECONDS after
  its last use) and their limits the hash ``dojo:semaphores:limits``.
- Other brokers (RabbitMQ, filesystem) have no server-side store: the SemaphoreSlot table of
  this project's database. Each key has one row of its own (holder KEY_ROW) that records its
  limit and until when it is listed, and is locked with `select_for_update()` inside
  `transaction.atomic()`, so acquirers of a key are serialized on PostgreSQL and MySQL as well;
  SQLite's settings use IMMEDIATE transactions, which serialize every writer anyway. Renewing
  takes the same lock, so a renewal and an acquirer dropping expired slots never interleave.

Blocked runs (no free slot, retried later) are SemaphoreWaiter rows in the database whatever
the broker, so they count as blocked on their queue (`blocked_by_queue`). A waiter whose retry
is more than WAITER_STALE_AFTER overdue is no longer retrying (revoked, lost) and is not counted.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min
from django.utils import timezone
from redis import Redis

from dojo.models import SemaphoreSlot, SemaphoreWaiter
from dojo.ops.brokers.connection import broker_connection
from dojo.ops.brokers.redis import client as redis_client
from dojo.ops.brokers.registry import Broker, get_broker

WAITER_STALE_AFTER = timedelta(minutes=5)
KEY_LISTED_SECONDS = 3600  # a key stays listed (dashboard, API) this long after its last use
KEY_ROW = "(key)"  # SemaphoreSlot.holder of a key's own row; task ids are UUIDs, never this

HOLDERS = "dojo:semaphore:{key}"
HOLDER_KEY = "dojo:semaphore-holder:{key}"  # formatted with the holder's task id; apart from any key K
KNOWN_KEYS = "dojo:semaphores"
LIMITS = "dojo:semaphores:limits"

# KEYS: holders, known keys, limits, the holder's key. ARGV: key, holder, limit, lease (seconds),
# listed (seconds). Returns 1 if acquired.
ACQUIRE_SCRIPT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local expires_at = now + tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local acquired = 0
if redis.call('ZSCORE', KEYS[1], ARGV[2]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], expires_at, ARGV[2])
  redis.call('SET', KEYS[4], ARGV[1], 'PXAT', math.ceil(expires_at * 1000))
  acquired = 1
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIREAT', KEYS[1], math.ceil(tonumber(last[2]) * 1000))
end
redis.call('ZADD', KEYS[2], 'GT', now + math.max(tonumber(ARGV[4]), tonumber(ARGV[5])), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 10)) do
  redis.call('ZREM', KEYS[2], gone)
  redis.call('HDEL', KEYS[3], gone)
end
return acquired
"""

# KEYS: holders, known keys, the holder's key. ARGV: key, holder, lease (seconds), listed (seconds).
# Returns 1 if the holder still held its slot (now renewed), 0 if it had expired or was released.
RENEW_SCRIPT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local expires_at = now + tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', expires_at, ARGV[2])
redis.call('SET', KEYS[3], ARGV[1], 'PXAT', math.ceil(expires_at * 1000))
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], math.ceil(tonumber(last[2]) * 1000))
redis.call('ZADD', KEYS[2], 'GT', now + math.max(tonumber(ARGV[3]), tonumber(ARGV[4])), ARGV[1])
return 1
"""


@dataclass
class SemaphoreState:
    key: str
    limit: int
    available_slots: int
    blocked_waiters: int
    expires_at: datetime | None  # when the last held slot's lease ends unless renewed; None: no slot held


@dataclass
class BlockedQueue:
    count: int
    oldest_blocked_at: datetime | None


@dataclass(frozen=True)
class Slot:
    """One run's claim on a key: `holder` (its task id) may hold one of `limit` slots, leased for
    `expires` seconds at a time (renewed while the run is alive)."""

    broker: Broker
    key: str
    holder: str
    limit: int
    expires: float


# --- Redis store --------------------------------------------------------------------------


@dataclass(frozen=True)
class _RedisStore:
    client: Redis  # a plain client on the broker connection's bounded pool; keys are prefixed here
    prefix: str

    def name(self, template: str, key: str = "") -> str:
        return self.prefix + template.format(key=key)

    def now(self) -> float:
        seconds, microseconds = self.client.time()
        return seconds + microseconds / 1_000_000


@contextmanager
def _redis_store(broker: Broker) -> Iterator[_RedisStore]:
    """The broker's Redis; any failure is BrokerUnavailable (from `broker_connection`)."""
    with broker_connection(broker=broker) as conn:
        yield _RedisStore(redis_client(conn), conn.default_channel.global_keyprefix or "")


def _redis_acquire(slot: Slot) -> bool:
    with _redis_store(slot.broker) as store:
        script = store.client.register_script(ACQUIRE_SCRIPT)
        keys = [
            store.name(HOLDERS, slot.key),
            store.name(KNOWN_KEYS),
            store.name(LIMITS),
            store.name(HOLDER_KEY, slot.holder),
        ]
        return bool(script(keys=keys, args=[slot.key, slot.holder, slot.limit, slot.expires, KEY_LISTED_SECONDS]))


def _redis_renew(slot: Slot) -> bool:
    with _redis_store(slot.broker) as store:
        script = store.client.register_script(RENEW_SCRIPT)
        keys = [store.name(HOLDERS, slot.key), store.name(KNOWN_KEYS), store.name(HOLDER_KEY, slot.holder)]
        return bool(script(keys=keys, args=[slot.key, slot.holder, slot.expires, KEY_LISTED_SECONDS]))


def _redis_release(slot: Slot) -> None:
    with _redis_store(slot.broker) as store:
        pipe = store.client.pipeline(transaction=True)
        pipe.zrem(store.name(HOLDERS, slot.key), slot.holder)
        pipe.delete(store.name(HOLDER_KEY, slot.holder))
        pipe.execute()


def _redis_release_run(broker: Broker, holder: str) -> None:
    with _redis_store(broker) as store:
        key = store.client.get(store.name(HOLDER_KEY, holder))
        if key is not None:
            pipe = store.client.pipeline(transaction=True)
            pipe.zrem(store.name(HOLDERS, key.decode()), holder)
            pipe.delete(store.name(HOLDER_KEY, holder))
            pipe.execute()


def _redis_held(broker: Broker) -> list[tuple[str, int, int, datetime | None]]:
    """(key, limit, slots held, last expiry) of every listed key, in two round trips."""
    with _redis_store(broker) as store:
        now = store.now()
        keys = [key.decode() for key in store.client.zrangebyscore(store.name(KNOWN_KEYS), now, "+inf")]
        if not keys:
            return []
        limits = store.client.hmget(store.name(LIMITS), keys)
        pipe = store.client.pipeline(transaction=False)
        for key in keys:
            pipe.zcount(store.name(HOLDERS, key), f"({now}", "+inf")
            pipe.zrange(store.name(HOLDERS, key), -1, -1, withscores=True)
        answers = pipe.execute()
    held = []
    for index, (key, limit) in enumerate(zip(keys, limits, strict=True)):
        count, last = answers[2 * index], answers[2 * index + 1]
        last_expiry = last[0][1] if count and last else None
        expires_at = datetime.fromtimestamp(last_expiry, UTC) if last_expiry else None
        held.append((key, int(limit or 0), count, expires_at))
    return held


# --- database store -----------------------------------------------------------------------


def _locked_key_row(slot: Slot, listed_until: datetime) -> SemaphoreSlot:
    """The key's own row, created if needed and locked until the transaction ends."""
    rows = SemaphoreSlot.objects.filter(backend=slot.broker.alias, key=slot.key, holder=KEY_ROW)
    for _attempt in range(3):
        try:
            with transaction.atomic():  # a savepoint: another acquirer may create it first
                SemaphoreSlot.objects.get_or_create(
                    backend=slot.broker.alias,
                    key=slot.key,
                    holder=KEY_ROW,
                    defaults={"limit": slot.limit, "expires_at": listed_until},
                )
        except IntegrityError:
            pass
        row = rows.select_for_update().first()
        if row is not None:
            return row
    raise IntegrityError(f"Cannot create the row of semaphore key {slot.key!r}.")


def _listed_until(slot: Slot, now: datetime) -> datetime:
    return now + timedelta(seconds=max(slot.expires, KEY_LISTED_SECONDS))


def _database_acquire(slot: Slot) -> bool:
    with transaction.atomic():
        now = timezone.now()
        expires_at = now + timedelta(seconds=slot.expires)
        key_row = _locked_key_row(slot, _listed_until(slot, now))
        slots = SemaphoreSlot.objects.filter(backend=slot.broker.alias, key=slot.key).exclude(holder=KEY_ROW)
        slots.filter(expires_at__lte=now).delete()
        acquired = bool(slots.filter(holder=slot.holder).update(expires_at=expires_at, limit=slot.limit))
        if not acquired and slots.count() < slot.limit:
            SemaphoreSlot.objects.create(
                backend=slot.broker.alias, key=slot.key, holder=slot.holder, limit=slot.limit, expires_at=expires_at
            )
            acquired = True
        key_row.limit = slot.limit
        key_row.expires_at = max(key_row.expires_at, _listed_until(slot, now))
        key_row.save(update_fields=["limit", "expires_at"])
    return acquired


def _database_renew(slot: Slot) -> bool:
    """Extend the holder's lease under the key row's lock, as acquirers take it; False if the
    slot had expired (an acquirer may have given it away) or was released."""
    with transaction.atomic():
        now = timezone.now()
        rows = SemaphoreSlot.objects.filter(backend=slot.broker.alias, key=slot.key)
        key_row = rows.filter(holder=KEY_ROW).select_for_update().first()
        if key_row is None:
            return False
        held = rows.filter(holder=slot.holder, expires_at__gt=now)
        renewed = bool(held.update(expires_at=now + timedelta(seconds=slot.expires)))
        if renewed:
            key_row.expires_at = max(key_row.expires_at, _listed_until(slot, now))
            key_row.save(update_fields=["expires_at"])
    return renewed


def _database_release(slot: Slot) -> None:
    SemaphoreSlot.objects.filter(backend=slot.broker.alias, key=slot.key, holder=slot.holder).delete()


def _database_release_run(broker: Broker, holder: str) -> None:
    if holder != KEY_ROW:
        SemaphoreSlot.objects.filter(backend=broker.alias, holder=holder).delete()


def _database_held(broker: Broker) -> list[tuple[str, int, int, datetime | None]]:
    now = timezone.now()
    rows = SemaphoreSlot.objects.filter(backend=broker.alias, expires_at__gt=now)
    limits = dict(rows.filter(holder=KEY_ROW).values_list("key", "limit"))
    taken = {
        row["key"]: (row["count"], row["last"])
        for row in rows.exclude(holder=KEY_ROW)
        .filter(key__in=limits)
        .values("key")
        .annotate(count=Count("id"), last=Max("expires_at"))
    }
    return [(key, limit, *taken.get(key, (0, None))) for key, limit in limits.items()]


@dataclass(frozen=True)
class _Store:
    acquire: Callable[[Slot], bool]
    renew: Callable[[Slot], bool]
    release: Callable[[Slot], None]
    release_run: Callable[[Broker, str], None]
    held: Callable[[Broker], list[tuple[str, int, int, datetime | None]]]


# By the transport's slot_store (dojo.ops.brokers.transport).
STORES = {
    "redis": _Store(_redis_acquire, _redis_renew, _redis_release, _redis_release_run, _redis_held),
    "database": _Store(_database_acquire, _database_renew, _database_release, _database_release_run, _database_held),
}


# --- the service --------------------------------------------------------------------------


def acquire_slot(slot: Slot) -> bool:
    """Take a slot for `slot.holder` (renewing it if it already holds one); False if all are taken.

    Raises BrokerUnavailable (Redis) or DatabaseError (other brokers) when the store fails.
    """
    return STORES[slot.broker.transport.slot_store].acquire(slot)


def renew_slot(slot: Slot) -> bool:
    """Extend `slot.holder`'s lease to `slot.expires` seconds from now; False (and nothing
    taken) if its slot expired or was released meanwhile.

    Raises BrokerUnavailable (Redis) or DatabaseError (other brokers) when the store fails.
    """
    return STORES[slot.broker.transport.slot_store].renew(slot)


def release_slot(slot: Slot) -> None:
    """Give the slot back (nothing happens if it expired or was never taken)."""
    STORES[slot.broker.transport.slot_store].release(slot)


def release_run(broker: Broker, task_id: str) -> None:
    """Give back whatever slot run `task_id` holds on `broker`, knowing only its id (the worker
    learns that a run was terminated without its arguments, hence without its key), and forget
    its waiter rows. Raises like `release_slot`."""
    STORES[broker.transport.slot_store].release_run(broker, task_id)
    SemaphoreWaiter.objects.filter(backend=broker.alias, task_id=task_id).delete()


def record_waiter(slot: Slot, task_name: str, queue: str, retry_at: datetime) -> None:
    """Mark the run as blocked on `queue` until `retry_at`; its first blocked_since is kept."""
    alias = slot.broker.alias
    SemaphoreWaiter.objects.update_or_create(
        backend=alias,
        key=slot.key,
        task_id=slot.holder,
        defaults={"task_name": task_name, "queue": queue, "retry_at": retry_at},
        create_defaults={"task_name": task_name, "queue": queue, "retry_at": retry_at, "blocked_since": timezone.now()},
    )
    SemaphoreWaiter.objects.filter(backend=alias, retry_at__lt=timezone.now() - WAITER_STALE_AFTER).delete()


def clear_waiter(slot: Slot) -> None:
    """The run got its slot: it is no longer blocked. Reads first, so the runs that were never
    blocked (most) do not take the database's write lock."""
    waiter = SemaphoreWaiter.objects.filter(backend=slot.broker.alias, key=slot.key, task_id=slot.holder)
    if waiter.exists():
        waiter.delete()


def _live_waiters(backend_alias: str):
    return SemaphoreWaiter.objects.filter(backend=backend_alias, retry_at__gte=timezone.now() - WAITER_STALE_AFTER)


def list_semaphores(broker: Broker | None = None) -> list[SemaphoreState]:
    """Every key used within KEY_LISTED_SECONDS, by key. Raises BrokerUnavailable when Redis does not answer."""
    broker = broker or get_broker()
    return semaphore_states(broker, held_slots(broker))


HeldSlots = list[tuple[str, int, int, datetime | None]]  # (key, limit, slots held, last expiry)


def slots_on_broker(broker: Broker) -> bool:
    """Whether the slots live on the broker (its Redis) rather than in this project's database."""
    return broker.transport.slot_store == "redis"


def held_slots(broker: Broker) -> HeldSlots:
    """The part of list_semaphores that reads the slot store (the broker's Redis, or the database:
    see `slots_on_broker`). Raises BrokerUnavailable when Redis does not answer."""
    return STORES[broker.transport.slot_store].held(broker)


def semaphore_states(broker: Broker, held: HeldSlots) -> list[SemaphoreState]:
    """The keys of `held` with their blocked waiters (the database part of list_semaphores), by key."""
    waiters = dict(_live_waiters(broker.alias).values("key").annotate(count=Count("id")).values_list("key", "count"))
    states = [
        SemaphoreState(
            key=key,
            limit=limit,
            available_slots=max(limit - count, 0),
            blocked_waiters=waiters.get(key, 0),
            expires_at=expires_at,
        )
        for key, limit, count, expires_at in held
    ]
    return sorted(states, key=lambda state: state.key)


def blocked_by_queue(backend_alias: str) -> dict[str, BlockedQueue]:
    """Runs waiting for a slot, by the queue they were delivered from, with the oldest wait's start."""
    rows = _live_waiters(backend_alias).values("queue").annotate(count=Count("id"), oldest=Min("blocked_since"))
    return {row["queue"]: BlockedQueue(row["count"], row["oldest"]) for row in rows}
