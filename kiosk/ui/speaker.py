"""The voice guidance's playback: prompt files one after another through Kivy's SDL2 audio (SoundLoader)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from kivy.clock import Clock

from kiosk.voice import Prompts

log = logging.getLogger(__name__)

#: Silence between two prompts, so that they do not run together.
GAP_S = 0.15


class Speaker:
    """Says prompts in order; :meth:`say` with *interrupt* cuts off what is being said (a focus move)."""

    def __init__(self, prompts: Prompts, volume: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic):
        self.prompts = prompts
        self.volume = volume
        self.monotonic = monotonic
        self._queue: list[tuple[str, Path]] = []
        self._sounds: dict[Path, object] = {}
        self._current = None
        self._next = None
        self._missing: set[tuple[str, str]] = set()
        #: What was played: (lang/key, file, monotonic start, length in seconds), for tests and logs.
        self.played: list[tuple[str, str, float, float]] = []

    @property
    def speaking(self) -> bool:
        return self._current is not None or bool(self._queue)

    def say(self, lang: str, keys: list[str], *, interrupt: bool = False) -> None:
        if interrupt:
            self.stop()
        for key in keys:
            path = self.prompts.path(lang, key)
            if path is None:
                if (lang, key) not in self._missing:
                    self._missing.add((lang, key))
                    log.warning("voice prompt %s/%s has no file: run onetap-kiosk voices", lang, key)
                continue
            self._queue.append((f"{lang}/{key}", path))
        if self._current is None and self._next is None:
            self._play_next()

    def stop(self) -> None:
        self._queue.clear()
        if self._next is not None:
            self._next.cancel()
            self._next = None
        if self._current is not None:
            self._current.stop()
            self._current = None

    def preload(self, lang: str, keys: list[str]) -> None:
        """Load a language's prompts ahead (loading a file on a tap would delay the next frame)."""
        for key in keys:
            path = self.prompts.path(lang, key)
            if path is not None:
                self._load(path)

    def forget(self, prefix: str) -> None:
        """Load the prompts named *prefix*… from their files again (the site's, rendered anew)."""
        for path in [p for p in self._sounds if p.name.startswith(prefix)]:
            sound = self._sounds.pop(path)
            if sound and sound is not self._current:
                sound.unload()

    def _load(self, path: Path):
        sound = self._sounds.get(path)
        if sound is None:
            # Imported at the first prompt: Kivy's audio core costs memory a visit without voice never needs.
            from kivy.core.audio import SoundLoader

            sound = SoundLoader.load(str(path)) or False
            if not sound:
                log.warning("voice prompt %s cannot be played (no audio output?)", path)
            self._sounds[path] = sound
        return sound

    def _play_next(self, *_args) -> None:
        self._next = None
        self._current = None
        while self._queue:
            name, path = self._queue.pop(0)
            sound = self._load(path)
            if not sound:
                continue
            sound.volume = self.volume
            sound.stop()
            sound.play()
            length = sound.length or 0.0
            self._current = sound
            self.played.append((name, str(path), self.monotonic(), length))
            self._next = Clock.schedule_once(self._play_next, length + GAP_S)
            return
