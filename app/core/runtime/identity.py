"""This process's name, stamped on the batch events and delivery attempts it writes, so an
operator (and the replica tests) can tell which replica moved a batch or sent a delivery."""

from __future__ import annotations

import os
import socket


def process_name() -> str:
    """`host:pid`; read each time, so a forked child names itself."""
    return f"{socket.gethostname()[:50]}:{os.getpid()}"
