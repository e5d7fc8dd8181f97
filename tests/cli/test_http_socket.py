"""The box's HTTP connections have TCP_NODELAY (no 40 ms Nagle stalls on small answers)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from drimbox.bootstrap import Box


def _nodelay_of_accepted_connection(listener: socket.socket) -> int:
    """TCP_NODELAY of a connection accepted by asyncio (as uvicorn does) on ``listener``."""
    accepted: list[int] = []

    async def probe() -> None:
        async def on_connection(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connection, sock=listener)
        _, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
        for _ in range(200):
            if accepted:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(probe())
    return accepted[0]


@pytest.mark.parametrize(("proto", "expected"), [(0, 0), (socket.IPPROTO_TCP, 1)])
def test_asyncio_sets_nodelay_only_for_listeners_that_declare_tcp(
    proto: int, expected: int
) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    assert bool(_nodelay_of_accepted_connection(listener)) is bool(expected)


def test_the_box_http_listener_declares_tcp_and_nodelay(box_factory: Callable[..., Box]) -> None:
    listener = box_factory().http_listener
    assert listener.proto == socket.IPPROTO_TCP
    assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
