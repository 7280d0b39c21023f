#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: tests/fuzz/corpus/<target>/<name>.

Run it after changing the protocol or a fuzz target's input format:

    python3 tests/fuzz/make_seeds.py

It (re)writes only the files it names, so inputs added to a corpus by hand or by
`scripts/fuzz --save` stay. Output is deterministic: running it twice changes nothing.

The frames follow docs/PROTOCOL.md; the records of fuzz_session follow the format described
at the top of tests/fuzz/fuzz_session.cpp (and implemented by its peer_frame/local_action).
"""

import hashlib
import hmac
import base64
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# ---------------------------------------------------------------------------------------------
# Frames (docs/PROTOCOL.md)

HELLO, WELCOME, REFUSE, OPEN, OPEN_RESULT, DATA, WINDOW_UPDATE, RESET, PING, GOAWAY = range(10)
MOVE = 11
FIN = ACK = 0x1
LANES = MOVABLE = RESUME = 0x2  # HELLO/WELCOME, OPEN_RESULT, OPEN
BULK_LANE = 0x4  # HELLO
MAX_WINDOW = 0x7FFFFFFF


def frame(ftype, payload=b"", flags=0, stream=0, length=None):
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + struct.pack(">BBI", ftype, flags, stream) + payload


def msg(text):
    b = text.encode()
    return struct.pack(">H", len(b)) + b


def hello(token=b"good", role=0, session_window=16 << 20, stream_window=2 << 20, version=1,
          flags=0):
    return frame(HELLO, struct.pack(">HBIIH", version, role, session_window, stream_window,
                                    len(token)) + token, flags=flags)


def welcome(session_window=16 << 20, stream_window=2 << 20, keepalive=15000, version=1, flags=0):
    return frame(WELCOME, struct.pack(">HIII", version, session_window, stream_window, keepalive),
                 flags=flags)


def refuse(code, text):
    return frame(REFUSE, struct.pack(">B", code) + msg(text))


def open_(stream, device=b"dev-42", port=22, proto=0, window=2 << 20, flags=0):
    return frame(OPEN, struct.pack(">BHIB", proto, port, window, len(device)) + device,
                 stream=stream, flags=flags)


def open_result(stream, code=0, window=2 << 20, text="", flags=0):
    return frame(OPEN_RESULT, struct.pack(">BI", code, window) + msg(text), stream=stream,
                 flags=flags)


TOKEN = bytes(range(0x10, 0x20))  # a move token (16 bytes)


def move(stream, token=TOKEN):
    return frame(MOVE, token, stream=stream)


def data(stream, payload, fin=False):
    return frame(DATA, payload, flags=FIN if fin else 0, stream=stream)


def window_update(stream, increment):
    return frame(WINDOW_UPDATE, struct.pack(">I", increment), stream=stream)


def reset(stream, code=13, text="stream reset by peer"):
    return frame(RESET, struct.pack(">B", code) + msg(text), stream=stream)


def ping(opaque, ack=False):
    return frame(PING, struct.pack(">Q", opaque), flags=ACK if ack else 0)


def goaway(last, code=12, text="server is shutting down"):
    return frame(GOAWAY, struct.pack(">IB", last, code) + msg(text))


def codec_seeds():
    s = {}
    s["hello-client"] = hello(b"tt_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG")
    s["hello-agent-min-windows"] = hello(b"", role=1, session_window=1, stream_window=1)
    s["hello-max-token"] = hello(b"t" * 1024, session_window=MAX_WINDOW, stream_window=MAX_WINDOW)
    s["welcome"] = welcome()
    s["welcome-no-keepalive"] = welcome(65536, 65536, 0)
    s["refuse-bad-token"] = refuse(6, "authentication failed: token rejected")
    s["refuse-version"] = refuse(10, "this server speaks version 1")
    s["open-tcp"] = open_(1)
    s["open-udp"] = open_(3, b"dev-42", 53, proto=1, window=65536)
    s["open-longest-device"] = open_(5, b"d" * 64, 65535)
    s["open-result-ok"] = open_result(1)
    s["open-result-refused"] = open_result(3, 3, 0, "connection refused by the device")
    s["open-result-unknown"] = open_result(5, 1, 0, "unknown device 'dev-9'")
    s["data-small"] = data(1, b"hello")
    s["data-fin-empty"] = data(5, b"", fin=True)
    s["data-max"] = data(9, bytes(range(256)) * 64)
    s["window-update-session"] = window_update(0, 12345)
    s["window-update-stream-max"] = window_update(3, MAX_WINDOW)
    s["reset"] = reset(11)
    s["ping"] = ping(0x0102030405060708)
    s["ping-ack"] = ping(42, ack=True)
    s["goaway"] = goaway(99)
    s["goaway-empty-message"] = goaway(0, 12, "")
    # Streams of several frames, as a session reads them.
    s["stream-client-session"] = (hello() + open_(1) + data(1, b"GET / HTTP/1.0\r\n\r\n") +
                                  window_update(0, 65536) + data(1, b"", fin=True) +
                                  ping(7) + goaway(1))
    s["stream-server-session"] = (welcome() + open_result(1) + data(1, b"x" * 1000) +
                                  window_update(1, 1000) + reset(1) + ping(7, ack=True))
    s["stream-truncated"] = (open_(1) + data(1, b"abcdef"))[:-3]
    # Invalid on purpose: each is refused for one reason.
    s["bad-type"] = frame(10, b"")
    s["bad-length-above-64k"] = frame(DATA, b"", stream=1, length=65537)
    s["bad-data-above-16k"] = data(1, b"z" * 16385)
    s["bad-data-flags"] = frame(DATA, b"x", flags=0x2, stream=1)
    s["bad-ping-flags"] = frame(PING, struct.pack(">Q", 1), flags=0x80)
    s["bad-session-frame-on-stream"] = frame(PING, struct.pack(">Q", 1), stream=3)
    s["bad-stream-frame-on-0"] = data(0, b"x")
    s["bad-hello-role"] = hello(role=7)
    s["bad-hello-window-0"] = hello(stream_window=0)
    s["bad-hello-token-too-long"] = hello(b"t" * 1025)
    s["bad-open-device"] = open_(1, b"dev 42")
    s["bad-open-proto"] = open_(1, proto=2)
    s["bad-window-update-0"] = window_update(1, 0)
    s["bad-trailing-bytes"] = frame(WINDOW_UPDATE, struct.pack(">IB", 5, 0), stream=1)
    s["bad-short-fields"] = frame(WELCOME, struct.pack(">HI", 1, 65536))
    s["bad-message-too-long"] = frame(RESET, struct.pack(">BH", 13, 1025) + b"m" * 1025, stream=1)
    s["header-only-prefix"] = hello()[:5]
    # Lanes: offered, a stream marked movable, a MOVE, and the claim that resumes it.
    s["hello-lanes"] = hello(flags=LANES)
    s["hello-bulk-lane"] = hello(flags=LANES | BULK_LANE)
    s["welcome-lanes"] = welcome(flags=LANES)
    s["open-result-movable"] = open_result(1, flags=MOVABLE)
    s["move"] = move(1)
    s["open-resume"] = open_(3, TOKEN.hex().encode(), 0, flags=RESUME)
    s["bad-move-short"] = frame(MOVE, TOKEN[:15], stream=1)
    s["bad-move-flags"] = frame(MOVE, TOKEN, flags=0x1, stream=1)
    s["bad-move-on-0"] = move(0)
    s["bad-open-resume-port"] = open_(3, TOKEN.hex().encode(), 22, flags=RESUME)
    s["bad-open-resume-not-hex"] = open_(3, b"dev-42", 0, flags=RESUME)
    return s


# ---------------------------------------------------------------------------------------------
# fuzz_session records (see fuzz_session.cpp)
#
# setup byte: bit0 stream window 64 KiB, bit1 session window 128 KiB, bit2 max 4 streams,
#             bit3 peer session window 100, bit4 peer stream window 100, bit5 role agent,
#             bit6 the peer stalls (reads only at read records), bit7 64 KiB queued at most.
# record kinds: 0 OPEN, 1 DATA (with flag 4: MOVE, its token after), 2 WINDOW_UPDATE, 3 RESET, 4 PING, 5 GOAWAY, 6 OPEN_RESULT,
#             7 handshake frame, 8 raw bytes, 9 DATAGRAM (kind % 10 below 200);
#             200-229 deliver; 230-237 the peer reads u16 << (kind % 8) bytes;
#             240-255 local action (the L_ names below, action % 12).
# Ports choose the open handler by port % 6: 0 echo (a flow: datagram by datagram), 1 hold,
# 2 reset, 3 drop, 4 refuse, 5 callback reader (a flow: and echo); device index 2
# ("nowhere") is refused as unknown. An OPEN's proto byte: even tcp, odd udp.

ECHO, HOLD, RESET_IT, DROP, REFUSE_IT, CALLBACK = 6, 7, 8, 9, 10, 11
DEV1, DEV2, NOWHERE = 0, 1, 2
W_1, W_100, W_16K, W_64K, W_2M, W_MAX, W_0 = range(7)


def sid(n):
    """The id byte for stream n (1..20)."""
    return bytes([n - 1])


def r_open(n, port, device=DEV1, window=W_2M, proto=0):
    return bytes([0]) + sid(n) + bytes([proto]) + struct.pack(">H", port) + bytes([window, device])


def r_data(n, length, fin=False, payload=None):
    flags = (1 if fin else 0) | (2 if payload is not None else 0)
    out = bytes([1]) + sid(n) + bytes([flags]) + struct.pack(">H", length)
    return out + (payload if payload is not None else b"")


def r_window(n, b):
    """b < 128: that increment; 128..249: 1 << (b % 32)."""
    return bytes([2]) + (sid(n) if n else bytes([200])) + bytes([b])


def r_reset(n, code=13, text=b"bye"):
    return bytes([3]) + sid(n) + bytes([code, len(text)]) + text


def r_ping(opaque=1, ack=False):
    return bytes([4, 1 if ack else 0]) + struct.pack(">Q", opaque)


def r_goaway(last=1, code=12, text=b"going away"):
    return bytes([5]) + sid(last) + bytes([code, len(text)]) + text


def r_open_result(n, code=0, window=W_2M, text=b""):
    return bytes([6]) + sid(n) + bytes([code, window, len(text)]) + text


def r_handshake(which):
    return bytes([7, which])


def r_raw(b):
    return bytes([8, len(b)]) + b


def r_move(n, token=TOKEN):
    """MOVE on stream n: a DATA record with flag 4, its token from the 16 bytes after it."""
    return bytes([1]) + sid(n) + bytes([4]) + struct.pack(">H", 0) + token


def r_datagram(n, length, payload=None):
    """A DATAGRAM of `length` pattern bytes (or `payload`); above 65,507 it is invalid."""
    out = bytes([9]) + sid(n) + bytes([2 if payload is not None else 0]) + \
        struct.pack(">H", length)
    return out + (payload if payload is not None else b"")


DELIVER = bytes([200])


def r_read(n):
    """A stalling peer reads n bytes (up to 65535) of the session's output."""
    return bytes([230]) + struct.pack(">H", n)


