"""Load publisher for the benchmarks: QoS 1 events spread over the district's call buttons.

Runs in its own process so the publisher does not share a CPU core's event loop with
what is being measured. Uses paho directly with a wide in-flight window. Each event's
device time is the moment it was handed to paho, so a benchmark can time it from the
database (``device_events.device_time``). ``--rate`` paces the presses; without it they
go as fast as paho takes them. Exits 1 when the broker did not acknowledge them all.
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
    parser.add_argument(
        "--first-household", type=int, default=1, help="the events go to households from this one"
    )
    parser.add_argument("--rate", type=float, default=0.0, help="events a second; 0: flat out")
    parser.add_argument("--run", required=True, help="makes event ids unique per run")
    args = parser.parse_args()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.connect(args.host, args.port)
    client.loop_start()
    # Keep a bounded window of unacknowledged publishes so paho's queue never overflows.
    window: deque[mqtt.MQTTMessageInfo] = deque()
    unacknowledged = 0

    def settled(info: mqtt.MQTTMessageInfo) -> None:
        nonlocal unacknowledged
        info.wait_for_publish(timeout=120)
        unacknowledged += not info.is_published()

    started = time.monotonic()
    for n in range(args.count):
        if args.rate > 0:
            time.sleep(max(0.0, started + n / args.rate - time.monotonic()))
        household = f"H{n % args.households + args.first_household:04d}"
        window.append(
            client.publish(
                topic_for(args.prefix, household, f"CB-{household}", Channel.EVENT),
                event_payload(
                    f"{args.run}-{n}", EventKind.EMERGENCY_PRESS, int(time.time() * 1000)
                ),
                qos=1,
            )
        )
        if len(window) >= 5000:
            settled(window.popleft())
    for info in window:
        settled(info)
    client.disconnect()
    client.loop_stop()
    if unacknowledged:
        print(f"{unacknowledged} of {args.count} events not acknowledged", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
