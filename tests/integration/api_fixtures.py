"""Fixtures for the HTTP API's tests: a server with the API on, a client for it, and device
services (one that replies, one that stays silent)."""

import base64
import hashlib
import http.client
import json
import os
import socket
import ssl
import threading

from harness import (TcpService, TetherTest, credential_toml, device_addr, device_toml,
                     new_token, scaled, shared_pki, split_hostport, toml_str)


class ReplyServer(TcpService):
    """Reads until the client half-closes, then answers b"reply:" + what it read and closes."""

    name = "reply"

    def handle(self, conn, stats):
        data = b""
        while True:
            b = conn.recv(65536)
            if not b:
                break
            data += b
        stats["received"] += len(data)
        conn.sendall(b"reply:" + data)
        stats["sent"] += len(data) + 6


class SilentServer(TcpService):
    """Reads everything and never answers nor closes (until stopped)."""

    name = "silent"

    def __init__(self, host):
        self.release = threading.Event()
        super().__init__(host)

    def handle(self, conn, stats):
        while conn.recv(65536):
            pass
        self.release.wait(scaled(60))  # stays open after the client's half-close

    def stop(self):
        self.release.set()
        super().stop()


class Api:
    """A client of one server's HTTP API, with one key."""

    def __init__(self, url, key, ca=None):
        self.url, self.key, self.ca = url, key, ca
        scheme, _, rest = url.partition("://")
        self.tls = scheme == "https"
        self.host, self.port = split_hostport(rest)

    def connection(self):
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.ca)
            return http.client.HTTPSConnection(self.host, self.port, context=ctx,
                                               timeout=scaled(30))
        return http.client.HTTPConnection(self.host, self.port, timeout=scaled(30))

    def call(self, method, path, body=None, key=None, headers=None, raw=None):
        """Returns (status, parsed JSON or text, headers)."""
        conn = self.connection()
        try:
            h = dict(headers or {})
            key = self.key if key is None else key
            if key:
                h["Authorization"] = "Bearer " + key
            data = raw if raw is not None else (json.dumps(body) if body is not None else None)
            if data is not None and "Content-Type" not in h:
                h["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
            return r.status, parsed, dict(r.getheaders())
        finally:
            conn.close()

    def send(self, device, port, data, proto="tcp", wait_ms=2000, **extra):
        body = {"protocol": proto, "port": port, "data": data, "wait_for_reply_ms": wait_ms}
        body.update(extra)
        return self.call("POST", "/api/v1/devices/%s/messages" % device, body)

    def messages(self, **query):
        q = "&".join("%s=%s" % (k, v) for k, v in query.items())
        status, body, _ = self.call("GET", "/api/v1/messages" + ("?" + q if q else ""))
        assert status == 200, (status, body)
        return body


def reply_text(answer):
    """The replies of one message answer, joined, as bytes."""
    out = b""
    for r in answer.get("replies", []):
        out += r["data"].encode() if "data" in r else base64.b64decode(r["base64data"])
    return out


class ApiTest(TetherTest):
    """A TetherTest with helpers for servers that serve the API."""

    def api_server(self, devices, keys, tls=False, directory=None, api_table="",
                   extra_args=(), extra_config="", see_sessions=(), settings=""):
        """Starts `tether server --config` with the API on a loopback port. `keys`:
        {name: allow list}; the keys named in `see_sessions` may list sessions; `settings`:
        more top-level lines of the config. Returns (server, {name: Api})."""
        token, digest = new_token()
        clear = {}
        text = "api_listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n%s\n" % settings
        text += "[api]\ntls = %s\n%s\n" % ("true" if tls else "false", api_table)
        text += credential_toml("laptop", digest, ["*"])
        for name, allow in keys.items():
            if directory and os.path.exists(os.path.join(directory, "key-" + name)):
                with open(os.path.join(directory, "key-" + name)) as f:
                    key = f.read()
            else:
                key, _ = new_token()
            clear[name] = key
            text += credential_toml(name, hashlib.sha256(key.encode()).hexdigest(),
                                    allow).replace("[[credential]]", "[[api_key]]")
            if name in see_sessions:
                text += "see_sessions = true\n"
        text += extra_config
        for dev_id, address in devices.items():
            text += device_toml(dev_id, address)
        server = self.config_server(text, token=token, directory=directory, extra_args=extra_args)
        for name, key in clear.items():
            with open(os.path.join(server.dir, "key-" + name), "w") as f:
                f.write(key)
        url = server.proc.json_event("api")["url"]
        ca = shared_pki()["ca"]
        return server, {name: Api(url, key, ca) for name, key in clear.items()}

    def port_that_never_answers(self, host):
        """A port on `host` whose connection attempts time out: a listener whose accept queue
        (one place, listen(0)) a first connection fills, so that the kernel drops every
        later SYN, as a device behind a black hole would."""
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind((host, 0))
        listener.listen(0)
        filler = socket.create_connection(listener.getsockname(), timeout=5)
        self.addCleanup(filler.close)
        return listener.getsockname()[1]

    def reply_server(self, host):
        return self._service(ReplyServer, host)

    def silent_server(self, host):
        return self._service(SilentServer, host)
