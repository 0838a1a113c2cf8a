"""Redis (``redis://``, ``rediss://``, ``sentinel://``, ``redis+socket://``): queues are plain lists.

kombu keeps queue Q as one list per priority step (``Q``, ``Q\\x06\\x163``, ...): producers
LPUSH, consumers RPOP the lists in priority order, so the next message to be consumed (the
oldest of the first non-empty list) is at the right end. kombu's own client adds the
transport's key prefix (``global_keyprefix``) to some commands only (not LINDEX, LRANGE,
LREM), so the helpers here give full key names and a plain client on the channel's pool, which
keeps the bounded socket timeouts of `broker_connection()`.
"""

import time
import uuid
from collections import Counter
from collections.abc import Iterator

from kombu import Connection
from kombu.transport.redis import Channel
from redis import Redis

from dojo.ops.brokers import messages
from dojo.ops.brokers.messages import MessageMatch
from dojo.ops.brokers.transport import (
    Position,
    PurgeStep,
    PurgeTally,
    QueueDepth,
    VirtualTransport,
    Within,
    count_task_names,
)

BATCH = 1000
PURGE_WINDOW = 1000  # messages one purge call looks at near an end of the list (see PURGE_SCRIPT)
PURGE_WINDOW_MAX = 8000  # ... and deep in it, where the LREM walk costs more than reading a wider window
PURGE_WINDOW_MATCHES = 100  # messages one purge call removes, at most: each LSET seeks from an end of the list
STAMPED_DEPTHS_MAX = 500  # a depth read of more queues counts only (RedisTransport.depths)
COUNTER_TTL = 7 * 24 * 3600  # seconds a bulk purge's counter outlives its last removal
COUNT_CHUNK = 2500  # queues per COUNT_SCRIPT call: each call holds Redis a few milliseconds at most
STAMPED_CHUNK = 50  # queues per STAMPED_SCRIPT call: each decodes up to one envelope per list

# The ready counts of the queues named in ARGV[3 + n], n = ARGV[2]: each queue's the sum of the lengths
# of its lists ARGV[1] .. name .. suffix, for each of the n suffixes ARGV[3 .. 2 + n] (a list that does
# not exist has length 0), as one string "3,0,12,...". The names come in one argument, each as its
# length in bytes, ":" and itself (any byte may be in a name), and the keys are built on the server:
# a read of 10,000 queues sends one string of names, not 40,000 keys, and gets one string back, not
# 10,000 replies (packing and parsing those was most of the client's cost). A script may touch keys
# it was not given on a Redis that is not a cluster, which is the only Redis kombu's transport speaks to.
COUNT_SCRIPT = """
local prefix, n, names = ARGV[1], tonumber(ARGV[2]), ARGV[3 + tonumber(ARGV[2])]
local sums, at = {}, 1
while at <= #names do
  local colon = string.find(names, ':', at, true)
  local length = tonumber(string.sub(names, at, colon - 1))
  local name, ready = prefix .. string.sub(names, colon + 1, colon + length), 0
  at = colon + length + 1
  for s = 3, 2 + n do
    ready = ready + redis.call('LLEN', name .. ARGV[s])
  end
  sums[#sums + 1] = ready
end
return table.concat(sums, ',')
"""

# The same for a narrow read (at most STAMPED_DEPTHS_MAX queues, STAMPED_CHUNK a call), with the publish
# stamp of the next message of each list (LINDEX -1), header ARGV[3 + n] of its envelope, read on the
# server: each queue's answer is "ready" or "ready stamp" (the oldest stamp, all 17 digits, when every
# list's next message has one: the rule of dojo.ops.brokers.messages.published_at), so 100 queues cost
# one argument and one short string, not 800 replies and 400 envelopes decoded in Python.
STAMPED_SCRIPT = """
local prefix, n = ARGV[1], tonumber(ARGV[2])
local header, names = ARGV[3 + n], ARGV[4 + n]
local answers, at = {}, 1
while at <= #names do
  local colon = string.find(names, ':', at, true)
  local length = tonumber(string.sub(names, at, colon - 1))
  local name, ready, oldest, unstamped = prefix .. string.sub(names, colon + 1, colon + length), 0, nil, false
  at = colon + length + 1
  for s = 3, 2 + n do
    local key = name .. ARGV[s]
    ready = ready + redis.call('LLEN', key)
    local raw = redis.call('LINDEX', key, -1)
    if raw then
      local ok, envelope = pcall(cjson.decode, raw)
      local stamp = nil
      if ok and type(envelope) == 'table' and type(envelope.headers) == 'table' then
        stamp = envelope.headers[header]
      end
      if type(stamp) ~= 'number' then
        unstamped = true
      elseif oldest == nil or stamp < oldest then
        oldest = stamp
      end
    end
  end
  if oldest ~= nil and not unstamped then
    answers[#answers + 1] = string.format('%d %.17g', ready, oldest)
  else
    answers[#answers + 1] = string.format('%d', ready)
  end
end
return table.concat(answers, ',')
"""

