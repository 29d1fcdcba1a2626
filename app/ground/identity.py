"""Names of this process: stamped on the batch events and delivery attempts it writes (so an
operator, and the replica tests, can tell which replica moved a batch or sent a delivery), and
made unique per lease owner and per broker connection."""

from __future__ import annotations

import os
import socket
import uuid


def process_name() -> str:
    """`host:pid`; read each time, so a forked child names itself."""
    return f"{socket.gethostname()[:50]}:{os.getpid()}"


def instance_name() -> str:
    """`host:pid:random`: one per lease owner or broker, even several in one process (tests)."""
    return f"{process_name()}:{uuid.uuid4().hex[:6]}"
