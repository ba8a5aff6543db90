"""The load generator's WebSocket client side (RFC 6455): masked frames and the handshake's
permessage-deflate answer (RFC 7692), with no sockets.

``loadgen.py``'s clients parse the server's frames themselves (in ``Client``, where
the cost per delivery is); this module holds what they send and how they read the
upgrade's answer.
"""

from __future__ import annotations

import os
import struct

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The offer Chromium makes on every WebSocket handshake.
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
#: RFC 7692 §7.2.2: the tail a sender strips from each compressed message.
DEFLATE_TAIL = b"\x00\x00\xff\xff"
DEFLATE_PARAMS = frozenset(
    (
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    )
)


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A masked client frame (payload up to 125 bytes: control frames only)."""
    key = os.urandom(4)
    masked = bytes(b ^ key[i & 3] for i, b in enumerate(payload[:125]))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(masked)) + key + masked


def client_text(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client text (or, with opcode 2, binary) frame of up to 64 KiB."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        raise ValueError("client frames above 64 KiB are not needed here")
    key = os.urandom(4)
    mask = (key * (size // 4 + 1))[:size]
    return head + key + (int.from_bytes(payload) ^ int.from_bytes(mask)).to_bytes(size)


def response_extensions(head: bytes) -> list[tuple[str, dict[str, str | None]]]:
    """The extensions a handshake response accepted: ``[(name, {param: value})]``."""
    found: list[tuple[str, dict[str, str | None]]] = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"sec-websocket-extensions":
            continue
        for item in value.decode("latin-1").split(","):
            parts = [part.strip() for part in item.split(";")]
            if not parts[0]:
                continue
            params: dict[str, str | None] = {}
            for part in parts[1:]:
                key, eq, val = part.partition("=")
                params[key.strip().lower()] = val.strip().strip('"') if eq else None
            found.append((parts[0].lower(), params))
    return found


def negotiate_deflate(head: bytes, offered: bool) -> tuple[bool, bool, str | None]:
    """(negotiated, server_no_context_takeover, error) from a handshake response."""
    accepted = response_extensions(head)
    if not accepted:
        return False, False, None
    if not offered:
        return False, False, f"server accepted extensions never offered: {accepted}"
    if len(accepted) != 1 or accepted[0][0] != "permessage-deflate":
        return False, False, f"unexpected extensions in response: {accepted}"
    params = accepted[0][1]
    unknown = set(params) - DEFLATE_PARAMS
    if unknown:
        return False, False, f"unknown permessage-deflate parameters {sorted(unknown)}"
    if "server_max_window_bits" in params:  # RFC 7692 §7.1.2.1: 8..15; wbits -15 reads any
        bits = params["server_max_window_bits"] or ""
        if not (bits.isdigit() and 8 <= int(bits) <= 15):
            return False, False, f"bad server_max_window_bits {bits!r}"
    return True, "server_no_context_takeover" in params, None
