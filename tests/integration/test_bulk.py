"""256 MiB each way through one tunnelled connection, compared by SHA-256 on both ends."""

import unittest

import harness
from harness import MiB


class BulkTest(harness.TetherTest):
    def test_256_mib_each_way_through_one_connection(self):
        device = self.sink_source_server(harness.device_addr(11))
        server = self.dev_server(devices={"bulk-dev": device.host})
        client = self.connect(server, [("bulk-dev", device.port)])

        # Both directions at once: the device streams its bytes while it hashes ours.
        r = harness.transfer(client.port, up=256 * MiB, down=256 * MiB, timeout=400)

        self.assertEqual((r.sent, r.received), (256 * MiB, 256 * MiB))
        self.assertEqual(device.connections, 1)
        self.assertEqual(device.errors, [])
        self.assertEqual(len(client.proc.json_events("connected")), 1)
        print("\n256 MiB each way in %.1f s" % r.seconds)


if __name__ == "__main__":
    unittest.main()
