"""kombu's filesystem transport, made safe for several processes sharing one folder.

Upstream writes a message file in place (a consumer listing the folder can pick it up half written and
crash on the empty JSON), and moves taken messages to the system temp folder (a copy across filesystems,
which two consumers can both win). Here a message is written under a temporary name and renamed into
place, and a consumer takes a message by an atomic rename inside the broker folder, so exactly one
consumer gets each complete message.
"""

from __future__ import annotations

import logging
import os
import uuid
from queue import Empty
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):  # noqa: ANN001, ANN201
        # Zero-padded time first, so the folder's sorted listing is oldest first.
        name = f"{int(round(monotonic() * 1000)):015d}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        tmp = os.path.join(self.data_folder_out, f".tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(tmp, final)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise ChannelError(f"Cannot add message {name!r} to {self.data_folder_out}") from exc

    def _get(self, queue):  # noqa: ANN001, ANN201
        wanted = f"{queue}.msg"
        taken_dir = self.processed_folder
        os.makedirs(taken_dir, exist_ok=True)
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            taken = os.path.join(taken_dir, f"{name}.{os.getpid()}")
            try:
                os.rename(os.path.join(self.data_folder_in, name), taken)  # atomic: one consumer wins
            except OSError:
                continue  # another consumer took it
            try:
                with open(taken, "rb") as f:
                    payload = f.read()
            finally:
                if not self.store_processed:
                    os.unlink(taken)
            try:
                return loads(bytes_to_str(payload))
            except ValueError:
                log.error("dropping unreadable broker message %s", name)
                continue
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel
