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


class TapRun:
    """Taps a running OnetapApp's faces through real touches, one visit after another, and times each tap.

    Bind :meth:`on_flip` to the window's on_flip before ``app.run()``. At the first rating screen
    the visit is cut to the tap (no follow-up questions, guard or cool-down; a 10 ms thank-you),
    the outbox's ``record`` is timed, and the first tap comes *first_delay* seconds later; each
    next tap *settle* seconds after the rating screen is drawn again (0: the next frame). The app
    stops after *taps* taps. Per tap: ``thanks_ms`` (touch dispatched to the thank-you drawn),
    ``durable_ms`` (touch dispatched to the outbox's commit returned), ``record_ms`` (the record
    call alone), ``gaps_s`` (between taps). Hooks get the shell: *on_first_screen*, *on_tap*
    (thank-you drawn), *on_done* (before the app stops).
    """

    def __init__(self, app, taps: int, *, settle: float = 0.0, first_delay: float = 0.1,
                 on_first_screen=None, on_tap=None, on_done=None):
        self.app, self.taps, self.settle, self.first_delay = app, taps, settle, first_delay
        self.on_first_screen, self.on_tap, self.on_done = on_first_screen, on_tap, on_done
        self.thanks_ms: list[float] = []
        self.durable_ms: list[float] = []
        self.record_ms: list[float] = []
        self.gaps_s: list[float] = []
        self.frames = 0  # every frame drawn, from the first
        self.count = 0
        self._phase = "start"
        self._t0 = 0.0
        self._last: float | None = None

    def _time_record(self, outbox) -> None:
        original = outbox.record

        def timed(*a, **kw):
            started = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                done = time.perf_counter()
                self.record_ms.append((done - started) * 1000)
                self.durable_ms.append((done - self._t0) * 1000)
        outbox.record = timed

    def _tap(self) -> None:
        from kivy.tests.common import UnitTestTouch

        tile = self.app.shell._page.tiles[self.count % 5]
        touch = UnitTestTouch(*tile.to_window(*tile.center))
        now = time.perf_counter()
        if self._last is not None:
            self.gaps_s.append(now - self._last)
        self._last = self._t0 = now
        self._phase = "await-thanks"
        touch.touch_down()
        touch.touch_up()

    def _tap_in(self, delay: float) -> None:
        from kivy.clock import Clock

        self._phase = "ready"
        Clock.schedule_once(lambda _dt: self._tap(), delay)

    def on_flip(self, *_args) -> None:
        self.frames += 1
        shell = self.app.shell
        if shell is None:
            return
        now = time.perf_counter()
        screen = shell.flow.screen.value
        if self._phase == "start" and screen == "rating":
            if self.on_first_screen is not None:
                self.on_first_screen(shell)
            import dataclasses

            shell.flow.configure(dataclasses.replace(shell.flow.settings, questions=(), guard_s=0.0,
                                                     cooldown_s=0.0, thank_you_s=0.01), shell.monotonic())
            self._time_record(shell.outbox)
            self._tap_in(self.first_delay)
        elif self._phase == "await-thanks" and screen == "thanks":
            self.thanks_ms.append((now - self._t0) * 1000)
            self.count += 1
            if self.on_tap is not None:
                self.on_tap(shell)
            self._phase = "await-rating"
        elif self._phase == "await-rating" and screen == "rating":
            if self.count >= self.taps:
                if self.on_done is not None:
                    self.on_done(shell)
                self._phase = "done"
                self.app.stop()
                return
            self._tap_in(self.settle)


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

    from kivy.core.window import Window

    from kiosk.ui.shell import OnetapApp

    app = OnetapApp(cfg)
    figures: dict = {"taps": args.taps, "size": args.size, "fps_cap": cfg.ui.fps, "voice": args.voice}

    def first_screen(_shell):
        figures["start_to_first_screen_s"] = round(time.perf_counter() - STARTED, 3)

    def tapped(shell):
        if args.voice:
            figures["prompts_played"] = len(shell.speaker.played)
            shell.speaker.stop()

    def done(_shell):
        figures["rss_mb"] = round(rss_mb(), 1)

    run = TapRun(app, args.taps, first_delay=0.1, on_first_screen=first_screen, on_tap=tapped, on_done=done)
    Window.bind(on_flip=run.on_flip)
    app.run()
    tap_ms, durable_ms = run.thanks_ms, run.record_ms
    figures["tap_to_thanks_drawn_ms"] = {
        "median": round(statistics.median(tap_ms), 2), "p99": round(pct(tap_ms, 99), 2), "max": round(max(tap_ms), 2)}
    figures["tap_to_durable_ms"] = {
        "median": round(statistics.median(durable_ms), 3), "p99": round(pct(durable_ms, 99), 3),
        "max": round(max(durable_ms), 3)}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