def r_local(action, index=0, extra=b""):
    return bytes([240, action, index]) + extra


(L_OPEN, L_GOAWAY, L_RESET, L_EOF, L_SEND, L_DRAIN, L_DROP, L_CLOSE, L_OPEN_UDP, L_DGRAM,
 L_DGRAMS, L_NONE) = range(12)
UDP = 1
MAX_DATAGRAM = 65507


def r_local_dgram(size, index=0):
    """The local side offers one datagram of `size` pattern bytes on a held stream."""
    return r_local(L_DGRAM, index, struct.pack(">H", size))


def r_local_dgrams(count, size, index=0):
    """... or a burst of `count` (1..256) of them."""
    return r_local(L_DGRAMS, index, bytes([count - 1]) + struct.pack(">H", size))


def session_seeds():
    s = {}
    plain = bytes([0])
    small = bytes([0b00011])  # our windows small
    s["echo-hello-fin"] = plain + r_open(1, ECHO) + r_data(1, 5, payload=b"hello") + DELIVER + \
        r_data(1, 0, fin=True)
    s["echo-bulk-small-windows"] = small + r_open(1, ECHO) + b"".join(
        r_data(1, 16384) + DELIVER for _ in range(6)) + r_window(1, 140) + r_window(0, 145)
    s["echo-peer-window-100"] = bytes([0b11000]) + r_open(1, ECHO) + r_data(1, 4000) + DELIVER + \
        r_window(1, 100) + r_window(0, 100) + DELIVER + r_window(1, 140) + r_window(0, 140)
    s["hold-then-drain"] = plain + r_open(1, HOLD) + r_data(1, 1000) + DELIVER + \
        r_local(L_DRAIN) + r_data(1, 10, fin=True) + DELIVER + r_local(L_DRAIN)
    s["hold-send-eof"] = plain + r_open(1, HOLD) + DELIVER + r_local(L_SEND, 0, b"\x10\x00") + \
        r_local(L_EOF) + r_data(1, 0, fin=True)
    s["hold-reset-local"] = plain + r_open(1, HOLD) + DELIVER + r_local(L_RESET) + r_data(1, 100)
    s["hold-drop"] = plain + r_open(1, HOLD) + r_data(1, 100) + DELIVER + r_local(L_DROP) + \
        r_data(1, 100)
    s["reset-by-handler"] = plain + r_open(1, RESET_IT) + r_data(1, 100) + r_reset(1)
    s["dropped-unanswered"] = plain + r_open(1, DROP) + r_data(1, 100)
    s["refused"] = plain + r_open(1, REFUSE_IT) + r_data(1, 100, fin=True)
    s["unknown-device"] = plain + r_open(1, ECHO, device=NOWHERE)
    # Lanes (a client's session offers them): a MOVE answered by the echo's own, one that
    # ends a held stream's direction, and violations (twice, on a refused stream).
    s["move-echo"] = plain + r_open(1, ECHO) + r_data(1, 5, payload=b"hello") + DELIVER + \
        r_move(1) + DELIVER
    s["move-hold"] = plain + r_open(1, HOLD) + r_data(1, 1000) + DELIVER + r_local(L_DRAIN) + \
        r_move(1) + DELIVER + r_local(L_DRAIN) + r_local(L_EOF)
    s["move-twice"] = plain + r_open(1, ECHO) + DELIVER + r_move(1) + r_move(1) + DELIVER
    s["move-refused-stream"] = plain + r_open(1, REFUSE_IT) + DELIVER + r_move(1) + DELIVER
    s["callback-reader"] = plain + r_open(1, CALLBACK) + r_data(1, 3, payload=b"abc") + DELIVER + \
        r_data(1, 16384) + DELIVER + r_data(1, 0, fin=True)
    s["many-streams-limit-4"] = bytes([0b100]) + b"".join(
        r_open(n, ECHO if n % 4 == 1 else HOLD) for n in (1, 3, 5, 7, 9, 11)) + DELIVER
    s["stream-id-reused"] = plain + r_open(3, ECHO) + r_open(1, ECHO)
    s["stream-id-wrong-parity"] = plain + r_open(2, ECHO)
    s["data-unknown-stream"] = plain + r_data(7, 100) + r_data(9, 0, fin=True)
    s["data-after-fin"] = plain + r_open(1, HOLD) + r_data(1, 10, fin=True) + r_data(1, 10)
    s["data-above-stream-window"] = small + r_open(1, HOLD) + b"".join(
        r_data(1, 16384) for _ in range(5))
    s["data-above-session-window"] = bytes([0b10]) + b"".join(
        r_open(n, HOLD) + r_data(n, 16384) * 3 for n in (1, 3, 5))
    s["window-overflow"] = plain + r_open(1, ECHO) + r_window(1, 158) + r_window(1, 158) + \
        r_window(0, 158) + r_window(0, 158)
    s["window-update-unknown"] = plain + r_window(5, 1)
    s["reset-unknown"] = plain + r_reset(9)
    s["ping-and-ack"] = plain + r_ping(7) + r_ping(8, ack=True) + DELIVER + r_ping(9)
    s["peer-goaway"] = plain + r_open(1, ECHO) + r_goaway(1) + r_data(1, 10, fin=True) + \
        r_open(3, ECHO)
    s["local-goaway-then-open"] = plain + r_local(L_GOAWAY, 0, b"\x04bye!") + r_open(1, ECHO)
    s["local-open-accepted"] = bytes([0b100000]) + r_local(L_OPEN, 0, b"\x00\x16") + \
        r_open_result(2) + r_data(2, 5, payload=b"hello") + DELIVER + r_local(L_DRAIN) + \
        r_local(L_EOF) + r_data(2, 0, fin=True)
    s["local-open-refused"] = bytes([0b100000]) + r_local(L_OPEN, 0, b"\x00\x16") + \
        r_open_result(2, 3, W_0, b"connection refused")
    s["open-result-twice"] = plain + r_local(L_OPEN, 0, b"\x00\x16") + r_open_result(2) + \
        r_open_result(2)
    s["open-result-on-a-peer-stream"] = bytes([0b1000000]) + r_open(1, ECHO) + \
        r_data(1, 2245) + DELIVER + r_open_result(1, 0, W_1) + DELIVER + r_read(65535)
    s["open-result-unasked"] = plain + r_open_result(4) + r_open_result(1, 2, W_0, b"no")
    s["handshake-frames-again"] = plain + r_handshake(0) + r_handshake(1) + r_handshake(2)
    s["raw-garbage"] = plain + r_raw(b"\xff" * 12)
    s["raw-frame-too-large"] = plain + r_raw(b"\x01\x00\x01\x05\x00\x00\x00\x00\x01")
    s["raw-open-invalid-device"] = plain + r_raw(open_(1, b"bad id"))
    s["local-close"] = plain + r_open(1, ECHO) + r_data(1, 100) + r_local(L_CLOSE) + r_data(1, 1)
    s["interleaved-echo-hold-callback"] = small + r_open(1, ECHO) + r_open(3, HOLD) + \
        r_open(5, CALLBACK) + b"".join(r_data(n, 8000) for n in (1, 3, 5) for _ in range(3)) + \
        DELIVER + r_local(L_DRAIN, 1) + r_reset(5) + r_data(1, 0, fin=True) + \
        r_data(3, 0, fin=True) + DELIVER + r_local(L_EOF, 0)
    stalls = bytes([0b1000000])
    s["stalled-peer-ping-flood"] = stalls + (r_ping(1) * 200 + DELIVER) * 10 + r_read(1000) + \
        (r_ping(2) * 200 + DELIVER) * 10
    s["stalled-peer-echo-bulk"] = stalls + r_open(1, ECHO) + (r_data(1, 16384) + DELIVER) * 8 + \
        r_read(30000) + r_open(3, ECHO) + r_data(3, 10, fin=True) + DELIVER + r_read(65535)
    s["stalled-peer-small-queue"] = bytes([0b11000000]) + r_open(1, ECHO) + r_open(3, ECHO) + \
        (r_data(1, 16384) + r_data(3, 16384) + DELIVER) * 4 + r_read(5000) + \
        r_local(L_OPEN, 0, b"\x00\x16") + (r_ping(3) * 100 + DELIVER) * 5
    s.update(flow_seeds())
    return s


