"""kombu's filesystem transport (``filesystem://``, the embedded broker): one file per message,
named ``<monotonic ms>_<uuid>.<queue>.msg`` in the data folder; a consumer takes the first of the
sorted names (kombu's Channel._get). Files are read, never moved."""

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from kombu import Connection
from kombu.exceptions import ChannelError
from kombu.transport.filesystem import LOCK_EX, exchange_queue_t, lock, unlock
from kombu.utils.json import dumps, loads

from dojo.ops.brokers import messages
from dojo.ops.brokers.transport import QueueDepth, VirtualTransport, Within


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


class FilesystemTransport(VirtualTransport):
    def depths(self, conn: Connection, names: list[str]) -> dict[str, QueueDepth]:
        """One listing of the data folder, then the first file (in kombu's consumption order) of
        each queue is read for its publish stamp."""
        folder = conn.default_channel.data_folder_in
        wanted = set(names)
        counts = dict.fromkeys(names, 0)
        first_file: dict[str, str] = {}
        for filename in iter_message_files(folder):
            queue = queue_of(filename)
            if queue in wanted:
                counts[queue] += 1
                if queue not in first_file or filename < first_file[queue]:
                    first_file[queue] = filename
        depths = {}
        for name in names:
            raw = read_message_file(folder, first_file[name]) if name in first_file else None
            stamp = messages.published_at(messages.decode(raw)) if raw is not None else None
            depths[name] = QueueDepth(ready=counts[name], oldest_published_at=stamp)
        return depths

    def peek(self, conn: Connection, queue: str, first: int, within: Within) -> tuple[Counter, list[bytes]]:
        """Files come in no order and kombu consumes them by sorted name, so the first ones are the
        `first` smallest names, kept by trimming a short list rather than sorting every name."""
        folder = conn.default_channel.data_folder_in
        by_task: Counter = Counter()
        smallest: list[str] = []
        for name in within(iter_message_files(folder)):
            if not is_message_of(name, queue):
                continue
            raw = read_message_file(folder, name)
            if raw is None:  # taken by a worker meanwhile
                continue
            by_task[messages.task_name(raw) or messages.UNKNOWN_TASK] += 1
            smallest.append(name)
            if len(smallest) > 2 * first:
                smallest = sorted(smallest)[:first]
        first_raw = (read_message_file(folder, name) for name in sorted(smallest)[:first])
        return by_task, [raw for raw in first_raw if raw is not None]

    def remove_binding(self, conn: Connection, control_exchange: str, worker: str) -> bool:
        """Drop `worker`'s row (its ``NAME.<exchange>.pidbox`` queue) from the pidbox exchange's
        table file in the control folder, under the same exclusive lock kombu takes to bind, so
        broadcasts stop writing a message file for it (and the round stops expecting it). A worker
        that starts again binds again. Raises ChannelError when the file cannot be rewritten."""
        channel = conn.default_channel
        exchange = f"{control_exchange}.pidbox"
        queue = f"{worker}.{exchange}"
        path = channel._exchange_file(exchange)  # kombu's own checks of the name and folder
        try:
            with path.open("rb+", buffering=0) as table_file:
                lock(table_file, LOCK_EX)
                try:
                    rows = [exchange_queue_t(*row) for row in loads(table_file.read().decode())]
                    kept = [row for row in rows if row.queue != queue]
                    if len(kept) == len(rows):
                        return False
                    table_file.seek(0)
                    table_file.truncate()
                    table_file.write(dumps(kept).encode())
                    return True
                finally:
                    unlock(table_file)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ChannelError(f"Cannot rewrite {path}") from exc

    def prune_control_messages(self, max_age_seconds: float) -> int:
        """Remove remote-control (pidbox) messages older than `max_age_seconds`: the transport never
        deletes replies nobody read (a ping answered after its caller stopped waiting) nor
        broadcasts to a worker that is gone. Task messages are never touched."""
        options = self.broker.transport_options
        folders = {Path(options["data_folder_in"]), Path(options["data_folder_out"])}
        cutoff = time.time() - max_age_seconds
        removed = 0
        for folder in folders:
            for path in folder.glob("*.pidbox.msg"):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue  # consumed meanwhile
        return removed
