"""The GL rasteriser: a software one finishes each frame before the app handles the next touch."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: GL_RENDERER strings of Mesa's CPU rasterisers (llvmpipe, softpipe, the classic swrast).
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "software rasterizer", "swrast")


def is_software(renderer: str) -> bool:
    """Whether GL_RENDERER names a rasteriser that draws on the CPU's cores."""
    return any(name in renderer.lower() for name in SOFTWARE_RENDERERS)


def finishes_frames(setting: str, renderer: str) -> bool:
    """``[ui] finish_frames``: "always", "never", or "auto" (with a software rasteriser only)."""
    return setting == "always" or (setting == "auto" and is_software(renderer))


class FrameFinisher:
    """Bound to the window's on_flip: waits until the frame just swapped is rasterised.

    Mesa's llvmpipe rasterises on one thread per core after the swap returns
    (a pbuffer's swap waits for nothing), so without this the frame drawn
    before a tap is still being rasterised on every core while the tap's
    commit waits for one: on a 2-core machine the tap's time to durable had a
    p99 five times the bare outbox's. Waiting here moves that time to the end
    of the frame, before the next touch is read; it also keeps llvmpipe from
    queuing frames, whose buffers grew the app by 60-150 MB over 200 taps
    (docs/benchmarks.md). With a GPU the wait is for the GPU, which is why
    "auto" leaves it out there.
    """

    def __init__(self) -> None:
        self.frames = 0

    def __call__(self, *_args) -> None:
        from kivy.graphics.opengl import glFinish

        glFinish()
        self.frames += 1


def renderer() -> str:
    """The current GL context's GL_RENDERER (a window must exist)."""
    from kivy.graphics.opengl import GL_RENDERER, glGetString

    return glGetString(GL_RENDERER).decode("utf-8", errors="replace")


def bind(window, setting: str) -> FrameFinisher | None:
    """Finish each of *window*'s frames if *setting* asks for it with this renderer; the finisher, or None."""
    name = renderer()
    if not finishes_frames(setting, name):
        return None
    finisher = FrameFinisher()
    window.bind(on_flip=finisher)
    log.info("GL renderer %s: each frame is rasterised before the next touch is read", name)
    return finisher
