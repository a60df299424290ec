"""Engine <-> worker frames (`protocol.py`): whole frames out of any split of the byte
stream, the hello first, and a garbled frame closes the link. A fake transport on the engine's
side and a socket pair on the worker's: no process, fast tier."""

from __future__ import annotations

import json
import socket
import struct
import threading

from jupyter_torchserve.engine.protocol import MAX_HEADER, FrameLink, SyncConnection, encode


class _Transport:
    def __init__(self) -> None:
        self.closed = False
        self.written = bytearray()

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def writelines(self, buffers) -> None:
        for b in buffers:
            self.written += b


def _link() -> tuple[FrameLink, _Transport, list, list]:
    """A link that records its hello and the frames after it."""
    hellos: list[dict] = []
    frames: list[tuple[dict, bytes]] = []

    def on_hello(link: FrameLink, header: dict) -> None:
        hellos.append(header)
        link.on_frame = lambda h, p: frames.append((h, bytes(p)))

    link = FrameLink(on_hello)
    transport = _Transport()
    link.connection_made(transport)  # type: ignore[arg-type]
    return link, transport, hellos, frames


def _wire(*frames: tuple[dict, bytes | list[bytes]]) -> bytes:
    return b"".join(b"".join(encode(h, p)) for h, p in frames)


def test_frames_are_whole_however_the_stream_is_split():
    """One byte at a time, or everything in one read: the same frames, in order, with the
    bodies located by their spans, and the first one is the hello."""
    bodies = [b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40, b"", b"{}"]
    wire = _wire(
        ({"op": "hello", "worker_id": "9000", "pid": 7}, b""),
        ({"op": "result", "batch": 1}, bodies),
        ({"op": "ready", "device": "cpu"}, b""),
    )
    for step in (1, 3, 1000, len(wire)):
        link, transport, hellos, frames = _link()
        for i in range(0, len(wire), step):
            link.data_received(wire[i : i + step])
        assert hellos == [{"op": "hello", "worker_id": "9000", "pid": 7}]
        assert frames == [
            ({"op": "result", "batch": 1}, b"".join(bodies)),
            ({"op": "ready", "device": "cpu"}, b""),
        ]
        assert not link.broken and not transport.closed


def test_a_frame_whose_header_is_not_json_closes_the_link():
    """Nothing after a garbled frame can be trusted: the link is closed and marked broken
    (the worker behind it is then killed), and frames before it were still delivered."""
    link, transport, hellos, frames = _link()
    garbled = struct.pack("!II", 5, 0) + b"{oops"
    link.data_received(_wire(({"op": "hello", "worker_id": "1"}, b"")) + garbled)
    assert hellos and link.broken and transport.closed


def test_an_oversized_header_length_closes_the_link_before_buffering_it():
    link, transport, _, _ = _link()
    link.data_received(struct.pack("!II", MAX_HEADER + 1, 0))
    assert link.broken and transport.closed


def test_send_writes_the_buffers_of_one_frame_and_nothing_after_close():
    link, transport, _, _ = _link()
    link.send(encode({"op": "stop"}))
    hlen, plen = struct.unpack("!II", transport.written[:8])
    assert json.loads(transport.written[8 : 8 + hlen]) == {"op": "stop"} and plen == 0
    link.close()
    size = len(transport.written)
    link.send(encode({"op": "stop"}))
    assert len(transport.written) == size and link.is_closing()


def test_a_lost_link_tells_its_worker():
    link, _, _, _ = _link()
    lost = []
    link.on_lost = lambda: lost.append(True)
    link.connection_lost(None)
    assert lost == [True] and link.is_closing()


def test_the_worker_side_reads_what_the_engine_side_encodes_large_or_small():
    """SyncConnection (the worker) over a real socket pair: a small frame goes in one write,
    one over 256 KiB buffer by buffer; both arrive whole, with the header's spans intact."""
    a, b = socket.socketpair()
    worker, engine = SyncConnection(a), SyncConnection(b)
    big = bytes(range(256)) * 4096  # 1 MiB: larger than a socket buffer
    try:
        sender = threading.Thread(
            target=lambda: (
                engine.send({"op": "infer", "batch": 1, "reqs": []}, [b"ab", b"c"]),
                engine.send({"op": "infer", "batch": 2}, [big]),
            )
        )
        sender.start()
        header, payload = worker.read_frame()
        assert header == {"op": "infer", "batch": 1, "reqs": []} and bytes(payload) == b"abc"
        header, payload = worker.read_frame()
        sender.join()
        assert header == {"op": "infer", "batch": 2} and bytes(payload) == big
    finally:
        a.close(), b.close()
