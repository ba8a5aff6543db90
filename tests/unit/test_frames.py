"""The sans-IO reader of client frames a taken-over socket uses: no network, no server."""

from __future__ import annotations

import asyncio
import os
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from realtime_hub import frames
from realtime_hub.fastpath import IncomingLimits, Socket
from realtime_hub.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Failure,
    FrameParser,
    close_payload,
    control_frame,
    unmask,
    valid_close_code,
)

Event = tuple[int, object]


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """A client frame as RFC 6455 §5.2 lays it out, masked with a random key.

    ``rsv`` is the three RSV bits (0-7); ``length`` declares another payload length
    than the payload's own (a header announcing more than follows).
    """
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode
    declared = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if declared < 126:
        header = struct.pack("!BB", first, mask_bit | declared)
    elif declared < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, declared)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + naive_xor(payload, key)


def naive_xor(data: bytes, key: bytes) -> bytes:
    """Masking byte by byte, as the RFC spells it out: the reference for :func:`unmask`."""
    return bytes(byte ^ key[i % 4] for i, byte in enumerate(data))


def close(code: int, reason: bytes = b"") -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code) + reason)


def parser(max_size: int = 1 << 20, rate: int = 0, burst: int | None = None) -> FrameParser:
    return FrameParser(IncomingLimits(max_size, rate, burst))


def drain(p: FrameParser) -> list[Event]:
    """Every event the parser can give for what it was fed so far."""
    events = []
    while (event := p.next_event()) is not None:
        events.append(event)
    return events


def parse(data: bytes, p: FrameParser | None = None) -> list[Event]:
    p = p or parser()
    p.feed(data)
    return drain(p)


def failure(data: bytes, p: FrameParser | None = None) -> Failure:
    """The failure parsing ``data`` raises (the test fails if none does)."""
    with pytest.raises(Failure) as info:
        parse(data, p)
    return info.value


# Messages -----------------------------------------------------------------------


def test_text_and_binary_messages() -> None:
    data = frame(OP_TEXT, "héllo 👋".encode()) + frame(OP_BINARY, b"\x00\xff\x80")
    assert parse(data) == [(OP_TEXT, "héllo 👋"), (OP_BINARY, b"\x00\xff\x80")]


def test_empty_messages() -> None:
    assert parse(frame(OP_TEXT) + frame(OP_BINARY)) == [(OP_TEXT, ""), (OP_BINARY, b"")]


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 200_000])
def test_7_16_and_64_bit_lengths(size: int) -> None:
    payload = os.urandom(size)
    data = frame(OP_BINARY, payload)
    assert data[1] & 0x7F == (size if size < 126 else 126 if size < 1 << 16 else 127)
    assert parse(data) == [(OP_BINARY, payload)]


def test_ping_and_pong_carry_their_payload() -> None:
    data = frame(OP_PING, b"are you there") + frame(OP_PONG, b"yes")
    assert parse(data) == [(OP_PING, b"are you there"), (OP_PONG, b"yes")]


def mixed_stream() -> bytes:
    """A bit of everything: short and long frames, fragments, control frames between."""
    return b"".join(
        [
            frame(OP_TEXT, b"first"),
            frame(OP_BINARY, bytes(range(256)) * 2),  # 16-bit length
            frame(OP_TEXT, b"frag", fin=False),
            frame(OP_PING, b"mid"),
            frame(OP_CONTINUATION, "mented é".encode(), fin=False),
            frame(OP_CONTINUATION, b"!"),
            frame(OP_PONG),
            frame(OP_BINARY, b"x" * 70_000),  # 64-bit length
            close(1000, b"done"),
        ]
    )


MIXED_EVENTS: list[Event] = [
    (OP_TEXT, "first"),
    (OP_BINARY, bytes(range(256)) * 2),
    (OP_PING, b"mid"),
    (OP_TEXT, "fragmented é!"),
    (OP_PONG, b""),
    (OP_BINARY, b"x" * 70_000),
    (OP_CLOSE, (1000, "done")),
]


def test_several_frames_in_one_feed() -> None:
    assert parse(mixed_stream()) == MIXED_EVENTS


def test_bytes_fed_one_at_a_time_give_the_same_events() -> None:
    data = mixed_stream()
    p = parser()
    events: list[Event] = []
    for i in range(len(data)):
        p.feed(data[i : i + 1])
        events.extend(drain(p))
    assert events == MIXED_EVENTS


def test_chunks_of_every_size_give_the_same_events() -> None:
    data = mixed_stream()
    for size in (2, 3, 7, 1000, 65536):
        p = parser()
        events: list[Event] = []
        for start in range(0, len(data), size):
            p.feed(data[start : start + size])
            events.extend(drain(p))
        assert events == MIXED_EVENTS, size


