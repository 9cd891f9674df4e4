"""The kiosk app against its baselines in one run: RSS over a bare Kivy window, tap to durable over the bare outbox.

    SDL_VIDEODRIVER=offscreen .venv/bin/python bench/bench_kiosk_footprint.py [--taps 200] [--rounds 3]

Each side runs in its own fresh interpreter (one Kivy window per process),
alternating bare/app over *rounds*, with the same window size, the same Kivy
settings (kiosk.ui.app.configure_kivy on the same config) and the same
environment:

- bare: a Kivy App whose root is one Label, drawn for as many frames as the
  app's run takes; its RSS when it has drawn as many frames as the app had at
  its first screen (the first-screen goal's baseline: llvmpipe's RSS grows
  with the frames drawn), and at the end.
- app: the real onetap app tapped *taps* times through real touches (no
  follow-up questions, no voice); its RSS at the end, and the tap to durable
  time: from the touch's dispatch to the outbox's commit returned.
- outbox: kiosk/outbox.py alone on the same disk, the app's writes per tap
  (record held, then release, chained from the app's seed) with the app's
  pause between taps.

The repository's packages are byte-compiled first, as pip does on a kiosk:
otherwise compiling them would be in the app's RSS only. The tap driver's
touches (kivy.tests.common) are loaded on both sides, with the window.

Prints one JSON line per side and round on stderr and a summary JSON on
stdout: medians of the rounds, the ratios, RSS at each stage of start-up. ``--detail`` adds where each
side's RSS is (/proc/self/smaps: anonymous, per shared library, GL driver).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_kiosk_ui import TapRun, pct  # noqa: E402 - the one tap driver, shared with the UI benchmark


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def smaps_detail(top: int = 12) -> dict:
    """RSS by mapping: anonymous (heap, arenas), and the largest files mapped (libraries, fonts)."""
    by_name: dict[str, int] = {}
    name = "[anon]"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = head[5] if len(head) >= 6 else "[anon]"
        elif head[0] == "Rss:":
            by_name[name] = by_name.get(name, 0) + int(head[1])
    rollup = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        if key in ("Rss", "Anonymous", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Clean", "Private_Dirty"):
            rollup[key] = int(value.split()[0])
    biggest = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    return {"rollup_kib": rollup, "largest_kib": {Path(k).name or k: v for k, v in biggest}}


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "p99": round(pct(values, 99), 3),
            "max": round(max(values), 3)}


# -- the sides (each in its own process) -------------------------------------------


def kivy_settings(size: str, ui: dict) -> None:
    """The kiosk's Kivy settings (configure_kivy) from the config's [ui] values, without loading the config."""
    from types import SimpleNamespace

    from kiosk.ui.app import configure_kivy

    configure_kivy(SimpleNamespace(ui=SimpleNamespace(**ui)), tuple(int(v) for v in size.split("x")))


def bench_tooling() -> None:
    """What the app side needs to tap (Kivy's test touches, some 7 MB), loaded on both sides alike."""
    from kivy.tests.common import UnitTestTouch  # noqa: F401


def kiosk_config(tmp: Path):
    from kiosk.config import load_config

    return load_config(None, env={}, overrides={"data_dir": str(tmp / "data"), "broker": "mqtt://127.0.0.1:9"})


def ui_settings(cfg) -> dict:
    """What configure_kivy reads of [ui]: the bare side gets the same values."""
    ui = cfg.ui
    return {"fullscreen": ui.fullscreen, "size": list(ui.size), "fps": ui.fps, "touch_input": ui.touch_input}


def side_bare(tmp: Path, size: str, frames: int, detail: bool, ui: dict, first: int = 0) -> dict:
    stages = {"interpreter": rss_kib()}
    kivy_settings(size, ui)
    from kivy.app import App
    from kivy.clock import Clock
    from kivy.core.window import Window
    from kivy.uix.label import Label

    bench_tooling()
    stages["kivy_window"] = rss_kib()
    drawn = {"frames": 0}
    out: dict = {"side": "bare", "stages_kib": stages}

    class Bare(App):
        def build(self):
            return Label(text="onetap")

    app = Bare()

    def on_flip(*_):
        drawn["frames"] += 1
        if drawn["frames"] == first:
            # As many frames drawn as the app had when its first screen was: llvmpipe's RSS grows
            # with the frames drawn, so this, not the end, is the first screen's baseline.
            stages["first_screen"] = rss_kib()
        if drawn["frames"] == frames:
            out["rss_kib"] = stages["after_frames"] = rss_kib()
            if detail:
                out["detail"] = smaps_detail()
            Clock.schedule_once(lambda _dt: app.stop(), 0)

    def redraw(_dt):
        Window.canvas.ask_update()

    Window.bind(on_flip=on_flip)
    Clock.schedule_interval(redraw, 0)
    app.run()
    out["frames"] = drawn["frames"]
    out["pydantic_loaded"] = "pydantic" in sys.modules
    return out


def side_app(tmp: Path, size: str, taps: int, detail: bool, settle: float = 0.0) -> dict:
    stages = {"interpreter": rss_kib()}
    cfg = kiosk_config(tmp)
    stages["config_loaded"] = rss_kib()
    kivy_settings(size, ui_settings(cfg))
    from kivy.core.window import Window

    bench_tooling()
    stages["kivy_window"] = rss_kib()
    from kiosk.ui.shell import OnetapApp

    stages["app_imported"] = rss_kib()
    app = OnetapApp(cfg)
    out: dict = {"side": "app", "stages_kib": stages}
    trace: list[int] = []

    def first_screen(_shell):
        out["rss_first_screen_kib"] = stages["first_screen"] = rss_kib()
        out["first_screen_frames"] = run.frames

    def tapped(_shell):
        if run.count % 20 == 0 or run.count < 6:
            trace.append(rss_kib() // 1024)

    def done(_shell):
        out["rss_kib"] = stages["after_taps"] = rss_kib()
        if detail:
            out["detail"] = smaps_detail()

    run = TapRun(app, taps, settle=settle, on_first_screen=first_screen, on_tap=tapped, on_done=done)
    Window.bind(on_flip=run.on_flip)
    app.run()
    out.update(frames=run.frames, taps=len(run.durable_ms), tap_to_durable_ms=summary(run.durable_ms),
               record_ms=summary(run.record_ms), gap_s=round(statistics.median(run.gaps_s), 4),
               rss_mb_every_20_taps=trace, ui=ui_settings(cfg), chain_seed=cfg.chain_seed)
    return out


def side_outbox(tmp: Path, taps: int, gap_s: float, chain_seed: str | None) -> dict:
    from kiosk.outbox import Outbox

    # The app's outbox chains (its config's seed): the same here, so both write the same rows.
    outbox = Outbox.open(tmp / "data" / "outbox.db", chain_seed=chain_seed)
    durable_ms: list[float] = []
    for i in range(taps):
        time.sleep(gap_s)
        started = time.perf_counter()
        rating = outbox.record(1 + i % 5, hold=True)
        durable_ms.append((time.perf_counter() - started) * 1000)
        outbox.release(rating.id)
    outbox.close()
    return {"side": "outbox", "taps": taps, "gap_s": gap_s, "tap_to_durable_ms": summary(durable_ms)}


# -- the run -------------------------------------------------------------------------


def child(side: str, args: argparse.Namespace, env: dict | None = None, **extra) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"onetap-bench-{side}-", dir=args.workdir))
    env = dict(os.environ, KIVY_HOME=str(Path(args.workdir) / "kivy-home"), SDL_AUDIODRIVER="dummy",
               KIVY_NO_CONSOLELOG="1", **(env or {}))
    env.setdefault("SDL_VIDEODRIVER", "offscreen")
    command = [sys.executable, __file__, "--side", side, "--tmp", str(tmp), "--size", args.size,
               "--taps", str(args.taps), "--settle", str(args.settle)] + (["--detail"] if args.detail else [])
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), file=sys.stderr)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--taps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="800x480")
    parser.add_argument("--detail", action="store_true", help="where each side's RSS is (smaps)")
    parser.add_argument("--settle", type=float, default=0.0, metavar="S",
                        help="seconds between the rating screen drawn and the next tap (0: the next frame, "
                             "while the last one may still be rasterised; a citizen taps seconds later)")
    parser.add_argument("--lp-threads", type=int, default=None, metavar="N",
                        help="also run the app with LP_NUM_THREADS=N (software GL's rasteriser threads), "
                             "for comparison")
    parser.add_argument("--side", choices=("bare", "app", "outbox"), help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ui", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--gap", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "bare":
        print(json.dumps(side_bare(Path(args.tmp), args.size, args.frames, args.detail, json.loads(args.ui),
                                    args.first)))
        return 0
    if args.side == "app":
        print(json.dumps(side_app(Path(args.tmp), args.size, args.taps, args.detail, args.settle)))
        return 0
    if args.side == "outbox":
        print(json.dumps(side_outbox(Path(args.tmp), args.taps, args.gap, args.seed)))
        return 0

    args.workdir = tempfile.mkdtemp(prefix="onetap-bench-footprint-")
    # An installed kiosk has its modules byte-compiled (pip compiles them); a checkout run with
    # PYTHONDONTWRITEBYTECODE would compile them at every start, in the app's RSS only.
    for package in ("kiosk", "onetap_config"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    rounds: list[dict] = []
    for _ in range(args.rounds):
        app = child("app", args)
        bare = child("bare", args, frames=app["frames"], first=app["first_screen_frames"],
                     ui=json.dumps(app["ui"]))
        outbox = child("outbox", args, gap=app["gap_s"], seed=app["chain_seed"])
        rounds.append({"app": app, "bare": bare, "outbox": outbox})
        if args.lp_threads is not None:
            # The app again with Mesa llvmpipe's rasteriser threads set (0: on the UI thread).
            rounds[-1]["app_lp"] = child("app", args, env={"LP_NUM_THREADS": str(args.lp_threads)})

    def med(get) -> float:
        return statistics.median(get(r) for r in rounds)

    bare_mb = med(lambda r: r["bare"]["rss_kib"]) / 1024
    app_mb = med(lambda r: r["app"]["rss_kib"]) / 1024
    over_mb = med(lambda r: r["app"]["rss_kib"] - r["bare"]["rss_kib"]) / 1024
    first_over_mb = med(lambda r: r["app"]["rss_first_screen_kib"] - r["bare"]["stages_kib"]["first_screen"]) / 1024
    first_over_end_mb = med(lambda r: r["app"]["rss_first_screen_kib"] - r["bare"]["rss_kib"]) / 1024
    bare_p99 = med(lambda r: r["outbox"]["tap_to_durable_ms"]["p99"])
    app_p99 = med(lambda r: r["app"]["tap_to_durable_ms"]["p99"])
    def stage(side: str, name: str) -> float:
        return round(med(lambda r: r[side]["stages_kib"][name]) / 1024, 1)

    app_stages = ("interpreter", "config_loaded", "kivy_window", "app_imported", "first_screen", "after_taps")
    extra = {}
    if args.lp_threads is not None:
        extra[f"app_with_LP_NUM_THREADS={args.lp_threads}"] = {
            "rss_mb": round(med(lambda r: r["app_lp"]["rss_kib"]) / 1024, 1),
            "rss_first_screen_mb": round(med(lambda r: r["app_lp"]["rss_first_screen_kib"]) / 1024, 1),
            "tap_to_durable_p99_ms": med(lambda r: r["app_lp"]["tap_to_durable_ms"]["p99"]),
            "tap_to_durable_median_ms": med(lambda r: r["app_lp"]["tap_to_durable_ms"]["median"])}
    print(json.dumps({
        "size": args.size, "taps": args.taps, "rounds": args.rounds, "settle_s": args.settle,
        "rss_stages_mb": {"bare": {name: stage("bare", name)
                                   for name in ("interpreter", "kivy_window", "first_screen", "after_frames")},
                          "app": {name: stage("app", name) for name in app_stages}},
        **extra,
        "rss_mb": {"bare_window": round(bare_mb, 1), "app": round(app_mb, 1), "app_over_bare": round(over_mb, 1),
                   "app_first_screen": round(med(lambda r: r["app"]["rss_first_screen_kib"]) / 1024, 1),
                   "bare_first_screen": stage("bare", "first_screen"),
                   "first_screen_frames": med(lambda r: r["app"]["first_screen_frames"]),
                   # the goal's measure: both at the frame the app's first screen was drawn
                   "app_first_screen_over_bare": round(first_over_mb, 1),
                   # as measured before: the app's first screen over the bare window at its end
                   "app_first_screen_over_bare_at_end": round(first_over_end_mb, 1),
                   "goal_over_bare": 20, "met": first_over_mb <= 20},
        "tap_to_durable_p99_ms": {"bare_outbox": bare_p99, "app": app_p99,
                                  "app_record_call": med(lambda r: r["app"]["record_ms"]["p99"]),
                                  "bare_outbox_median": med(lambda r: r["outbox"]["tap_to_durable_ms"]["median"]),
                                  "app_median": med(lambda r: r["app"]["tap_to_durable_ms"]["median"]),
                                  "ratio": round(app_p99 / bare_p99, 2), "goal_ratio": 2,
                                  "met": app_p99 <= 2 * bare_p99},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