def flow_seeds():
    """UDP flows: DATAGRAM frames both ways, and what the protocol forbids on them."""
    s = {}
    plain = bytes([0])
    s["flow-echo-both-ways"] = plain + r_open(1, ECHO, proto=UDP) + \
        r_datagram(1, 4, payload=b"ping") + r_datagram(1, 1400) + r_datagram(1, 0) + DELIVER + \
        r_datagram(1, MAX_DATAGRAM) + r_datagram(1, 1) + DELIVER
    s["flow-callback-echo"] = plain + r_open(1, CALLBACK, proto=UDP) + \
        r_datagram(1, 3, payload=b"abc") + r_datagram(1, 0) + DELIVER + r_datagram(1, 512) + \
        DELIVER + r_reset(1, 5, b"idle")
    s["flow-empty-datagrams"] = plain + r_open(1, HOLD, proto=UDP) + r_datagram(1, 0) * 3 + \
        DELIVER + r_local(L_DRAIN) + r_local_dgram(0) + r_local_dgram(0) + r_datagram(1, 0) + \
        DELIVER + r_local(L_DRAIN)
    s["flow-held-sizes"] = plain + r_open(1, HOLD, proto=UDP) + DELIVER + r_local_dgram(1) + \
        r_local_dgram(MAX_DATAGRAM) + r_local_dgram(MAX_DATAGRAM + 1) + r_local_dgram(65535) + \
        r_window(0, 150) + r_window(1, 150) + DELIVER + r_local_dgram(MAX_DATAGRAM)
    s["flow-hold-drain-reset"] = plain + r_open(1, HOLD, proto=UDP) + b"".join(
        r_datagram(1, n) for n in (10, 0, 300, 65000)) + DELIVER + r_local(L_DRAIN) + \
        r_local_dgrams(8, 1000) + r_local(L_RESET) + r_datagram(1, 20) + DELIVER
    s["flow-drop"] = plain + r_open(1, HOLD, proto=UDP) + r_datagram(1, 100) + DELIVER + \
        r_local_dgram(100) + r_local(L_DROP) + r_datagram(1, 100) + r_window(1, 100) + DELIVER
    s["flow-and-tcp-side-by-side"] = plain + r_open(1, ECHO) + r_open(3, ECHO, proto=UDP) + \
        r_open(5, HOLD) + r_open(7, HOLD, proto=UDP) + (r_data(1, 16384) + r_datagram(3, 1400) +
                                                        r_datagram(7, 200) + DELIVER) * 4 + \
        r_local_dgram(700, 3) + r_local_dgram(700, 2) + r_local(L_SEND, 3, b"\x01\x00") + \
        r_local(L_EOF, 3) + r_local(L_DRAIN, 3) + r_data(1, 0, fin=True) + DELIVER
    s["flow-local-open"] = bytes([0b100000]) + r_local(L_OPEN_UDP, 0, b"\x00\x35") + \
        r_open_result(2) + DELIVER + r_local_dgram(60) + r_datagram(2, 60) + \
        r_datagram(2, 0) + DELIVER + r_local(L_DRAIN) + r_local(L_OPEN_UDP, 0, b"\x00\x35") + \
        r_open_result(4, 3, W_0, b"port unreachable") + DELIVER + r_local(L_RESET)
    s["flow-byte-stream-calls"] = plain + r_open(1, HOLD, proto=UDP) + DELIVER + \
        r_local(L_SEND, 0, b"\x00\x10") + r_local(L_EOF) + r_local_dgram(16) + DELIVER
    s["flow-datagram-on-tcp-held"] = plain + r_open(1, HOLD) + DELIVER + r_local_dgram(16) + \
        r_data(1, 16) + DELIVER + r_local(L_DRAIN)
    # Each of these ends the session with a protocol error.
    s["flow-datagram-on-tcp-stream"] = plain + r_open(1, ECHO) + r_datagram(1, 10)
    s["flow-data-on-flow"] = plain + r_open(1, HOLD, proto=UDP) + r_data(1, 10)
    s["flow-fin-on-flow"] = plain + r_open(1, ECHO, proto=UDP) + r_data(1, 0, fin=True)
    s["flow-datagram-unopened"] = plain + r_datagram(7, 10)
    s["flow-datagram-before-accept"] = plain + r_local(L_OPEN_UDP, 0, b"\x00\x35") + \
        r_datagram(2, 10)
    s["flow-datagram-too-large"] = plain + r_open(1, ECHO, proto=UDP) + \
        r_datagram(1, MAX_DATAGRAM + 1)
    s["flow-datagrams-past-stream-window"] = bytes([0b1]) + r_open(1, HOLD, proto=UDP) + \
        r_datagram(1, 60000) + DELIVER + r_datagram(1, 6000)
    s["flow-datagrams-past-session-window"] = bytes([0b10]) + b"".join(
        r_open(n, HOLD, proto=UDP) + r_datagram(n, 50000) for n in (1, 3, 5))
    # Past the windows the peer granted: the local side's datagrams are dropped, not queued.
    s["flow-local-past-peer-windows"] = bytes([0b11000]) + r_open(1, HOLD, proto=UDP) + \
        DELIVER + r_local_dgram(50) + r_local_dgram(50) + r_local_dgram(1) + \
        r_window(1, 100) + r_window(0, 100) + DELIVER + r_local_dgrams(5, 40)
    # Credit to the byte: a flow window of 100 and a session window of 100.
    s["flow-credit-to-the-byte"] = bytes([0b11000]) + \
        r_open(1, HOLD, window=W_100, proto=UDP) + DELIVER + r_local_dgram(60) + \
        r_local_dgram(41) + r_local_dgram(40) + r_local_dgram(0) + r_local_dgram(1) + \
        r_window(0, 30) + r_window(1, 20) + DELIVER + r_local_dgram(21) + r_local_dgram(20)
    s["flow-echo-past-peer-windows"] = bytes([0b11000]) + r_open(1, ECHO, proto=UDP) + \
        r_datagram(1, 60) * 4 + DELIVER + r_window(1, 120) + r_window(0, 120) + \
        r_datagram(1, 60) * 4 + DELIVER
    # A reader 256 datagrams behind: new arrivals are dropped and their credit returned.
    s["flow-receiver-behind"] = bytes([0b1]) + r_open(1, HOLD, proto=UDP) + \
        r_datagram(1, 100) * 300 + DELIVER + r_local(L_DRAIN) + r_datagram(1, 100) * 20 + \
        DELIVER + r_local(L_DRAIN)
    # A peer that does not read and a small output budget: the local side's bursts are
    # dropped as backlogged; a reset drops what still waits.
    s["flow-backlogged-stalled-peer"] = bytes([0b11000000]) + r_open(1, HOLD, proto=UDP) + \
        r_open(3, ECHO) + DELIVER + r_local_dgrams(200, 1400) + r_data(3, 16384) + DELIVER + \
        r_read(20000) + r_local_dgrams(50, 65000) + r_local(L_RESET) + r_read(65535)
    s["flow-many-limit-4"] = bytes([0b100]) + b"".join(
        r_open(n, ECHO if n % 4 == 1 else HOLD, proto=UDP) + r_datagram(n, n)
        for n in (1, 3, 5, 7, 9)) + DELIVER + r_local_dgrams(3, 9, 1) + r_local(L_CLOSE)
    return s


