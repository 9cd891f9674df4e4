"""Start the touchscreen app: Kivy settings for a kiosk (set before any window exists), then the shell."""

from __future__ import annotations

import logging
import os
import platform
import signal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only read here: a bare window (bench/bench_kiosk_footprint.py) loads no config models
    from kiosk.config import KioskConfig

log = logging.getLogger(__name__)


def on_raspberry_pi() -> bool:
    try:
        return "raspberry pi" in Path("/proc/device-tree/model").read_text(errors="replace").lower()
    except OSError:
        return platform.machine() in ("armv7l",) and Path("/etc/rpi-issue").exists()


def configure_kivy(cfg: "KioskConfig", size: tuple[int, int] | None = None) -> None:
    """Kiosk settings; must run before kivy.core.window is imported (the window reads them once)."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    # SDL would turn SIGTERM into a window-close request, which a kiosk
    # refuses; systemd's stop must instead end the app cleanly (run_app).
    os.environ.setdefault("SDL_NO_SIGNAL_HANDLERS", "1")
    # Kivy logs through Python's logging, as configured by onetap-kiosk.
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    # SDL2's audio only (the chime, voice guidance): GStreamer's would load far more than it plays.
    os.environ.setdefault("KIVY_AUDIO", "sdl2")
    from kivy.config import Config

    ui = cfg.ui
    fullscreen = on_raspberry_pi() if ui.fullscreen is None else ui.fullscreen
    width, height = size or tuple(ui.size)
    Config.set("kivy", "exit_on_escape", "0")
    Config.set("kivy", "pause_on_minimize", "0")
    Config.set("kivy", "keyboard_mode", "system")
    Config.set("graphics", "maxfps", str(ui.fps))
    Config.set("graphics", "fullscreen", "auto" if fullscreen else "0")
    Config.set("graphics", "borderless", "1" if fullscreen else "0")
    Config.set("graphics", "show_cursor", "0" if fullscreen else "1")
    Config.set("graphics", "width", str(width))
    Config.set("graphics", "height", str(height))
    Config.set("graphics", "resizable", "0" if fullscreen else "1")
    Config.set("graphics", "multisamples", "2")
    # Exactly one input provider: Kivy's defaults plus a probed touchscreen
    # deliver each touch twice on a Pi.
    for option in Config.options("input"):
        Config.remove_option("input", option)
    name = ui.touch_input.split(",", 1)[0].strip()
    Config.set("input", name or "touch", ui.touch_input)
    Config.set("postproc", "double_tap_time", "0")
    Config.set("postproc", "triple_tap_time", "0")


def run_app(cfg: "KioskConfig", *, size: tuple[int, int] | None = None) -> int:
    """Run the kiosk until it is quit from the staff screen; returns the exit status."""
    configure_kivy(cfg, size)
    from kiosk.ui.shell import OnetapApp

    app = OnetapApp(cfg)

    def stop_cleanly(signum, _frame) -> None:
        # On the Kivy thread: the uplink publishes "offline", the outbox closes.
        log.info("signal %d: stopping", signum)
        Clock.schedule_once(lambda _dt: app.stop())

    from kivy.clock import Clock

    signal.signal(signal.SIGTERM, stop_cleanly)
    signal.signal(signal.SIGINT, stop_cleanly)
    app.run()
    return app.exit_code