def test_nothing_until_a_frame_is_whole() -> None:
    data = frame(OP_TEXT, b"hello")
    p = parser()
    p.feed(data[:-1])
    assert p.next_event() is None
    assert p.next_event() is None  # asking again changes nothing
    p.feed(data[-1:])
    assert p.next_event() == (OP_TEXT, "hello")
    assert p.next_event() is None


def test_fragmented_text_with_a_ping_between_fragments() -> None:
    data = (
        frame(OP_TEXT, b"Hel", fin=False)
        + frame(OP_PING, b"ping!")
        + frame(OP_CONTINUATION, b"lo, ", fin=False)
        + frame(OP_CONTINUATION, b"world")
    )
    # The ping is answered at once; the message once its last fragment is in.
    assert parse(data) == [(OP_PING, b"ping!"), (OP_TEXT, "Hello, world")]


def test_fragmented_binary_and_empty_fragments() -> None:
    data = (
        frame(OP_BINARY, b"", fin=False)
        + frame(OP_CONTINUATION, b"\x01\x02", fin=False)
        + frame(OP_CONTINUATION, b"", fin=False)
        + frame(OP_CONTINUATION, b"\x03")
        + frame(OP_TEXT, b"next")
    )
    assert parse(data) == [(OP_BINARY, b"\x01\x02\x03"), (OP_TEXT, "next")]


def test_utf8_split_across_fragments_decodes() -> None:
    encoded = "é👋".encode()  # 2 + 4 bytes: split inside both characters
    data = (
        frame(OP_TEXT, encoded[:1], fin=False)
        + frame(OP_CONTINUATION, encoded[1:4], fin=False)
        + frame(OP_CONTINUATION, encoded[4:])
    )
    assert parse(data) == [(OP_TEXT, "é👋")]


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"abc\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"],
    ids=["ff", "truncated", "bad-continuation", "surrogate", "over-max"],
)
def test_invalid_utf8_text_is_1007(payload: bytes) -> None:
    fail = failure(frame(OP_TEXT, payload))
    assert (fail.code, fail.limit) == (1007, False)


def test_invalid_utf8_across_fragments_is_1007() -> None:
    data = frame(OP_TEXT, b"ok", fin=False) + frame(OP_CONTINUATION, b"\xc3")
    assert failure(data).code == 1007


def test_invalid_utf8_in_binary_is_fine() -> None:
    assert parse(frame(OP_BINARY, b"\xff\xc3")) == [(OP_BINARY, b"\xff\xc3")]


# Protocol errors ----------------------------------------------------------------


def test_an_unmasked_frame_is_1002() -> None:
    fail = failure(frame(OP_TEXT, b"hi", masked=False))
    assert (fail.code, fail.limit) == (1002, False)


def test_an_unmasked_frame_fails_on_its_header_alone() -> None:
    assert failure(frame(OP_BINARY, b"x" * 1000, masked=False)[:4]).code == 1002


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_rsv_bits_are_1002(rsv: int) -> None:
    assert failure(frame(OP_TEXT, b"hi", rsv=rsv)).code == 1002


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_unknown_opcodes_are_1002(opcode: int) -> None:
    assert failure(frame(opcode, b"?")).code == 1002


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_a_control_frame_over_125_bytes_is_1002(opcode: int) -> None:
    payload = struct.pack("!H", 1000) + b"r" * 124 if opcode == OP_CLOSE else b"p" * 126
    assert len(payload) == 126
    assert failure(frame(opcode, payload)).code == 1002


def test_a_control_frame_of_125_bytes_is_fine() -> None:
    assert parse(frame(OP_PING, b"p" * 125)) == [(OP_PING, b"p" * 125)]


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_a_fragmented_control_frame_is_1002(opcode: int) -> None:
    assert failure(frame(opcode, b"", fin=False)).code == 1002


def test_a_continuation_without_a_start_is_1002() -> None:
    assert failure(frame(OP_CONTINUATION, b"orphan")).code == 1002
    assert failure(frame(OP_CONTINUATION, b"orphan", fin=False)).code == 1002


def test_a_continuation_after_a_finished_message_is_1002() -> None:
    p = parser()
    assert parse(frame(OP_TEXT, b"a", fin=False) + frame(OP_CONTINUATION, b"b"), p) == [
        (OP_TEXT, "ab")
    ]
    assert failure(frame(OP_CONTINUATION, b"c"), p).code == 1002


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_a_new_message_while_one_is_open_is_1002(opcode: int) -> None:
    data = frame(OP_TEXT, b"open", fin=False) + frame(opcode, b"new")
    assert failure(data).code == 1002


