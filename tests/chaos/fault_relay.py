#!/usr/bin/env python3
"""A TCP relay that injects faults between `tether connect` and `tether server`.

It listens on a loopback address, and forwards every connection it accepts to one target
(the server), byte for byte, in both directions, half-closes included. On command, or at
random, it:

  stall  stops forwarding for a while, in one direction or both: bytes wait in the kernel
         buffers and then in ours, and the sender is slowed by TCP's own backpressure;
  slow   forwards in small chunks with a delay between them, for a while;
  cut    ends every connection it carries: `rst` closes both sides abortively (SO_LINGER 0,
         the peers see a reset), `fin` half-closes both sides in order (the peers see an
         end of stream in the middle of a TLS record stream), then drains and closes.

Directions are named from the client's side: `up` is client -> target, `down` is
target -> client. A stall or slow-down is a window of time: connections made during it
are stalled or slowed too. A cut applies to the connections open at that moment.

The relay refuses any address that is not a loopback address.

As a module: FaultRelay(target).start(), then stall()/slow()/cut(), counts(), stop().
As a program: fault_relay.py --target HOST:PORT [--listen HOST:PORT] [--random MIN:MAX]
prints `listening HOST:PORT`, then reads commands on stdin, one a line, and answers each
with one line (`ok ...` or `error ...`):

  stall up|down|both SECONDS
  slow up|down|both SECONDS [CHUNK_BYTES [DELAY_MS]]
  cut rst|fin
  target HOST:PORT             new connections go there from now on
  stats                        -> ok {"connections": ..., "active": ..., "faults": {...}}
  quit

It exits when its stdin closes, so it never outlives the program that drives it.
"""

import argparse
import errno
import ipaddress
import json
import random
import selectors
import socket
import struct
import sys
import threading
import time

READ_SIZE = 256 * 1024        # one read when not slowed
BUFFER_LIMIT = 1024 * 1024    # bytes held per direction before we stop reading
FIN_DRAIN_SECONDS = 5.0       # after `cut fin`, how long we read and discard before closing
DIRECTIONS = ("up", "down", "both")


