"""MLLP server and client over real loopback sockets: framing, limits, hostile peers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from drimbox.hl7.er7 import parse_er7
from drimbox.hl7.messages import acknowledge
from drimbox.hl7.mllp import END_BLOCK, START_BLOCK, MllpServer, frame, send_message
from tests.hl7.ans import hl7_path

HOST = "127.0.0.1"


def message(control_id: str) -> bytes:
    return (
        f"MSH|^~\\&|RIS|SITE|BOX|SITE|20240115101500||ORU^R01^ORU_R01|{control_id}|P|2.5\r"
        "PID|||IPP1^^^SITE&1.2.3&ISO^PI\r"
    ).encode()


def msa(ack: bytes) -> tuple[str, str]:
    segment = parse_er7(ack.decode()).first("MSA")
    assert segment is not None
    return segment.value(1), segment.value(2)


@pytest.fixture
def serve() -> Iterator[Callable[..., int]]:
    servers: list[MllpServer] = []

    def start(handler: Callable[[bytes], bytes] = acknowledge, **limits: float) -> int:
        server = MllpServer(HOST, 0, handler, **limits)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def read_frames(connection: socket.socket, count: int, timeout: float = 5.0) -> list[bytes]:
    connection.settimeout(timeout)
    buffer = b""
    while buffer.count(END_BLOCK) < count:
        data = connection.recv(65536)
        if not data:
            break
        buffer += data
    return [part.lstrip(START_BLOCK) for part in buffer.split(END_BLOCK) if part]


def test_client_gets_the_ack_of_an_ans_sample(serve: Callable[..., int]) -> None:
    port = serve()
    ack = send_message(HOST, port, hl7_path("CR_C-ORU").read_bytes(), timeout=5)
    assert msa(ack) == ("AA", "{{idMessage}}")


def test_two_frames_in_one_packet_get_two_acks(serve: Callable[..., int]) -> None:
    port = serve()
    with socket.create_connection((HOST, port)) as connection:
        connection.sendall(frame(message("ONE")) + frame(message("TWO")))
        acks = read_frames(connection, 2)
    assert [msa(a) for a in acks] == [("AA", "ONE"), ("AA", "TWO")]


def test_garbage_between_frames_is_skipped(serve: Callable[..., int]) -> None:
    port = serve()
    with socket.create_connection((HOST, port)) as connection:
        connection.sendall(b"junk\r\n" + frame(message("A")) + b"\x00\x1c\x0dnoise")
        connection.sendall(START_BLOCK + b"unterminated partial" + frame(message("B")))
        acks = read_frames(connection, 2)
    assert [msa(a) for a in acks] == [("AA", "A"), ("AA", "B")]


def test_frame_split_in_single_bytes_is_reassembled(serve: Callable[..., int]) -> None:
    port = serve()
    with socket.create_connection((HOST, port)) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in frame(message("SPLIT")):
            connection.send(bytes([byte]))
        acks = read_frames(connection, 1)
    assert [msa(a) for a in acks] == [("AA", "SPLIT")]


def test_huge_message_is_rejected_and_connection_closed(serve: Callable[..., int]) -> None:
    limit = 256 * 1024
    port = serve(max_message_size=limit)
    huge = frame(message("HUGE") + b"OBX|1|ED|x||" + b"A" * (4 * limit) + b"\r")
    with socket.create_connection((HOST, port)) as connection:
        sender = threading.Thread(target=_send_ignoring_reset, args=(connection, huge))
        sender.start()
        acks = read_frames(connection, 1)
        sender.join(timeout=5)
        assert closed_by_peer(connection)
    assert msa(acks[0]) == ("AR", "HUGE")
    assert b"exceeds" in acks[0]
    assert msa(send_message(HOST, port, message("AFTER"), timeout=5)) == ("AA", "AFTER")


def closed_by_peer(connection: socket.socket) -> bool:
    connection.settimeout(5)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True


def _send_ignoring_reset(connection: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server closes the connection mid-message
        connection.sendall(data)


def test_idle_connection_is_closed(serve: Callable[..., int]) -> None:
    port = serve(idle_timeout=0.5)
    with socket.create_connection((HOST, port)) as connection:
        connection.sendall(START_BLOCK + b"MSH|^~\\&|")
        started = time.monotonic()
        connection.settimeout(5)
        assert connection.recv(1) == b""
    assert 0.4 < time.monotonic() - started < 3


def test_slow_sender_is_cut_off_at_the_frame_timeout(serve: Callable[..., int]) -> None:
    port = serve(idle_timeout=5, frame_timeout=1.0)
    started = time.monotonic()
    with socket.create_connection((HOST, port)) as connection:
        connection.settimeout(0.2)
        closed = False
        for byte in frame(message("SLOW")):
            try:
                connection.send(bytes([byte]))
                closed = connection.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
            if closed:
                break
    assert closed
    assert time.monotonic() - started < 4
    assert msa(send_message(HOST, port, message("NEXT"), timeout=5)) == ("AA", "NEXT")


def test_failing_handler_gets_an_error_ack_and_server_survives(serve: Callable[..., int]) -> None:
    calls = []

    def handler(raw: bytes) -> bytes:
        calls.append(raw)
        if len(calls) == 1:
            raise RuntimeError("bug")
        return acknowledge(raw)

    port = serve(handler)
    first = send_message(HOST, port, message("BUG"), timeout=5)
    assert msa(first) == ("AE", "BUG")
    assert b"207^Application internal error^HL70357" in first
    assert msa(send_message(HOST, port, message("OK"), timeout=5)) == ("AA", "OK")


def test_concurrent_clients_are_served(serve: Callable[..., int]) -> None:
    port = serve()
    with ThreadPoolExecutor(max_workers=8) as pool:
        acks = list(pool.map(lambda i: send_message(HOST, port, message(f"C{i}"), 5), range(32)))
    assert sorted(msa(a)[1] for a in acks) == sorted(f"C{i}" for i in range(32))


def test_stop_closes_open_connections_promptly() -> None:
    server = MllpServer(HOST, 0, acknowledge)
    port = server.start()
    with socket.create_connection((HOST, port)) as connection:
        connection.sendall(START_BLOCK + b"MSH")
        time.sleep(0.1)
        started = time.monotonic()
        server.stop()
        assert closed_by_peer(connection)
    assert time.monotonic() - started < 3
    with pytest.raises(OSError):
        send_message(HOST, port, message("X"), timeout=1)


def test_client_reports_a_server_that_closes_without_answering() -> None:
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]

    def close_after_read() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()

    thread = threading.Thread(target=close_after_read)
    thread.start()
    with pytest.raises(ConnectionError):
        send_message(HOST, port, message("X"), timeout=5)
    thread.join()
    listener.close()


def test_connections_beyond_the_limit_are_closed(serve: Callable[..., int]) -> None:
    port = serve(max_connections=2)
    held = [socket.create_connection((HOST, port)) for _ in range(2)]
    try:
        time.sleep(0.3)  # let the server register both
        with socket.create_connection((HOST, port)) as extra:
            assert closed_by_peer(extra)
        held[0].sendall(frame(message("HELD")))
        assert [msa(a) for a in read_frames(held[0], 1)] == [("AA", "HELD")]
    finally:
        for connection in held:
            connection.close()


def test_endless_garbage_is_cut_off(serve: Callable[..., int]) -> None:
    port = serve(max_message_size=64 * 1024)
    with socket.create_connection((HOST, port)) as connection:
        _send_ignoring_reset(connection, b"\x00" * (256 * 1024))
        assert closed_by_peer(connection)
    assert msa(send_message(HOST, port, message("AFTER"), timeout=5)) == ("AA", "AFTER")