def test_events_before_a_violation_are_given_first() -> None:
    p = parser()
    p.feed(frame(OP_TEXT, b"good") + frame(OP_TEXT, b"bad", masked=False))
    assert p.next_event() == (OP_TEXT, "good")
    with pytest.raises(Failure):
        p.next_event()


# Close frames -------------------------------------------------------------------


def test_a_close_without_payload_is_1005() -> None:
    assert parse(frame(OP_CLOSE)) == [(OP_CLOSE, (1005, ""))]


def test_a_close_code_and_reason_are_parsed() -> None:
    assert parse(close(1000, b"bye")) == [(OP_CLOSE, (1000, "bye"))]
    assert parse(close(1001)) == [(OP_CLOSE, (1001, ""))]
    assert parse(close(4321, "au revoir ✋".encode())) == [(OP_CLOSE, (4321, "au revoir ✋"))]


def test_a_close_with_a_1_byte_payload_is_1002() -> None:
    assert failure(frame(OP_CLOSE, b"\x03")).code == 1002


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes_are_1002(code: int) -> None:
    assert not valid_close_code(code)
    assert failure(close(code, b"x")).code == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 4999])
def test_valid_close_codes_are_accepted(code: int) -> None:
    assert valid_close_code(code)
    assert parse(close(code)) == [(OP_CLOSE, (code, ""))]


def test_a_close_reason_that_is_not_utf8_is_1007() -> None:
    fail = failure(close(1000, b"\xff\xfe"))
    assert (fail.code, fail.limit) == (1007, False)


# Limits -------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [1025, 65536, 1 << 40])
def test_a_header_over_max_size_fails_before_its_payload(declared: int) -> None:
    p = parser(max_size=1024)
    header = frame(OP_BINARY, length=declared)  # the header and mask key: no payload
    assert len(header) in (8, 14)
    fail = failure(header, p)
    assert (fail.code, fail.limit) == (1009, True)


def test_a_header_over_max_size_fails_before_its_mask_key() -> None:
    p = parser(max_size=1024)
    fail = failure(frame(OP_TEXT, length=2000)[:4], p)  # first byte, length byte, 16-bit length
    assert (fail.code, fail.limit) == (1009, True)


def test_a_message_of_exactly_max_size_is_fine() -> None:
    p = parser(max_size=1024)
    assert parse(frame(OP_TEXT, b"x" * 1024), p) == [(OP_TEXT, "x" * 1024)]
    # The next message starts from zero again.
    assert parse(frame(OP_BINARY, b"y" * 1024), p) == [(OP_BINARY, b"y" * 1024)]


def test_fragments_adding_up_past_max_size_are_1009() -> None:
    p = parser(max_size=100)
    events = parse(frame(OP_TEXT, b"a" * 60, fin=False) + frame(OP_PING, b"p" * 100), p)
    assert events == [(OP_PING, b"p" * 100)]  # control frames are not counted
    # The continuation's header is enough: its payload never has to arrive.
    fail = failure(frame(OP_CONTINUATION, length=41)[:2], p)
    assert (fail.code, fail.limit) == (1009, True)


def test_fragments_adding_up_to_max_size_are_fine() -> None:
    p = parser(max_size=100)
    data = frame(OP_TEXT, b"a" * 60, fin=False) + frame(OP_CONTINUATION, b"b" * 40)
    assert parse(data, p) == [(OP_TEXT, "a" * 60 + "b" * 40)]


