"""The demo's commands, added to the CLI by `streamer.cli`: `streamer model export-demo` and
`streamer demo`. Parsing imports nothing heavy; a command imports TensorFlow when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streamer.errors import Fatal
from streamer.settings import load_settings


def add_export(model_commands: Any) -> None:
    """`model export-demo`, beside the core's `model verify` and `model sign`."""
    export = model_commands.add_parser("export-demo", help="train the demo fraud model on synthetic payments")
    export.add_argument("--config", type=Path, required=True, help="gives model.path, model.feature_spec, schemas")
    export.add_argument("--out", type=Path, help="model base folder (default: model.path)")
    export.add_argument("--version", type=int, default=1)


def add_demo(commands: Any) -> None:
    demo = commands.add_parser("demo", help="stream synthetic payments through a worker and report")
    demo.add_argument("--config", type=Path, required=True)
    demo.add_argument("--events", type=int, default=20_000)
    demo.add_argument("--rate", type=float, default=4_000, help="events per second")
    demo.add_argument(
        "--warm-up", type=float, default=10, metavar="SECONDS", help="events sent first, at the rate, reported apart"
    )
    demo.add_argument(
        "--canary", action="store_true", help="with v1 and v2 on disk: a canary, a rollback, a promotion, by SIGHUP"
    )


def export_demo(args: argparse.Namespace) -> int:
    from streamer.demo.payments import train_demo_model

    settings = load_settings(args.config)
    out = args.out or settings.model.path
    if (out / str(args.version)).exists():
        print(f"model {out / str(args.version)} exists; versions are immutable, keeping it")
        return 0
    if settings.model.feature_spec is None:
        raise Fatal(f"config {args.config}: model.feature_spec is not set; point it at a feature spec YAML")
    path = train_demo_model(out, settings.model.feature_spec, settings.schemas.input, args.version)
    print(f"exported {path}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from streamer.demo.run import CANARY_STEPS, format_report, run_demo

    settings = load_settings(args.config)
    report = run_demo(settings, args.config, args.events, args.rate, CANARY_STEPS if args.canary else (), args.warm_up)
    print(format_report(report))
    ok = report.scored == report.produced and report.duplicates == 0 and report.worker_exit == 0
    return 0 if ok else 1
