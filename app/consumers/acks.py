"""Acknowledgements of the intake queue, sent together: one basic.ack (multiple) per group.

The messages of one group commit are answered in the same turn of the event loop. Acking each
on its own was a socket write per message (15% of intake's CPU time); here the acks asked for
in one turn go out together, as one basic.ack with `multiple` up to the highest delivery tag
whose every predecessor on the channel is settled.

`multiple` acks every unacked delivery up to its tag, so it is sent only across tags that each
asked for an ack (or were settled otherwise, e.g. nacked): a message still in hand (awaiting its
commit, its dead-letter copy, or its requeue) is never acked by another's ack. Delivery tags on
one channel are consecutive from 1 and the intake channel carries nothing else, so a tag not yet
seen (its handler not yet started) is a gap that stops the run too. An ack asked for past such a
message is sent on its own.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

log = logging.getLogger(__name__)


class _Channel:
    """What is known of one channel's deliveries: acked up to `through`, and each tag past it."""

    def __init__(self) -> None:
        self.through = 0  # every tag up to this one is acked or settled
        self.settled: set[int] = set()  # past `through`: nacked, or acked on its own
        # Past `through`: asked to be acked in this turn, with the future its handler awaits.
        self.asked: dict[int, tuple[AbstractIncomingMessage, asyncio.Future[None]]] = {}


class Acks:
    """The intake consumer's acks, gathered per turn of the event loop and sent together."""

    def __init__(self) -> None:
        # Keyed by the underlying channel a message came on: after a reconnect the channel is a
        # new one, its tags start again from 1, and the old one's unacked messages are requeued
        # by the broker.
        self._channels: weakref.WeakKeyDictionary[Any, _Channel] = weakref.WeakKeyDictionary()
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()
        # One send at a time, each planned from what the ones before it acked: a tag must never
        # be acked twice (the broker closes the channel for that).
        self._sending = asyncio.Lock()

    async def ack(self, message: AbstractIncomingMessage) -> None:
        """Ack `message`, together with the others asked for in this turn; returns once sent
        (or once its channel is found gone: the broker then redelivers it, and the redelivery is
        recognised as a duplicate)."""
        tag = message.delivery_tag
        state = self._state(message)
        if state is None or tag is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.asked[tag] = (message, done)
        if not self._flushing:
            self._flushing = True
            # After the handlers woken in this turn (by one group's commit) have asked too.
            asyncio.get_running_loop().call_soon(self._flush)
        await done

    def settled(self, message: AbstractIncomingMessage) -> None:
        """`message` was answered otherwise (nacked): a run of acks may pass its tag."""
        tag = message.delivery_tag
        state = self._state(message)
        if state is not None and tag is not None and tag > state.through:
            state.settled.add(tag)
            self._advance(state)

    def _state(self, message: AbstractIncomingMessage) -> _Channel | None:
        try:
            channel = message.channel
        except Exception:  # closed: its unacked messages are back in the queue already
            return None
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        return state

    def _flush(self) -> None:
        self._flushing = False
        for state in list(self._channels.values()):
            if state.asked:
                asked, state.asked = state.asked, {}
                task = asyncio.get_running_loop().create_task(self._send(state, asked))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(
        self, state: _Channel, asked: dict[int, tuple[AbstractIncomingMessage, asyncio.Future[None]]]
    ) -> None:
        try:
            async with self._sending:
                # The run of consecutive tags from the last acked one, each asked for now or
                # settled: one ack with `multiple` covers the ones asked for.
                last = None
                tag = state.through + 1
                while tag in asked or tag in state.settled:
                    if tag in asked:
                        last = tag
                    tag += 1
                try:
                    if last is not None:
                        await _send_ack(asked[last][0], multiple=True)
                    for other in sorted(asked):
                        if last is None or other > last:
                            await _send_ack(asked[other][0], multiple=False)
                finally:
                    state.settled.update(asked)
                    self._advance(state)
        finally:
            for _, done in asked.values():
                if not done.done():
                    done.set_result(None)

    @staticmethod
    def _advance(state: _Channel) -> None:
        while state.through + 1 in state.settled:
            state.through += 1
            state.settled.discard(state.through)


async def _send_ack(message: AbstractIncomingMessage, multiple: bool) -> None:
    try:
        await message.ack(multiple=multiple)
    except Exception as exc:
        # The channel died after the work was done: the broker redelivers the messages, and the
        # redelivery is recognised (duplicate custom_id, or the same dead-letter reason again).
        log.debug("ack failed (%s); the message will be redelivered and recognised", exc)