# ---------------------------------------------------------------------------------------------
# Text inputs

def mapping_seeds():
    specs = [
        "2222:dev-42:22", "8080:dev-42:80", "5000:link12345:22", "0:dev-1:7",
        "127.0.0.1:2222:dev-42:22", "0.0.0.0:80:dev-1:80", "*:8080:dev-42:80", ":8080:dev-42:80",
        "[::1]:2222:dev-42:22", "[::]:5353:dev-42:53", "2222:[fd00::42]:22",
        "localhost:2222:db.internal:5432", "2222:10.20.0.45:22", "65535:d:65535",
        "70000:dev-42:22", "2222:dev-42:0", "2222:dev-42", "abc", "2222:dev 42:22",
        "::1:2222:dev-42:22", "[::1:2222:dev-42:22", "2222:dev-42:22:extra:fields",
        "[127.0.0.1]:2222:dev-42:22", "2222:[dev-42]:22", "-1:dev-42:22", "",
    ]
    return {"spec-%02d" % i: s.encode() for i, s in enumerate(specs)}


def url_seeds():
    urls = [
        "tls://127.0.0.1:7443", "tls://tunnel.example.com:7443", "tls://tunnel.example.com",
        "TLS://Tunnel.Example.com/", "ssh://htunnel@tunnel.example.com:999",
        "ssh://tunnel.example.com", "ssh://alice@[::1]:22", "tls://[::1]:7443", "tls://[::1]",
        "ssh://user.name+tag$@10.0.0.1:2200", "http://example.com", "tls://", "tls://:7443",
        "tls://host:0", "tls://host:65536", "tls://host:port", "tls://user@host",
        "ssh://user:pass@host", "ssh://@host", "tls://::1:7443", "tls://[::1", "tls://[::1]x",
        "tls://host/path", "tls://host?x=1", "ssh://a@b@c", "example.com:7443", "[::1]",
        "[127.0.0.1]", "host_name.example", "-leading.example",
    ]
    return {"url-%02d" % i: u.encode() for i, u in enumerate(urls)}


