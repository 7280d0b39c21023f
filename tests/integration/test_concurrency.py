"""200 concurrent connections through one session, each echoing 1 MiB."""

import unittest

import harness
from harness import MiB

CONNECTIONS = 200


class ConcurrencyTest(harness.TetherTest):
    def test_200_concurrent_echo_connections_on_one_session(self):
        echo = self.echo_server(harness.device_addr(12))
        server = self.dev_server(devices={"echo-dev": echo.host})
        client = self.connect(server, [("echo-dev", echo.port)])

        def all_open():
            # Every local connection has become a device connection before any byte moves,
            # so the 200 streams are open at the same time, not one after the other.
            harness.wait_until(lambda: echo.active == CONNECTIONS, 60,
                               "%d open device connections (have %d)" % (CONNECTIONS, echo.active))

        seconds = harness.run_echo_clients(client.port, CONNECTIONS, MiB, timeout=300,
                                           before_sending=all_open)

        self.assertEqual(echo.connections, CONNECTIONS)
        self.assertEqual(echo.errors, [])
        self.assertEqual(len(client.proc.json_events("connected")), 1, "one session only")
        self.assertEqual(client.proc.json_events("stream_error"), [])
        print("\n%d x 1 MiB echoed in %.1f s" % (CONNECTIONS, seconds))


if __name__ == "__main__":
    unittest.main()
