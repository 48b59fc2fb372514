"""The receiving end of a consumer."""

from __future__ import annotations

import attrs
import trio

from ._errors import AMQPError
from ._properties import Message


@attrs.define(eq=False)
class Consumer:
    """A Basic.Consume subscription as the reader task sees it."""

    tag: str
    send: trio.MemorySendChannel[Message]
    # Why the deliveries stopped, when it was not a Basic.Cancel.
    error: AMQPError | None = None
    cancelled_by_broker: bool = False

    def stop(self, error: AMQPError | None) -> None:
        """End the stream of deliveries; the iterator raises ``error`` if given."""
        if self.error is None:
            self.error = error
        self.send.close()


@attrs.define(eq=False)
class Deliveries:
    """Async iterator of the messages delivered to one consumer.

    It ends when the broker cancels the consumer (queue deleted, for example)
    and raises the channel's or connection's error if either closes.
    """

    _receive: trio.MemoryReceiveChannel[Message]
    _consumer: Consumer

    def __aiter__(self) -> Deliveries:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self._consumer.error is not None:
                raise self._consumer.error._fresh() from None
            raise StopAsyncIteration from None