CONFIG_EXAMPLE = '''listen = "0.0.0.0:7443"
cert = "server.crt"                # relative paths are relative to this file's directory
key = "server.key"
connect_timeout_ms = 5000

[[credential]]
name = "laptop"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
allow = ["dev-42:22", "dev-*:80", "dev-*:8000-8099/tcp"]

[[credential]]
name = "ops"
token_sha256 = "a92c36e66a25ee99ff862faa8e87987be6c7cd13c3ee661c400a45b0f1e3b132"
allow = ["*"]

[[device]]
id = "dev-42"
address = "127.0.1.42"

[[device]]
id = "link12345"
address = "10.20.0.45"
'''

CONFIG_MINIMAL = '''cert = "/srv/tether/server.crt"
key = "/srv/tether/server.key"

[[credential]]
name = "only"
token_sha256 = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
allow = []
'''

CONFIG_ALL_KEYS = '''listen = "[::1]:0"
cert = "certs/server.pem"
key = "certs/server.key"
connect_timeout_ms = 1
handshake_timeout_ms = 86_400_000
grace_period_ms = 0
keepalive_ms = 100
stream_window = 65_536
session_window = 1_073_741_824
max_streams_per_session = 1_000_000

[[credential]]
name = "ci@runner-1"
token_sha256 = "a92c36e66a25ee99ff862faa8e87987be6c7cd13c3ee661c400a45b0f1e3b132"
allow = ["*/udp", "cam-*:*/udp", "*:8000-8099", "*-eu:443/tcp"]

[[device]]
id = "v6-device"
address = "[fd00::42]"

[[device]]
id = "v6-bare"
address = "::1"

[[device]]
id = "by-name"
address = "device-7.internal.example"
'''


