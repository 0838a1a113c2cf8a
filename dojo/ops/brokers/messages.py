"""Reading kombu message envelopes as they sit in a queue, without consuming them.

On the Redis and filesystem transports a message is stored as one JSON envelope
``{"body": <base64>, "content-encoding", "content-type", "headers": {...}, "properties": {...}}``;
Celery's protocol 2 puts what an operator needs (task name, id, eta, argsrepr, kwargsrepr)
and the project's publish stamp in the headers, so the body is never decoded.
"""

import json
import re
from dataclasses import dataclass

from dojo.publishing import PUBLISHED_AT_HEADER

UNKNOWN_TASK = "(unknown)"  # a message without a task header (not a Celery protocol 2 task)
# The first "task" key of an envelope is the header (the body before it is base64); an
# unescaped quote cannot occur inside a JSON string, so this never matches inside a value.
TASK_NAME = re.compile(rb'"task":\s*"((?:[^"\\]|\\.)*)"')


def decode(raw: bytes | str) -> dict | None:
    """The kombu message envelope (body, headers, properties), or None if it is not JSON."""
    try:
        payload = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def headers_of(envelope: dict | None) -> dict:
    headers = (envelope or {}).get("headers")
    return headers if isinstance(headers, dict) else {}


def published_at(envelope: dict | None) -> float | None:
    """The publish time stamped by dojo.publishing.stamp_publish_time (epoch seconds), if any."""
    stamp = headers_of(envelope).get(PUBLISHED_AT_HEADER)
    return float(stamp) if isinstance(stamp, int | float) else None


def task_name(raw: bytes) -> str | None:
    """The task name of a raw envelope, found without parsing the whole message (a scan of a
    million messages would otherwise spend most of its time in json.loads)."""
    found = TASK_NAME.search(raw)
    if found:
        return json.loads(b'"' + found.group(1) + b'"')
    return headers_of(decode(raw)).get("task")


def task_id(envelope: dict | None) -> str | None:
    """The task id of a protocol 2 message (its `id` header), if any."""
    found = headers_of(envelope).get("id")
    return found if isinstance(found, str) and found else None


@dataclass(frozen=True)
class MessageMatch:
    """Which queued messages a bulk action takes: a task name (exact) or name prefix, and text the
    message's argsrepr or kwargsrepr header contains; an empty condition matches any message.
    RedisTransport's PURGE_SCRIPT applies the same rule on the server (tests check they agree)."""

    task_name: str = ""
    task_name_prefix: str = ""
    args_contain: str = ""

    def matches(self, raw: bytes) -> bool:
        if self.task_name or self.task_name_prefix:
            name = task_name(raw)
            if not isinstance(name, str) or (self.task_name and name != self.task_name):
                return False
            if not name.startswith(self.task_name_prefix):
                return False
        return not self.args_contain or self.args_contain_in(decode(raw))

    def args_contain_in(self, envelope: dict | None) -> bool:
        headers = headers_of(envelope)
        texts = (headers.get("argsrepr"), headers.get("kwargsrepr"))
        return any(isinstance(text, str) and self.args_contain in text for text in texts)