# One window of a purge of selected messages, atomic (a script runs alone on Redis): LRANGE the
# window [start, start + window) counted from the head (wider deep in the list: a hundredth of the
# distance to the nearer end, between ARGV[2] and ARGV[7], so sparse matches still share one
# walk), mark each matching message with the request's unique tombstone (LSET), stopping after
# `most` of them, then remove the tombstones with one LREM from the end nearer the window, limited
# to their count. Returns {removed, scanned, 1 if the window reached the end of the list else 0,
# the counter's total}.
#
# Which messages match is the rule of dojo.ops.brokers.messages.MessageMatch: by name (ARGV[8]:
# "exact" or "prefix" of ARGV[4], "any") the first "task" key's JSON string (unescaped with cjson
# when it holds escapes), else the envelope's headers.task; and, when ARGV[9] is not empty, that
# text in headers.argsrepr or headers.kwargsrepr. ARGV[3], when not empty, is a substring every
# match contains, so most others are ruled out without looking further.
#
# With a second key (a bulk purge's counter), at most ARGV[10] messages are removed in all, across
# calls: the counter says how many were, and is raised in the same atomic step as the removal, so
# a runner that dies between two calls neither loses the count nor removes more than confirmed.
PURGE_SCRIPT = """
local key, start, window, most = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[6])
local needle, name, tombstone, mode, args = ARGV[3], ARGV[4], ARGV[5], ARGV[8], ARGV[9]
local counter, so_far = KEYS[2], 0
if counter then
  so_far = tonumber(redis.call('GET', counter) or '0')
  most = math.min(most, tonumber(ARGV[10]) - so_far)
  if most <= 0 then return {0, 0, 0, so_far} end
end
local length = redis.call('LLEN', key)
window = math.max(window, math.min(tonumber(ARGV[7]), math.floor(math.min(start, length - start) / 100)))
local function task_of(raw)
  local _, head = string.find(raw, '"task":%s*"')
  if not head then
    local ok, envelope = pcall(cjson.decode, raw)
    if ok and type(envelope) == 'table' and type(envelope.headers) == 'table' then
      return envelope.headers.task
    end
    return nil
  end
  local i, escaped = head + 1, false
  while true do
    local at = string.find(raw, '["\\\\]', i)
    if not at then return nil end
    if string.byte(raw, at) == 34 then
      local literal = string.sub(raw, head + 1, at - 1)
      if not escaped then return literal end
      local ok, text = pcall(cjson.decode, '"' .. literal .. '"')
      if ok then return text end
      return nil
    end
    escaped, i = true, at + 2
  end
end
local function name_matches(raw)
  if mode == 'any' then return true end
  local task = task_of(raw)
  if type(task) ~= 'string' then return false end
  if mode == 'exact' then return task == name end
  return string.sub(task, 1, #name) == name
end
local function args_match(raw)
  if args == '' then return true end
  local ok, envelope = pcall(cjson.decode, raw)
  if not ok or type(envelope) ~= 'table' or type(envelope.headers) ~= 'table' then return false end
  for _, field in ipairs({'argsrepr', 'kwargsrepr'}) do
    local text = envelope.headers[field]
    if type(text) == 'string' and string.find(text, args, 1, true) then return true end
  end
  return false
end
local chunk = redis.call('LRANGE', key, start, start + window - 1)
local removed, scanned = 0, 0
for offset, raw in ipairs(chunk) do
  if (needle == '' or string.find(raw, needle, 1, true)) and name_matches(raw) and args_match(raw) then
    redis.call('LSET', key, start + offset - 1, tombstone)
    removed = removed + 1
  end
  scanned = offset
  if removed == most then break end
end
if removed > 0 then
  local after = length - (start + scanned)
  if start <= after then
    redis.call('LREM', key, removed, tombstone)
  else
    redis.call('LREM', key, -removed, tombstone)
  end
  if counter then
    redis.call('INCRBY', counter, removed)
    redis.call('EXPIRE', counter, tonumber(ARGV[11]))
  end
end
local at_end = 0
if scanned == #chunk and #chunk < window then at_end = 1 end
return {removed, scanned, at_end, so_far + removed}
"""