def config_seeds():
    bad = {
        "typo-key": CONFIG_EXAMPLE.replace("allow = [\"*\"]", "alow = [\"*\"]"),
        "window-below-minimum": CONFIG_MINIMAL.replace("key =", "stream_window = 65535\nkey ="),
        "session-below-stream": CONFIG_MINIMAL.replace(
            "key =", "stream_window = 4194304\nsession_window = 2097152\nkey ="),
        "duplicate-device": CONFIG_EXAMPLE.replace('"link12345"', '"dev-42"'),
        "duplicate-credential": CONFIG_EXAMPLE.replace('"ops"', '"laptop"'),
        "duplicate-token": CONFIG_EXAMPLE.replace("a92c36e6", "9f86d081").replace(
            "6c7cd13c3ee661c400a45b0f1e3b132", "5d6c15b0f00a08"),
        "token-not-hash": CONFIG_MINIMAL.replace(
            "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08", "tt_abc"),
        "acl-port-range": CONFIG_MINIMAL.replace("allow = []", 'allow = ["dev-1:99999"]'),
        "acl-bad-glob": CONFIG_MINIMAL.replace("allow = []", 'allow = ["dev 1:22", "a:b:c"]'),
        "top-level-key-in-section": CONFIG_MINIMAL + "keepalive_ms = 5000\n",
        "agent-device": CONFIG_MINIMAL + '[[device]]\nid = "dev-77"\nagent = true\n',
        "device-with-port": CONFIG_MINIMAL + '[[device]]\nid = "d"\naddress = "10.0.0.1:22"\n',
        "no-credentials": 'cert = "a"\nkey = "b"\n',
        "credential-not-array": CONFIG_MINIMAL.replace("[[credential]]", "[credential]"),
        "wrong-types": 'listen = 7443\ncert = true\nkey = 1.5\nkeepalive_ms = "15s"\n',
        "bad-toml": 'listen = "127.0.0.1:7443\ncert = [\n',
        "empty": "",
        "listen-no-port": CONFIG_MINIMAL.replace("cert =", 'listen = "localhost"\ncert ='),
        "listen-v6-unbracketed": CONFIG_MINIMAL.replace("cert =", 'listen = "::1:7443"\ncert ='),
        "dates-and-tables": CONFIG_MINIMAL + "when = 1979-05-27T07:32:00Z\n[extra]\nx = {a = 1}\n",
    }
    s = {"docs-example": CONFIG_EXAMPLE, "minimal": CONFIG_MINIMAL, "all-keys": CONFIG_ALL_KEYS}
    s.update({"bad-" + k: v for k, v in bad.items()})
    return {k: v.encode() for k, v in s.items()}


