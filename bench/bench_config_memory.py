"""Peak resident memory of a fresh interpreter that imports the kiosk's config and loads a file (run by hand).

    .venv/bin/python bench/bench_config_memory.py [--runs 5] [--baseline CHECKOUT]

Against a bare interpreter measured in the same run. ``--baseline`` measures
another checkout's code beside this one's, alternating run by run, on this
interpreter: a worktree of an earlier commit (``git worktree add /tmp/base
main``) says what a change to the configuration saved. The interpreter must have
what that checkout's configuration imports.
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The peak is VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across exec, so a
# child would start from this process's peak.
PEAK = "import re\nhwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
CODE = ("import sys, kiosk.config\n"
        "kiosk.config.load_config(sys.argv[1], env={})\n"
        "assert kiosk.config.__file__.startswith(sys.argv[2]), kiosk.config.__file__\n"
        + PEAK + "print(hwm, int(any(m.startswith('pydantic') for m in sys.modules)))\n")
BARE = PEAK + "print(hwm, 0)\n"


def peak_kib(code: str, root: Path, *args: str) -> tuple[int, bool]:
    """(peak RSS in KiB, whether pydantic was loaded) of *code* run with *root*'s packages first on sys.path."""
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=root, check=True,
                          capture_output=True, text=True)
    peak, pydantic = done.stdout.split()[-2:]
    return int(peak), pydantic == "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "deploy" / "kiosk.example.toml"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                        help="another checkout whose kiosk config to measure beside this one")
    args = parser.parse_args()
    roots = {"this checkout": ROOT}
    if args.baseline is not None:
        roots["baseline " + str(args.baseline)] = args.baseline.resolve()
    for root in roots.values():
        # Byte-compiled first, as pip installs them: compiling at every start would count too
        # (where PYTHONDONTWRITEBYTECODE is set), 1.5-2 MiB.
        for package in ("kiosk", "onetap_config"):
            compileall.compile_dir(str(root / package), quiet=1)
    bare: list[int] = []
    loaded: dict[str, list[tuple[int, bool]]] = {name: [] for name in roots}
    for _ in range(args.runs):
        bare.append(peak_kib(BARE, ROOT)[0])
        for name, root in roots.items():
            loaded[name].append(peak_kib(CODE, root, args.config, str(root)))
    bare_kib = statistics.median(bare)
    print(f"bare interpreter: {bare_kib / 1024:.1f} MiB (median of {args.runs})")
    for name, runs in loaded.items():
        kib = statistics.median(peak for peak, _ in runs)
        pydantic = "pydantic loaded" if any(p for _, p in runs) else "no pydantic"
        print(f"{name}: kiosk.config + load_config: {kib / 1024:.1f} MiB "
              f"(+{(kib - bare_kib) / 1024:.1f} MiB over bare; {pydantic})")


if __name__ == "__main__":
    main()
