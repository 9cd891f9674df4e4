"""The onetap-kiosk command: run the touchscreen app, or simulate terminals."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from kiosk.errors import KioskError

PROG = "onetap-kiosk"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="onetap feedback terminal")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the touchscreen app (a demo terminal without config)")
    run.add_argument("--config", type=Path, default=os.environ.get("ONETAP_CONFIG") or None,
                     help="TOML file (see deploy/kiosk.example.toml); env ONETAP_CONFIG")
    run.add_argument("--broker", help="mqtt://host:port or mqtts://host:port")
    run.add_argument("--site", help="site identifier")
    run.add_argument("--terminal", help="terminal identifier")
    run.add_argument("--data-dir", type=Path, help="where the outbox lives")
    run.add_argument("--check-config", action="store_true",
                     help="validate the configuration, print it (password hidden) and exit 0 or 1")

    sim = sub.add_parser(
        "simulate", help="headless terminals using the real flow, outbox and uplink",
        description="Either --config FILE (one provisioned terminal: its site, name, broker account "
                    "and TLS) or --broker URL --site S (terminals sim-001, sim-002, ...).")
    sim.add_argument("--config", type=Path,
                     help="a provisioned kiosk.toml: simulate that one terminal (then --terminals is 1)")
    sim.add_argument("--broker", help="mqtt://host:port or mqtts://host:port (without --config)")
    sim.add_argument("--site", help="site identifier (without --config)")
    sim.add_argument("--terminals", type=int, default=None,
                     help="how many (sim-001, ...); with --config only 1 (one account is one terminal)")
    sim.add_argument("--taps", type=int, required=True,
                     help="taps per terminal in total, counting those already in --data-dir; 0 only drains")
    sim.add_argument("--rate", type=float, default=None, help="taps/s per terminal (default: as fast as possible)")
    sim.add_argument("--data-dir", type=Path, required=True, help="the terminals' outboxes (resumed from)")
    sim.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for Acks after the last tap")
    sim.add_argument("--username", default=os.environ.get("ONETAP_MQTT_USERNAME"),
                     help="broker user (env ONETAP_MQTT_USERNAME)")
    sim.add_argument("--password", default=os.environ.get("ONETAP_MQTT_PASSWORD"),
                     help="broker password (prefer env ONETAP_MQTT_PASSWORD)")
    sim.add_argument("--mqtt-protocol", choices=("5", "3.1.1"),
                     default=os.environ.get("ONETAP_MQTT_PROTOCOL", "5"),
                     help="MQTT version (env ONETAP_MQTT_PROTOCOL; default 5)")
    sim.add_argument("--ack-timeout", type=float, default=10.0, help="resend a batch after this many seconds")
    voices = sub.add_parser(
        "voices", help="render the voice-guidance prompts with espeak-ng (cached; unchanged ones kept)",
        description="Renders every spoken prompt of every configured language into --out (default: "
                    "[ui] voice_cache, else <data_dir>/voices). The institution's own recordings in "
                    "[ui] voice_dir, under the same names, take precedence when the kiosk plays them.")
    voices.add_argument("--config", type=Path, default=os.environ.get("ONETAP_CONFIG") or None,
                        help="TOML file; env ONETAP_CONFIG")
    voices.add_argument("--out", type=Path, help="the prompt directory (DIR/<lang>/<key>.wav)")
    voices.add_argument("--force", action="store_true", help="render again even if the text is unchanged")
    return parser


def _voices(args: argparse.Namespace) -> int:
    from kiosk.catalog import load_catalogs
    from kiosk.config import load_config
    from kiosk.survey import CACHE_FILE, Survey
    from kiosk.voice import Prompts, render

    cfg = load_config(args.config)
    out = args.out or Prompts.from_config(cfg).cache
    # The site's own texts too, from the survey config the kiosk last received.
    survey = Survey(cfg.data_dir / CACHE_FILE).current
    done = render(load_catalogs(cfg.ui.languages), out, force=args.force, survey=survey)
    print(f"{PROG}: prompts in {out}: " + ", ".join(f"{lang} {n} rendered" for lang, n in done.items()),
          file=sys.stderr)
    return 0


def _error(message: object) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    from kiosk.config import load_config

    cfg = load_config(
        args.config,
        overrides={"broker": args.broker, "site": args.site, "terminal": args.terminal,
                   "data_dir": args.data_dir},
    )
    if args.check_config:
        print(json.dumps(cfg.redacted(), ensure_ascii=False, indent=2))
        print(f"{PROG}: config OK ({cfg.source or 'defaults'})", file=sys.stderr)
        return 0
    try:
        from kiosk.ui.app import run_app
    except ImportError as exc:
        if exc.name and (exc.name == "kiosk.ui" or exc.name.startswith("kiosk.ui.")):
            return _error("the touchscreen UI (kiosk.ui) is not part of this installation")
        return _error(f"the touchscreen UI needs {exc.name or exc}: pip install 'onetap[kiosk]'")
    result = run_app(cfg)
    return int(result or 0)


def _simulate(args: argparse.Namespace) -> int:
    from kiosk.config import load_config, parse_broker_url
    from kiosk.simulator import simulate

    config = None
    if args.config is not None:
        if args.broker or args.site:
            return _error("--config names the broker and the site: give --config, or --broker and --site")
        config = load_config(args.config)
    else:
        if not args.broker or not args.site:
            return _error("give --config FILE (a provisioned kiosk.toml), or --broker URL and --site S")
        if args.terminals is None:
            return _error("--terminals N is needed with --broker and --site")
        try:
            parse_broker_url(args.broker)
        except ValueError as exc:
            return _error(f"--broker: {exc}")
    try:
        result = simulate(
            broker=args.broker, site=args.site, terminals=1 if args.terminals is None else args.terminals,
            taps=args.taps, data_dir=args.data_dir, rate=args.rate, timeout=args.timeout,
            username=args.username, password=args.password, ack_timeout=args.ack_timeout,
            mqtt_protocol=args.mqtt_protocol, config=config,
        )
    except ValueError as exc:
        return _error(exc)
    for problem in result.errors:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
    print(json.dumps(result.to_dict()), flush=True)
    return 0 if result.pending == 0 and not result.errors else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.command == "run" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "voices":
            return _voices(args)
        return _simulate(args)
    except KioskError as exc:
        return _error(exc)
    except KeyboardInterrupt:
        return _error("interrupted")


if __name__ == "__main__":
    sys.exit(main())
