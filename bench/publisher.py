"""Load publisher for the benchmarks: QoS 1 events spread over the district's call buttons.

Runs in its own process so the publisher does not share a CPU core's event loop with
what is being measured. Uses paho directly with a wide in-flight window.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callcenter.domain.events import EventKind
from callcenter.ingest.protocol import Channel, event_payload, topic_for


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--households", type=int, default=900)
    parser.add_argument("--run", required=True, help="makes event ids unique per run")
    args = parser.parse_args()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.connect(args.host, args.port)
    client.loop_start()
    now_ms = int(time.time() * 1000)
    # Keep a bounded window of unacknowledged publishes so paho's queue never overflows.
    window: deque[mqtt.MQTTMessageInfo] = deque()
    for n in range(args.count):
        household = f"H{n % args.households + 1:04d}"
        window.append(
            client.publish(
                topic_for(args.prefix, household, f"CB-{household}", Channel.EVENT),
                event_payload(f"{args.run}-{n}", EventKind.EMERGENCY_PRESS, now_ms),
                qos=1,
            )
        )
        if len(window) >= 5000:
            window.popleft().wait_for_publish(timeout=120)
    for info in window:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