def priority_lists(channel: Channel, queue: str) -> list[str]:
    """The Redis keys (key prefix included) of `queue`'s lists, in the order workers consume them."""
    prefix = channel.global_keyprefix or ""
    return list(dict.fromkeys(prefix + channel._q_for_pri(queue, step) for step in channel.priority_steps))


def client(conn: Connection) -> Redis:
    """A client that sends keys as given (see the module docstring), on the connection's bounded pool."""
    return Redis(connection_pool=conn.default_channel.client.connection_pool)


def iter_messages(conn: Connection, queue: str, batch: int = BATCH) -> Iterator[bytes]:
    """Every raw message of `queue`, next-to-be-consumed first, read `batch` at a time so memory
    stays bounded whatever the queue's length."""
    redis = client(conn)
    for key in priority_lists(conn.default_channel, queue):
        length = redis.llen(key)
        for start in range(0, length, batch):
            chunk = redis.lrange(key, -(start + batch), -(start + 1))
            yield from reversed(chunk)


class RedisTransport(VirtualTransport):
    slot_store = "redis"

    def depths(self, conn: Connection, names: list[str]) -> dict[str, QueueDepth]:
        """Ready counts of every priority list of each queue, in one pipeline; for a read of at most
        STAMPED_DEPTHS_MAX queues also the publish stamp of the next message of each list
        (STAMPED_SCRIPT, read on the server), so 200 queues cost one round trip with their latency.

        A wider read (a status document or a queues table of thousands of queues) counts only:
        one COUNT_SCRIPT call per COUNT_CHUNK queues, all in the same pipeline, sums the lists on
        the server, so 10,000 queues cost one round trip and one string of counts, not 80,000
        replies and 40,000 decoded envelopes; their oldest_published_at is None (not read). A caller
        that shows a few of them (a page of the dashboard) reads those again, with their stamps."""
        if not names:
            return {}
        wide = len(names) > STAMPED_DEPTHS_MAX
        source, chunk = (COUNT_SCRIPT, COUNT_CHUNK) if wide else (STAMPED_SCRIPT, STAMPED_CHUNK)
        channel = conn.default_channel
        prefix = channel.global_keyprefix or ""
        # Every queue's lists are its name plus the same suffixes (kombu's _q_for_pri): those of the empty name.
        suffixes = [key[len(prefix) :] for key in priority_lists(channel, "")]
        extra = [] if wide else [messages.PUBLISHED_AT_HEADER]
        # EVAL, not a registered script: redis-py asks SCRIPT EXISTS before a pipeline of those, a
        # second round trip; Redis keeps the compiled script by its digest either way.
        pipe = client(conn).pipeline(transaction=False)
        encoded = [name.encode() for name in names]  # as redis-py sends a str (UTF-8)
        for first in range(0, len(names), chunk):
            listed = b"".join(b"%d:%s" % (len(name), name) for name in encoded[first : first + chunk])
            pipe.eval(source, 0, prefix, len(suffixes), *suffixes, *extra, listed)
        answers = [one for answer in pipe.execute() for one in _text(answer).split(",")]
        if wide:  # equal depths share one (frozen) QueueDepth: 10,000 queues make a handful of objects
            shared: dict[int, QueueDepth] = {}
            counts = map(int, answers)
            return {
                name: shared.get(ready) or shared.setdefault(ready, QueueDepth(ready=ready))
                for name, ready in zip(names, counts, strict=True)
            }
        depths = {}
        for name, answer in zip(names, answers, strict=True):
            ready, _, stamp = answer.partition(" ")
            depths[name] = QueueDepth(ready=int(ready), oldest_published_at=float(stamp) if stamp else None)
        return depths

    def peek(self, conn: Connection, queue: str, first: int, within: Within) -> tuple[Counter, list[bytes]]:
        return count_task_names(within(iter_messages(conn, queue)), first)

    def purge_task_name(self, conn: Connection, queue: str, task_name: str, tally: PurgeTally) -> None:
        """Remove `task_name`'s messages from every priority list of `queue`, one bounded window per
        Redis call (`PURGE_SCRIPT`), until every list is scanned or `tally.deadline` passes; what
        was removed is in `tally` as it goes, so a broker that fails mid-way still tells.

        Windows are counted from the head (the newest end), which only producers move: a message
        pushed meanwhile shifts the next window onto already-cleaned messages (read twice, removed
        never twice), and workers taking from the tail change no position before it. Each window
        is atomic, so a message a worker took is simply not there, and one it is about to take is
        either removed or left whole. A reply lost to a timeout leaves that window's removals
        uncounted, never counted twice. A call's cost: one LRANGE, an LSET per match (each seeks
        from the nearer end of the list) and one LREM that walks from the nearer end to the
        window; Redis has no removal by index, so deep in a very long list that walk is the bulk
        of it (bench/purge_task_name.py)."""
        redis = client(conn)
        script = redis.register_script(PURGE_SCRIPT)
        needle = task_name if _appears_verbatim(task_name) else ""
        tombstone = f"dojo-purge-tombstone:{uuid.uuid4().hex}"
        keys = priority_lists(conn.default_channel, queue)
        for index, key in enumerate(keys):
            start, more = 0, True
            while more:
                args = [start, PURGE_WINDOW, needle, task_name, tombstone, PURGE_WINDOW_MATCHES, PURGE_WINDOW_MAX]
                removed, scanned, at_end, _total = script(keys=[key], args=[*args, "exact", ""])
                tally.purged += removed
                more = not at_end
                start += scanned - removed  # the window's survivors; the next window starts after them
                if (more or index < len(keys) - 1) and time.monotonic() >= tally.deadline:
                    tally.complete = False
                    return

    def message_window(self, conn: Connection, queue: str, position: Position, size: int) -> list[bytes] | None:
        """Up to `size` raw messages of `queue` from `position` (priority list, offset from the
        head), newest first; None past the last list. Head offsets move only when producers push
        (a message read again, never one skipped), not when workers take from the tail."""
        keys = priority_lists(conn.default_channel, queue)
        index, offset = position
        if index >= len(keys):
            return None
        return client(conn).lrange(keys[index], offset, offset + size - 1)

    def purge_matching(
        self, conn: Connection, queue: str, match: MessageMatch, step: PurgeStep, counter: str, cap: int
    ) -> None:
        """Remove messages of `queue` that `match` takes, from `step.position` on, until
        `step.most` more are removed, every list is scanned or `step.windows` PURGE_SCRIPT calls
        are made; `step` is updated as it goes. The counter key `counter` (key prefix added) keeps
        the total removed across calls on Redis itself, never above `cap` (see PURGE_SCRIPT)."""
        redis = client(conn)
        script = redis.register_script(PURGE_SCRIPT)
        if match.task_name:
            mode, name = "exact", match.task_name
        elif match.task_name_prefix:
            mode, name = "prefix", match.task_name_prefix
        else:
            mode, name = "any", ""
        needle = next((text for text in (name, match.args_contain) if text and _appears_verbatim(text)), "")
        tombstone = f"dojo-purge-tombstone:{uuid.uuid4().hex}"
        keys = [*priority_lists(conn.default_channel, queue), (conn.default_channel.global_keyprefix or "") + counter]
        calls, removed_here = 0, 0
        while step.position is not None and calls < step.windows and removed_here < step.most:
            index, start = step.position
            if index >= len(keys) - 1:
                step.position = None
                break
            most = min(PURGE_WINDOW_MATCHES, step.most - removed_here)
            args = [start, PURGE_WINDOW, needle, name, tombstone, most, PURGE_WINDOW_MAX, mode, match.args_contain]
            removed, scanned, at_end, total = script(keys=[keys[index], keys[-1]], args=[*args, cap, COUNTER_TTL])
            calls += 1
            removed_here += removed
            step.total = total
            if total >= cap:
                step.position = None
            elif at_end:
                step.position = (index + 1, 0)
            else:
                step.position = (index, start + scanned - removed)

    def remove_binding(self, conn: Connection, control_exchange: str, worker: str) -> bool:
        """SREM of `worker`'s one member (``routing key SEP pattern SEP queue``, as kombu's
        _queue_bind wrote it) of the pidbox exchange's binding set ``_kombu.binding.<exchange>``
        (key prefix included); nothing else is touched. A worker that starts again binds again."""
        channel = conn.default_channel
        exchange = f"{control_exchange}.pidbox"
        queue = f"{worker}.{exchange}"
        members = [channel.sep.join(meta) for meta in channel.get_table(exchange) if meta[-1] == queue]
        if not members:
            return False
        key = (channel.global_keyprefix or "") + channel.keyprefix_queue % (exchange,)
        return bool(client(conn).srem(key, *members))


def _text(answer: bytes | str) -> str:
    return answer.decode() if isinstance(answer, bytes) else answer


def _appears_verbatim(task_name: str) -> bool:
    """Whether JSON writes `task_name` as is (no escapes), so a substring test can rule messages out."""
    return task_name.isascii() and task_name.isprintable() and not any(char in task_name for char in '"\\/')
