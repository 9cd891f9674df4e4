"""paho's side of the link: CPU per one-rating PUBLISH read, handed on and PUBACKed.

Run by hand (never in the test suite); figures go to docs/benchmarks.md:

    git worktree add /tmp/before main
    .venv/bin/python bench/bench_link_receive.py --checkout /tmp/before --checkout . --repeat 3

For each checkout in turn, in a process of its own with that checkout's code
first on the path: server.link's MQTT client (MQTT 5, as the server) on one
end of a socket pair, rounds of 200 QoS 1 PUBLISH packets of a one-rating
batch (as bench/load.py's terminals send) written to the other end, and the
client's loop_read and loop_write until all 200 were handed on (to the
link's inbox callback) and their PUBACKs written. Only the client's process
CPU is counted: no broker, no store, the receive path alone.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

PAYLOAD = (b'{"v":1,"site":"site-a","terminal":"k00001","ratings":[{"id":"9ce062d1-7586-4535-a09b-'
           b'0926c1a79a96","seq":12345,"score":3,"at":"2026-12-01T12:55:47.935+09:00","clock_synced":true,'
           b'"reason":null,"age_group":null,"lang":"ko","input":"touch"}]}')


def publish_packet(index: int) -> bytes:
    topic = f"onetap/v1/site-a/k{index % 500:05d}/ratings".encode()
    body = len(topic).to_bytes(2, "big") + topic + (index % 65535 + 1).to_bytes(2, "big") + b"\x00" + PAYLOAD
    assert 128 <= len(body) < 16384
    return bytes([0x32, (len(body) & 0x7F) | 0x80, len(body) >> 7]) + body


def measure_here(rounds: int) -> float:
    """Microseconds of CPU per message for the server.link importable here."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from server.link import _Client

    client = _Client(CallbackAPIVersion.VERSION2, client_id="bench", protocol=mqtt.MQTTv5)
    got: list = []
    if hasattr(client, "deliver"):
        client.deliver = lambda topic, payload, retained: got.append((topic, payload, retained))
    else:  # code from before _Client.deliver: paho's own path, as the link used it
        client.on_message = lambda c, u, m: got.append((m.topic, bytes(m.payload), m.retain))
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    broker.setblocking(False)
    client._sock = ours
    data = b"".join(publish_packet(i) for i in range(200))
    cpu, count = 0.0, 0
    for _ in range(rounds):
        broker.sendall(data)
        started = time.process_time()
        while len(got) < 200:
            client.loop_read()
        client.loop_write()
        cpu += time.process_time() - started
        count += len(got)
        got.clear()
        try:
            while broker.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
    return 1e6 * cpu / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, action="append",
                        help="a checkout whose server/link.py to measure (repeatable; default: this one)")
    parser.add_argument("--rounds", type=int, default=100, help="rounds of 200 messages per measurement")
    parser.add_argument("--repeat", type=int, default=1, help="measure the checkouts this many times, interleaved")
    parser.add_argument("--here", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.here:
        print(json.dumps({"us_per_message": round(measure_here(args.rounds), 2)}))
        return 0
    checkouts = [c.resolve() for c in (args.checkout or [Path(__file__).resolve().parent.parent])]
    by: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for checkout in checkouts:
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--here", "--rounds", str(args.rounds)],
                                 cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)},
                                 capture_output=True, text=True, check=True).stdout
            value = json.loads(out)["us_per_message"]
            commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
            print(json.dumps({"checkout": str(checkout), "commit": commit, "us_per_message": value}), flush=True)
            by.setdefault(str(checkout), []).append(value)
    if len(by) > 1:
        first, *_ = by.values()
        for name, values in list(by.items())[1:]:
            print(json.dumps({"checkout": name, "best_us_per_message": min(values),
                              "baseline_best_us_per_message": min(first),
                              "ratio_to_first": round(min(values) / min(first), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