# Public keys of throwaway host keys made with ssh-keygen (no private halves kept).
ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIOH4BrDrP6DZceWLR/krgTvz3LMKDjvywhe1wfvlfjn3"
ECDSA256 = ("AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPPvG/KJLMBpZ6nM2y0L/WSM3BPRwF7"
            "AsBaA4A0DdxViIEPXfUNnOi39xP47ORzx4GZoiVGno4neJNwwTh1gos8=")
ECDSA384 = ("AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBDRlPi7bB31epWX8vvFctd+3FqyymopR"
            "DRX9rrYKolDhtbUTmZmSS0X7WQ9zomVcdbn1xLiLCzI6WiN7DSc1bkSBuMjGISP8XClis/Xf+"
            "XLL/3L2LkhzJL3OU7TcNTzT4g==")
RSA = ("AAAAB3NzaC1yc2EAAAADAQABAAABAQCqKqW440X/lrrqJeFkBYbui4rWqFm1S3Y2dBD/NclI3lTm+lst24ZuvYrD"
       "JQR7DHcXDOYRjvQ2uqfccBQHy/GEi3YPbtRM92xcohbPMVNakSaFH3/itndHa2Nu6nziKbz/UxWXLbPsjG6E4+a+"
       "z72wKZ89TT45oMeMKAndYSfdmfeBbdGUDFC0HeBi4ulayldw1ej/ib8nMaZY9b/wplyF8PNM5epe4vBotXnL25a7"
       "hnjaAnIrM1PRTXKfaFVodH6ZNWRy6qapPMTwbQ3K9H0spsyvhZyJ4FdUy2lqdXCYeQEEPrd05paoo+EFl4U8gi6w"
       "uyOS98Slw1fuKMYDlMa5")