class Clock:
    """Stands in for the ``time`` module inside :mod:`realtime_hub.frames`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(frames, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def test_the_frame_after_a_burst_is_1008(clock: Clock) -> None:
    p = parser(rate=10, burst=10)
    burst = b"".join(frame(OP_TEXT, b"%d" % i) for i in range(10))
    assert parse(burst, p) == [(OP_TEXT, str(i)) for i in range(10)]
    fail = failure(frame(OP_PING, b"one more"), p)
    assert (fail.code, fail.limit) == (1008, True)


def test_the_burst_counts_every_kind_of_frame(clock: Clock) -> None:
    p = parser(rate=10, burst=10)
    kinds = [
        frame(OP_TEXT, b"a", fin=False),
        frame(OP_CONTINUATION, b"b", fin=False),
        frame(OP_CONTINUATION, b"c"),
        frame(OP_BINARY, b"d"),
        frame(OP_PING),
        frame(OP_PONG),
    ]
    assert len(parse(b"".join(kinds + kinds[3:] + [frame(OP_PING)]), p)) == 8  # 10 frames
    assert failure(close(1000), p).code == 1008  # the 11th


def test_the_rate_budget_refills_over_time(clock: Clock) -> None:
    p = parser(rate=10, burst=10)
    assert len(parse(frame(OP_PING) * 10, p)) == 10
    clock.now += 0.5  # 5 frames' worth
    assert len(parse(frame(OP_PING) * 5, p)) == 5
    assert failure(frame(OP_PING), p).code == 1008


def test_the_11th_frame_at_real_time_is_1008() -> None:
    p = parser(rate=10, burst=10)
    p.feed(frame(OP_PING) * 11)  # one burst, as one read
    for _ in range(10):
        assert p.next_event() == (OP_PING, b"")
    with pytest.raises(Failure) as info:
        p.next_event()
    assert (info.value.code, info.value.limit) == (1008, True)


def test_rate_0_never_limits(clock: Clock) -> None:
    p = parser(rate=0)
    assert len(parse(frame(OP_PING) * 5000, p)) == 5000


# Helpers ------------------------------------------------------------------------


@pytest.mark.parametrize("length", [*range(10), 1000])
def test_unmask_matches_a_naive_xor(length: int) -> None:
    for _ in range(5):
        data, key = os.urandom(length), os.urandom(4)
        assert unmask(data, key) == naive_xor(data, key)
        assert unmask(unmask(data, key), key) == data  # masking twice is the identity


def test_unmask_keeps_leading_zeros() -> None:
    key = b"\x00\x00\x00\x00"
    assert unmask(b"\x00\x00\x01", key) == b"\x00\x00\x01"
    assert unmask(b"\x12\x34", b"\x12\x34\x56\x78") == b"\x00\x00"


def test_close_payload_is_the_code_then_the_reason() -> None:
    assert close_payload(1000) == b"\x03\xe8"
    assert close_payload(1009, "too big") == b"\x03\xf1too big"


@pytest.mark.parametrize("reason", ["é" * 100, "👋" * 40, "x" + "€" * 60, "a" * 200])
def test_close_payload_cuts_a_long_reason_to_125_bytes_of_utf8(reason: str) -> None:
    payload = close_payload(1008, reason)
    assert len(payload) <= 125
    assert payload[:2] == b"\x03\xf0"
    text = payload[2:].decode()  # whole characters only
    assert reason.startswith(text)
    assert len(text.encode()) > 123 - 4  # cut at most one character short


def test_control_frame_round_trips_through_a_parser_when_masked() -> None:
    payload = close_payload(4000, "ñ" * 100)
    encoded = control_frame(OP_CLOSE, payload)
    assert encoded[:2] == bytes((0x88, len(payload)))  # FIN + close, unmasked, 7-bit length
    assert encoded[2:] == payload
    parsed = parse(frame(OP_CLOSE, payload))
    assert parsed == [(OP_CLOSE, (4000, payload[2:].decode()))]


@pytest.mark.parametrize(
    "header",
    [
        struct.pack("!BBH", 0x81, 0x80 | 126, 5),  # 16-bit length for 5 bytes
        struct.pack("!BBQ", 0x81, 0x80 | 127, 5),  # 64-bit length for 5 bytes
        struct.pack("!BBQ", 0x82, 0x80 | 127, 65535),  # 64-bit where 16 bits do
        struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 63),  # the top bit set
    ],
)
def test_a_length_not_in_its_shortest_form_is_1002(header: bytes) -> None:
    fail = failure(header + b"\x00\x00\x00\x00hello")
    assert (fail.code, fail.limit) == (1002, False)


class _Transport:
    """What a Socket writes to, recorded: reading paused or not, bytes written."""

    def __init__(self) -> None:
        self.reading = True
        self.pauses = 0
        self.written: list[bytes] = []

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return 0


class _SlowHandler:
    """Takes each message in turn, finishing it only when the test says."""

    def __init__(self) -> None:
        self.got: list[object] = []
        self.release = asyncio.Event()

    def received(self, data: object) -> Any:
        self.got.append(data)
        return self.release.wait()

    def closed(self) -> None:
        pass


async def test_a_busy_handler_gets_later_messages_in_order_and_a_flood_pauses_reading() -> None:
    """While a handler is at a message, later ones wait in the socket's buffer, with no
    pause and resume each time; past a largest message's worth, reading pauses."""
    transport = _Transport()
    handler = _SlowHandler()
    sock = Socket(transport, IncomingLimits(1000), client=1)
    sock.start(handler, lambda _: None)
    sock.data_received(frame(OP_TEXT, b"one") + frame(OP_TEXT, b"two"))
    assert handler.got == ["one"] and transport.reading and transport.pauses == 0
    sock.data_received(frame(OP_TEXT, b"x" * 900))  # still within the bound
    assert transport.reading
    sock.data_received(frame(OP_TEXT, b"y" * 200))  # past it: the kernel holds the rest
    assert not transport.reading and transport.pauses == 1
    handler.release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert handler.got == ["one", "two", "x" * 900, "y" * 200]
    assert transport.reading
