"""A TCP forwarder on loopback that can be paused, to stand for a database outage."""

from __future__ import annotations

import asyncio
from types import TracebackType

from testkit.processes import free_port


class TcpProxy:
    """Forwards a free local port to (host, port). pause() drops every connection and refuses
    new ones, as a crashed server would; refuse() only refuses new ones (the connections open
    stay until the server itself closes them); resume() serves again on the same port.

    The port comes from free_port(), below the ephemeral range: while paused, a port from bind(0)
    could be taken by another test's server, and the "refused" connections would reach it."""

    def __init__(self, host: str, port: int, delay: float = 0.0) -> None:
        self.target = (host, port)
        # Seconds each chunk from the client waits before it goes on: a slow link in.
        self.delay = delay
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> TcpProxy:
        await self.resume()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.pause()

    async def resume(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def pause(self) -> None:
        server = self._stop_listening()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def refuse(self) -> None:
        # No wait_closed(): from Python 3.12 it also waits for the open connections to end.
        self._stop_listening()

    def _stop_listening(self) -> asyncio.Server | None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # the listening socket closes now: new connections are refused
        return server

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, server_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
            try:
                while data := await reader.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                writer.transport.abort()
                self._writers.discard(writer)

        await asyncio.gather(
            pipe(client_reader, server_writer, self.delay), pipe(server_reader, client_writer, 0.0)
        )