def hashed(name, salt):
    """An OpenSSH hashed host name: |1|base64(salt)|base64(HMAC-SHA1(salt, name))."""
    mac = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return "|1|%s|%s" % (base64.b64encode(salt).decode(), base64.b64encode(mac).decode())


def known_hosts_seeds():
    salt = bytes(range(20))
    lines = {
        "plain-ed25519": "tunnel.example.com ssh-ed25519 %s\n" % ED25519,
        "port-ecdsa": "[127.0.0.1]:2222 ecdsa-sha2-nistp256 %s\n" % ECDSA256,
        "patterns": "*.example.com,!bad.example.com,10.0.0.? ecdsa-sha2-nistp384 %s\n" % ECDSA384,
        "rsa-with-comment": "host1,192.0.2.7 ssh-rsa %s user@laptop\n" % RSA,
        "hashed": "%s ssh-ed25519 %s\n" % (hashed("tunnel.example.com", salt), ED25519),
        "hashed-port": "%s ecdsa-sha2-nistp256 %s\n" % (hashed("[127.0.0.1]:2222", salt),
                                                       ECDSA256),
        "revoked": "@revoked * ssh-ed25519 %s\n" % ED25519,
        "cert-authority": "@cert-authority *.example.com ssh-ed25519 %s\n" % ED25519,
        "unknown-marker": "@future host ssh-ed25519 %s\n" % ED25519,
        "ssh1-rsa": "oldhost 1024 35 1234567890123456789\n",
        "bad-base64": "host ssh-ed25519 AAAA!!!!\n",
        "type-mismatch": "host ssh-rsa %s\n" % ED25519,
        "comments-blank-crlf": "# known hosts\r\n\r\n   \t\nhost ssh-ed25519 %s\r\n" % ED25519,
        "tabs-and-spaces": "\thost\t ssh-ed25519  %s\t\n" % ED25519,
        "missing-key": "host ssh-ed25519\n",
        "no-newline-at-end": "host ssh-ed25519 %s" % ED25519,
        "negated-only": "!host ssh-ed25519 %s\n" % ED25519,
        "hashed-malformed": "|1|notbase64|x ssh-ed25519 %s\n|1|abc ssh-ed25519 %s\n" % (
            ED25519, ED25519),
        "empty-patterns": ",,, ssh-ed25519 %s\n" % ED25519,
        "stars": ("*?*?*?*?*?*?*?*?*?*?* ssh-ed25519 %s\nlonglonglonglonglonglonglonghost\n"
                  % ED25519),
    }
    whole = "".join(lines[k] if lines[k].endswith("\n") else lines[k] + "\n" for k in lines)
    lines["whole-file"] = whole
    # A changed key: same host and type, another key.
    lines["changed"] = ("tunnel.example.com ssh-ed25519 %s\ntunnel.example.com ssh-ed25519 %s\n"
                        % (ED25519, ED25519[:-4] + "AAAA"))
    return {k: v.encode() for k, v in lines.items()}


def main():
    targets = {
        "fuzz_codec": codec_seeds(),
        "fuzz_session": session_seeds(),
        "fuzz_mapping": mapping_seeds(),
        "fuzz_url": url_seeds(),
        "fuzz_config": config_seeds(),
        "fuzz_known_hosts": known_hosts_seeds(),
    }
    written = 0
    for target, seeds in targets.items():
        d = os.path.join(CORPUS, target)
        os.makedirs(d, exist_ok=True)
        for name, content in seeds.items():
            path = os.path.join(d, name)
            try:
                with open(path, "rb") as f:
                    if f.read() == content:
                        continue
            except FileNotFoundError:
                pass
            with open(path, "wb") as f:
                f.write(content)
            written += 1
    total = sum(len(s) for s in targets.values())
    print("make_seeds: %d seeds in %d corpora, %d written" % (total, len(targets), written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
