"""The intake consumer's acks: sent together, never past a message still in hand."""

from __future__ import annotations

import asyncio
from typing import Any

from aiormq.exceptions import ChannelInvalidStateError

from app.consumers.acks import Acks


class FakeChannel:
    """Records the acks sent on it, as (delivery tag, multiple)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bool]] = []
        self.closed = False


class FakeMessage:
    def __init__(self, channel: FakeChannel, tag: int) -> None:
        self._channel = channel
        self.delivery_tag = tag

    @property
    def channel(self) -> FakeChannel:
        if self._channel.closed:
            raise ChannelInvalidStateError
        return self._channel

    async def ack(self, multiple: bool = False) -> None:
        self.channel.sent.append((self.delivery_tag, multiple))


def messages(channel: FakeChannel, *tags: int) -> dict[int, Any]:
    return {tag: FakeMessage(channel, tag) for tag in tags}


async def ack_together(acks: Acks, *batch: Any) -> None:
    """Ask for these acks in one turn of the loop (as one group commit's handlers do)."""
    await asyncio.gather(*(acks.ack(message) for message in batch))


async def test_the_acks_asked_for_in_one_turn_go_out_as_one() -> None:
    channel, acks = FakeChannel(), Acks()
    m = messages(channel, 1, 2, 3, 4, 5)
    await ack_together(acks, m[3], m[1], m[5], m[2], m[4])
    assert channel.sent == [(5, True)]
    await ack_together(acks, *messages(channel, 6, 7).values())
    assert channel.sent == [(5, True), (7, True)]


async def test_no_ack_covers_a_message_still_in_hand() -> None:
    channel, acks = FakeChannel(), Acks()
    m = messages(channel, 1, 2, 3, 4)
    # 2 is still in hand (awaiting its commit, its dead-letter copy or its requeue).
    await ack_together(acks, m[1], m[3], m[4])
    assert channel.sent == [(1, True), (3, False), (4, False)]
    await ack_together(acks, m[2])
    assert channel.sent[-1] == (2, True)  # nothing unacked below it: the same as a single ack
    # The run goes on from 4: 5 and 6 together again.
    await ack_together(acks, *messages(channel, 5, 6).values())
    assert channel.sent[-1] == (6, True)


async def test_an_unseen_tag_stops_the_run() -> None:
    channel, acks = FakeChannel(), Acks()
    m = messages(channel, 1, 3)  # 2 delivered, its handler not started yet
    await ack_together(acks, m[1], m[3])
    assert channel.sent == [(1, True), (3, False)]


async def test_a_nacked_message_lets_the_run_pass_once_nacked() -> None:
    channel, acks = FakeChannel(), Acks()
    m = messages(channel, 1, 2, 3)
    acks.settled(m[1])  # requeued (nacked) by its handler
    await ack_together(acks, m[2], m[3])
    assert channel.sent == [(3, True)]


async def test_each_channel_counts_its_own_tags_and_a_closed_one_is_skipped() -> None:
    old, new, acks = FakeChannel(), FakeChannel(), Acks()
    stale = messages(old, 1, 2)
    await ack_together(acks, stale[1])
    old.closed = True  # a reconnect: the broker requeued what was unacked on it
    await ack_together(acks, stale[2], *messages(new, 1, 2).values())
    assert old.sent == [(1, True)]
    assert new.sent == [(2, True)]