def require_loopback(host):
    """Fails unless `host` is a loopback address literal (127.0.0.0/8 or ::1)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("not an IP address: %r (loopback addresses only)" % host)
    if not ip.is_loopback:
        raise ValueError("%s is not a loopback address" % host)
    return host


def parse_hostport(text):
    """'127.0.0.1:7443' or '[::1]:7443' -> (host, port), loopback only."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError("expected HOST:PORT, got %r" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return require_loopback(host), int(port)


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _abort(sock):
    """Closes `sock` so that its peer sees a reset (RST), not an orderly close."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Pipe:
    """One direction of a relayed connection: reads `src`, writes `dst`."""

    def __init__(self, name, src, dst):
        self.name = name          # "up" or "down"
        self.src, self.dst = src, dst
        self.buf = bytearray()
        self.eof = False          # src ended in order
        self.shut = False         # dst was half-closed after the last byte
        self.next_read = 0.0      # when slowed: no read before this time
        self.moved = 0


class _Conn:
    def __init__(self, client, server, cid):
        self.id = cid
        self.client, self.server = client, server
        self.connected = False    # the connection to the target is established
        self.up = _Pipe("up", client, server)
        self.down = _Pipe("down", server, client)
        self.draining_until = None  # after `cut fin`: read and discard until then
        self.drained = set()        # the sockets whose peer has closed since then


class FaultRelay:
    """The relay. All socket work happens on one thread; the public methods post commands
    to it and are safe to call from any thread."""

    def __init__(self, target, listen=("127.0.0.1", 0), log=None):
        self.target = (require_loopback(target[0]), int(target[1]))
        listen_host = require_loopback(listen[0])
        self._log = log or (lambda text: None)
        self._lsock = socket.socket(_family(listen_host), socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((listen_host, int(listen[1])))
        self._lsock.listen(128)
        self._lsock.setblocking(False)
        self.host, self.port = self._lsock.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._commands = []
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._conns = {}
        self._next_id = 1
        self._stall_until = {"up": 0.0, "down": 0.0}
        self._slow = {"up": (0.0, 0, 0.0), "down": (0.0, 0, 0.0)}  # (until, chunk, delay)
        self._faults = {}
        self._accepted = 0
        self._stopped = threading.Event()
        self._thread = None
        self._random_thread = None
        self._sel.register(self._lsock, selectors.EVENT_READ, self._on_accept)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)

    # -- public interface ---------------------------------------------------------------------

    def start(self):
        self._thread = threading.Thread(target=self._loop, name="fault-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stops the relay; every connection it still carries is closed abortively."""
        self._stopped.set()
        self._post(("stop",))
        if self._thread:
            self._thread.join(10)
        if self._random_thread:
            self._random_thread.join(10)

    def set_target(self, host, port):
        """New connections go to (host, port) from now on."""
        self._post(("target", (require_loopback(host), int(port))))

    def stall(self, direction="both", seconds=1.0):
        """Stops forwarding in `direction` (up, down, both) for `seconds`."""
        self._check_direction(direction)
        self._post(("stall", direction, float(seconds)))

    def slow(self, direction="both", seconds=1.0, chunk=1024, delay=0.01):
        """Forwards at most `chunk` bytes every `delay` seconds in `direction` for `seconds`."""
        self._check_direction(direction)
        if chunk < 1 or delay < 0:
            raise ValueError("chunk must be >= 1 and delay >= 0")
        self._post(("slow", direction, float(seconds), int(chunk), float(delay)))

    def cut(self, how="rst"):
        """Ends every connection open now: `rst` (abortive) or `fin` (orderly half-closes)."""
        if how not in ("rst", "fin"):
            raise ValueError("cut takes rst or fin, not %r" % how)
        self._post(("cut", how))

    def counts(self):
        """{'connections': accepted so far, 'active': open now, 'faults': {kind: n}}."""
        with self._lock:
            return {"connections": self._accepted, "active": len(self._conns),
                    "faults": dict(self._faults)}

    def random_faults(self, gap=(2.0, 6.0), seed=None):
        """Injects a random fault every `gap` seconds (uniform) until stop()."""
        rng = random.Random(seed)

        def run():
            while not self._stopped.wait(rng.uniform(*gap)):
                kind = rng.choice(["stall", "slow", "cut"])
                if kind == "stall":
                    self.stall(rng.choice(DIRECTIONS), rng.uniform(0.2, 5.0))
                elif kind == "slow":
                    self.slow(rng.choice(DIRECTIONS), rng.uniform(0.5, 5.0),
                              rng.choice([256, 1024, 4096, 16384]), rng.uniform(0.001, 0.03))
                else:
                    self.cut(rng.choice(["rst", "fin"]))

        self._random_thread = threading.Thread(target=run, name="fault-relay-random",
                                               daemon=True)
        self._random_thread.start()

    # -- the loop -------------------------------------------------------------------------------

    @staticmethod
    def _check_direction(direction):
        if direction not in DIRECTIONS:
            raise ValueError("direction must be up, down or both, not %r" % direction)

    def _post(self, command):
        with self._lock:
            self._commands.append(command)
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # the wake-up pipe is full (a wake-up is pending anyway) or closed

    def _count(self, kind):
        with self._lock:
            self._faults[kind] = self._faults.get(kind, 0) + 1

    def _loop(self):
        try:
            while True:
                if not self._run_commands():
                    break
                now = time.monotonic()
                timeout = self._update_interest(now)
                for key, events in self._sel.select(timeout):
                    key.data(key.fileobj, events)
                self._expire_drains(time.monotonic())
        finally:
            for c in list(self._conns.values()):
                self._close(c, abort=True)
            self._sel.close()
            self._lsock.close()
            self._wake_r.close()
            self._wake_w.close()

    def _run_commands(self):
        with self._lock:
            commands, self._commands = self._commands, []
        now = time.monotonic()
        for cmd in commands:
            op = cmd[0]
            if op == "stop":
                return False
            if op == "target":
                self.target = cmd[1]
            elif op == "stall":
                _, direction, seconds = cmd
                for d in (("up", "down") if direction == "both" else (direction,)):
                    self._stall_until[d] = max(self._stall_until[d], now + seconds)
                self._count("stall_" + direction)
                self._log("stall %s %.2f s (%d connections)" % (direction, seconds,
                                                                len(self._conns)))
            elif op == "slow":
                _, direction, seconds, chunk, delay = cmd
                for d in (("up", "down") if direction == "both" else (direction,)):
                    self._slow[d] = (now + seconds, chunk, delay)
                self._count("slow_" + direction)
                self._log("slow %s %.2f s, %d bytes every %.1f ms (%d connections)"
                          % (direction, seconds, chunk, delay * 1000, len(self._conns)))
            elif op == "cut":
                how = cmd[1]
                conns = [c for c in self._conns.values() if c.draining_until is None]
                for c in conns:
                    if how == "rst":
                        self._close(c, abort=True)
                    else:
                        self._cut_fin(c, now)
                self._count("cut_" + how)
                self._log("cut %s (%d connections)" % (how, len(conns)))
        return True

    def _update_interest(self, now):
        """Registers each socket for what it may do now; returns the select timeout."""
        timeout = 0.5
        for c in list(self._conns.values()):
            want = {c.client: 0, c.server: 0}
            if c.draining_until is not None:
                for s in (c.client, c.server):
                    if s not in c.drained:
                        want[s] |= selectors.EVENT_READ
            elif not c.connected:
                want[c.server] |= selectors.EVENT_WRITE
            else:
                for p in (c.up, c.down):
                    stalled = self._stall_until[p.name] > now
                    if stalled:
                        timeout = min(timeout, self._stall_until[p.name] - now)
                        continue
                    self._maybe_shut(c, p)  # an end of stream held back by a stall
                    if c.id not in self._conns:
                        break
                    if not p.eof and len(p.buf) < BUFFER_LIMIT:
                        if p.next_read > now:
                            timeout = min(timeout, p.next_read - now)
                        else:
                            want[p.src] |= selectors.EVENT_READ
                    if p.buf:
                        want[p.dst] |= selectors.EVENT_WRITE
            if c.id not in self._conns:
                continue
            for sock, events in want.items():
                self._set_interest(sock, events, c)
        return max(timeout, 0.0)

    def _set_interest(self, sock, events, conn):
        try:
            key = self._sel.get_key(sock)
        except KeyError:
            key = None
        if not events:
            if key:
                self._sel.unregister(sock)
            return
        handler = lambda s, ev, c=conn: self._on_ready(c, s, ev)
        if key is None:
            self._sel.register(sock, events, handler)
        elif key.events != events:
            self._sel.modify(sock, events, key.data)

    def _on_accept(self, sock, events):
        while True:
            try:
                client, _ = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server = socket.socket(_family(self.target[0]), socket.SOCK_STREAM)
            server.setblocking(False)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = server.connect_ex(self.target)
            c = _Conn(client, server, self._next_id)
            self._next_id += 1
            with self._lock:
                self._accepted += 1
                self._conns[c.id] = c
            if err not in (0, errno.EINPROGRESS):
                self._close(c, abort=True)  # the target is down: the client sees a reset

    def _on_ready(self, c, sock, events):
        if c.id not in self._conns:
            return
        if c.draining_until is not None:
            try:
                if sock.recv(READ_SIZE):
                    return
            except BlockingIOError:
                return
            except OSError:
                pass
            c.drained.add(sock)  # this peer has closed (or reset) its side
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            if len(c.drained) == 2:
                self._close(c, abort=False)
            return
        if not c.connected:
            if sock is c.server and events & selectors.EVENT_WRITE:
                err = c.server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._close(c, abort=True)
                    return
                c.connected = True
            return
        now = time.monotonic()
        for p in (c.up, c.down):
            if c.id not in self._conns:
                return
            if sock is p.src and events & selectors.EVENT_READ:
                self._read(c, p, now)
            if c.id in self._conns and sock is p.dst and events & selectors.EVENT_WRITE:
                self._write(c, p)

    def _read(self, c, p, now):
        until, chunk, delay = self._slow[p.name]
        slowed = until > now
        want = min(chunk if slowed else READ_SIZE, BUFFER_LIMIT - len(p.buf))
        try:
            data = p.src.recv(want)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c, abort=True)  # a reset on one side becomes a reset on the other
            return
        if not data:
            p.eof = True
            self._maybe_shut(c, p)
            return
        p.buf += data
        if slowed:
            p.next_read = now + delay
        self._write(c, p)

    def _write(self, c, p):
        if not p.buf or self._stall_until[p.name] > time.monotonic():
            return
        try:
            n = p.dst.send(p.buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c, abort=True)
            return
        del p.buf[:n]
        p.moved += n
        self._maybe_shut(c, p)

    def _maybe_shut(self, c, p):
        """Passes an end of stream on once its bytes are out (and no stall holds it)."""
        if c.id not in self._conns:
            return
        if (p.eof and not p.buf and not p.shut
                and self._stall_until[p.name] <= time.monotonic()):
            p.shut = True
            try:
                p.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if c.up.shut and c.down.shut:
            self._close(c, abort=False)

    def _cut_fin(self, c, now):
        for s in (c.client, c.server):
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        c.draining_until = now + FIN_DRAIN_SECONDS

    def _expire_drains(self, now):
        for c in list(self._conns.values()):
            if c.draining_until is not None and c.draining_until <= now:
                self._close(c, abort=False)

    def _close(self, c, abort):
        with self._lock:
            self._conns.pop(c.id, None)
        for s in (c.client, c.server):
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            if abort:
                _abort(s)
            else:
                s.close()

    def _on_wake(self, sock, events):
        try:
            while sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT to forward to (loopback)")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (loopback)")
    ap.add_argument("--random", metavar="MIN:MAX",
                    help="also inject a random fault every MIN to MAX seconds")
    ap.add_argument("--seed", type=int, help="seed of the random faults")
    ap.add_argument("--verbose", action="store_true", help="log each fault on stderr")
    args = ap.parse_args(argv)

    def log(text):
        if args.verbose:
            sys.stderr.write("fault_relay: %s\n" % text)
            sys.stderr.flush()

    try:
        relay = FaultRelay(parse_hostport(args.target), parse_hostport(args.listen), log=log)
    except (ValueError, OSError) as e:
        sys.stderr.write("fault_relay: %s\n" % e)
        return 2
    relay.start()
    if args.random:
        lo, _, hi = args.random.partition(":")
        relay.random_faults((float(lo), float(hi or lo)), args.seed)
    host = "[%s]" % relay.host if ":" in relay.host else relay.host
    print("listening %s:%d" % (host, relay.port), flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            try:
                reply = _command(relay, words)
            except (ValueError, IndexError) as e:
                reply = "error %s" % e
            print(reply, flush=True)
            if words[0] == "quit":
                break
    except KeyboardInterrupt:
        pass
    relay.stop()
    return 0


def _command(relay, words):
    op, rest = words[0], words[1:]
    if op == "stall":
        relay.stall(rest[0], float(rest[1]))
    elif op == "slow":
        chunk = int(rest[2]) if len(rest) > 2 else 1024
        delay = float(rest[3]) / 1000 if len(rest) > 3 else 0.01
        relay.slow(rest[0], float(rest[1]), chunk, delay)
    elif op == "cut":
        relay.cut(rest[0] if rest else "rst")
    elif op == "target":
        relay.set_target(*parse_hostport(rest[0]))
    elif op == "stats":
        return "ok " + json.dumps(relay.counts(), sort_keys=True)
    elif op != "quit":
        raise ValueError("unknown command %r (stall, slow, cut, target, stats, quit)" % op)
    return "ok " + " ".join(words)


if __name__ == "__main__":
    sys.exit(main())
