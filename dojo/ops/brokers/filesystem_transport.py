"""kombu's filesystem transport (the embedded broker) with message files that appear whole.

kombu writes a message by creating its final file and then writing into it; a consumer that
lists the folder in between moves the still-empty file away, fails to decode it and stops the
worker ("Unrecoverable error: JSONDecodeError"). Here the message is written under a name
consumers skip (`.partial`) and renamed into place, which is atomic on one filesystem.
dojo/celery.py makes ``filesystem://`` URLs use it in every process of the project.
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

PARTIAL_SUFFIX = ".partial"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict, **kwargs) -> None:
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + PARTIAL_SUFFIX
        try:
            with open(partial, "wb") as message_file:
                message_file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {name!r} to the broker's folder") from exc


class Transport(filesystem.Transport):
    Channel = Channel
