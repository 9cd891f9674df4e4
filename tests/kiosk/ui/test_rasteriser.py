"""Which GL renderers make the app finish each frame before the next touch."""

import pytest

from kiosk.ui import rasteriser

LLVMPIPE = "llvmpipe (LLVM 15.0.6, 256 bits)"
PI_GPU = "V3D 4.2"


@pytest.mark.parametrize("renderer, software", [
    (LLVMPIPE, True), ("softpipe", True), ("Software Rasterizer", True), ("Mesa X11 swrast", True),
    (PI_GPU, False), ("VC4 V3D 2.1", False), ("Mesa Intel(R) UHD Graphics 620 (KBL GT2)", False), ("", False),
])
def test_software_renderers_are_the_cpu_rasterisers(renderer, software):
    assert rasteriser.is_software(renderer) is software


@pytest.mark.parametrize("setting, renderer, finishes", [
    ("auto", LLVMPIPE, True), ("auto", PI_GPU, False),
    ("always", PI_GPU, True), ("always", LLVMPIPE, True),
    ("never", LLVMPIPE, False), ("never", PI_GPU, False),
])
def test_the_setting_decides_with_the_renderer(setting, renderer, finishes):
    assert rasteriser.finishes_frames(setting, renderer) is finishes
