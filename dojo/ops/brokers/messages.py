"""Reading kombu message envelopes as they sit in a queue, without consuming them.

On the Redis and filesystem transports a message is stored as one JSON envelope
``{"body": <base64>, "content-encoding", "content-type", "headers": {...}, "properties": {...}}``;
Celery's protocol 2 puts what an operator needs (task name, id, eta, argsrepr, kwargsrepr)
and our publish stamp in the headers, so the body is never decoded.
"""

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from dojo.ops.brokers.redis_lists import decode
from dojo.publishing import PUBLISHED_AT_HEADER

# The first "task" key of an envelope is the header (the body before it is base64); an
# unescaped quote cannot occur inside a JSON string, so this never matches inside a value.
TASK_NAME = re.compile(rb'"task":\s*"((?:[^"\\]|\\.)*)"')


def headers_of(envelope: dict | None) -> dict:
    headers = (envelope or {}).get("headers")
    return headers if isinstance(headers, dict) else {}


def published_at(envelope: dict | None) -> float | None:
    """The publish time stamped by dojo.celery.stamp_publish_time (epoch seconds), if any."""
    stamp = headers_of(envelope).get(PUBLISHED_AT_HEADER)
    return float(stamp) if isinstance(stamp, int | float) else None


def task_name(raw: bytes) -> str | None:
    """The task name of a raw envelope, found without parsing the whole message (a scan of a
    million messages would otherwise spend most of its time in json.loads)."""
    found = TASK_NAME.search(raw)
    if found:
        return json.loads(b'"' + found.group(1) + b'"')
    return headers_of(decode(raw)).get("task")


# The embedded filesystem broker: one file per message, named "<monotonic ms>_<uuid>.<queue>.msg"
# in the data folder; a consumer takes the first of the sorted names (kombu's Channel._get).


def is_message_of(filename: str, queue: str) -> bool:
    return filename.partition(".")[2] == f"{queue}.msg"


def queue_of(filename: str) -> str | None:
    rest = filename.partition(".")[2]
    return rest.removesuffix(".msg") if rest.endswith(".msg") else None


def iter_message_files(folder: str | Path) -> Iterator[str]:
    """Every file name in the broker's data folder, streamed (no list of a million names)."""
    with os.scandir(folder) as entries:
        for entry in entries:
            yield entry.name


def read_message_file(folder: str | Path, filename: str) -> bytes | None:
    """The envelope of one message file; None if a worker took it meanwhile."""
    try:
        return (Path(folder) / filename).read_bytes()
    except OSError:
        return None
