"""The raw limit for the ingest benchmark: a bare paho subscriber that stores nothing.

Connects to an existing persistent session, drains ``--count`` QoS 1 messages (parsing
each payload with json.loads, acknowledged by paho on receipt) and prints the rate as
JSON. Run as its own process, like the server would be.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()

    done = threading.Event()
    received = 0

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        json.loads(message.payload)
        received += 1
        if received >= args.count:
            done.set()

    # The same protocol and session as ingest: MQTT 3.1.1, clean session off.
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=mqtt.MQTTv311,
        clean_session=False,
    )
    client.on_message = on_message
    # Like the ingest client: acknowledgements leave at once instead of waiting on Nagle.
    client.on_socket_open = lambda _c, _u, sock: sock.setsockopt(  # type: ignore[union-attr]
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    connecting_at = time.perf_counter()
    client.connect(args.host, args.port)
    client.loop_start()
    if not done.wait(600):
        print(f"received only {received} of {args.count}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - connecting_at
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"received": received, "per_s": received / elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
