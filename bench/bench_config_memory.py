"""Peak resident memory of a fresh interpreter that imports the kiosk's config and loads a file (run by hand)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ("import resource, sys, kiosk.config\n"
        "kiosk.config.load_config(sys.argv[1], env={})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
BARE = "import resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"


def peak_kib(code: str, *args: str) -> int:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    return int(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(ROOT / "deploy" / "kiosk.example.toml"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bare = statistics.median(peak_kib(BARE) for _ in range(args.runs))
    loaded = statistics.median(peak_kib(CODE, args.config) for _ in range(args.runs))
    print(f"bare interpreter: {bare / 1024:.1f} MiB; kiosk.config + load_config: "
          f"{loaded / 1024:.1f} MiB (+{(loaded - bare) / 1024:.1f} MiB)")


if __name__ == "__main__":
    main()
