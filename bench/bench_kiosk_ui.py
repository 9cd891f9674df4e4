"""Kiosk UI benchmark: tap to thank-you screen drawn, tap to durable, app start to first screen, memory.

    SDL_VIDEODRIVER=offscreen python bench/bench_kiosk_ui.py [--taps 200] [--size 800x480] [--voice]

--voice: voice guidance on for every visit (prompts rendered with espeak-ng
into the temporary directory first, audio to SDL's disk driver): each tap
then also says the face and the thank-you. The speech is cut off once the
thank-you is drawn, so that the next tap need not wait for it.

Runs the real app (real outbox file, real touches through the window's input
dispatch) in a temporary data directory; prints one JSON line.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--taps", type=int, default=200)
    parser.add_argument("--size", default="800x480")
    parser.add_argument("--voice", action="store_true", help="voice guidance on (espeak-ng prompts)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="onetap-bench-ui-"))
    os.environ.setdefault("KIVY_HOME", str(tmp / "kivy-home"))
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
    if args.voice:
        os.environ.setdefault("SDL_AUDIODRIVER", "disk")
        os.environ.setdefault("SDL_DISKAUDIOFILE", str(tmp / "audio.raw"))
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")

    from kiosk.config import load_config
    from kiosk.ui.app import configure_kivy

    config_file = None
    if args.voice:
        from kiosk.catalog import load_catalogs
        from kiosk.voice import render

        render(load_catalogs(["ko"]), tmp / "voices")
        config_file = tmp / "kiosk.toml"
        config_file.write_text(f'[ui]\nvoice = true\nvoice_cache = "{tmp / "voices"}"\n', encoding="utf-8")
    cfg = load_config(config_file, env={},
                      overrides={"data_dir": str(tmp / "data"), "broker": "mqtt://127.0.0.1:9"})
    configure_kivy(cfg, tuple(int(v) for v in args.size.split("x")))

    import dataclasses

    from kivy.clock import Clock
    from kivy.core.window import Window
    from kivy.tests.common import UnitTestTouch

    from kiosk.ui.shell import OnetapApp

    app = OnetapApp(cfg)
    figures: dict = {"taps": args.taps, "size": args.size, "fps_cap": cfg.ui.fps, "voice": args.voice}
    tap_ms: list[float] = []
    durable_ms: list[float] = []
    state = {"phase": "start", "t0": 0.0, "count": 0}

    def wrap_record(outbox):
        original = outbox.record

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                durable_ms.append((time.perf_counter() - t) * 1000)
        outbox.record = timed

    def tap_next():
        shell = app.shell
        tile = shell._page.tiles[state["count"] % 5]
        x, y = tile.to_window(*tile.center)
        touch = UnitTestTouch(x, y)
        state["t0"] = time.perf_counter()
        state["phase"] = "await-thanks"
        touch.touch_down()
        touch.touch_up()

    def on_flip(*_):
        shell = app.shell
        if shell is None:
            return
        now = time.perf_counter()
        screen = shell.flow.screen.value
        if state["phase"] == "start" and screen == "rating":
            figures["start_to_first_screen_s"] = round(now - STARTED, 3)
            shell.flow.configure(dataclasses.replace(shell.flow.settings, questions=(), guard_s=0.0, cooldown_s=0.0,
                                                     thank_you_s=0.01), shell.monotonic())
            wrap_record(shell.outbox)
            state["phase"] = "ready"
            Clock.schedule_once(lambda _dt: tap_next(), 0.1)
        elif state["phase"] == "await-thanks" and screen == "thanks":
            tap_ms.append((now - state["t0"]) * 1000)
            state["count"] += 1
            if args.voice:
                figures["prompts_played"] = len(shell.speaker.played)
                shell.speaker.stop()
            state["phase"] = "await-rating"
        elif state["phase"] == "await-rating" and screen == "rating":
            if state["count"] >= args.taps:
                figures["rss_mb"] = round(rss_mb(), 1)
                app.stop()
                return
            state["phase"] = "ready"
            Clock.schedule_once(lambda _dt: tap_next(), 0)

    Window.bind(on_flip=on_flip)
    app.run()
    figures["tap_to_thanks_drawn_ms"] = {
        "median": round(statistics.median(tap_ms), 2), "p99": round(pct(tap_ms, 99), 2), "max": round(max(tap_ms), 2)}
    figures["tap_to_durable_ms"] = {
        "median": round(statistics.median(durable_ms), 3), "p99": round(pct(durable_ms, 99), 3),
        "max": round(max(durable_ms), 3)}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
