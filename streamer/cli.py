"""`streamer run | score | schema scored | topics create | model export-demo | verify | sign | profile |
drift report | quality run | demo`.

Every `Fatal` ends the process with exit code 2 and one line on stderr naming the problem and
the fix; TensorFlow is imported only by the commands that need it, so config errors are instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from streamer.demo import commands as demo_commands
from streamer.errors import Fatal
from streamer.logs import configure_logging, import_tensorflow
from streamer.settings import load_settings

log = logging.getLogger("streamer")
# what imports TensorFlow, and when: `run` reads its config first, so a bad one is refused at once
IMPORT_TENSORFLOW_FIRST = {"model", "schema", "score", "demo"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="join the consumer group and score events until SIGTERM")
    run.add_argument("--config", type=Path, required=True)
    run.add_argument("--max-events", type=int, help="stop after this many events (tests, smoke runs)")
    run.add_argument("--timeout", type=float, help="stop after this many seconds")

    topics = commands.add_parser("topics", help="manage the configured topics")
    topics_cmd = topics.add_subparsers(dest="topics_command", required=True)
    create = topics_cmd.add_parser("create", help="create the configured topics that are missing")
    create.add_argument("--config", type=Path, required=True)

    model = commands.add_parser("model", help="model packages")
    model_cmd = model.add_subparsers(dest="model_command", required=True)
    demo_commands.add_export(model_cmd)
    verify = model_cmd.add_parser("verify", help="check a package's files against its sha256 manifest")
    verify.add_argument("dir", type=Path, help="one version folder, e.g. models/<name>/1")
    sign = model_cmd.add_parser("sign", help="sign a package with model-signing (checked when model.public_key is set)")
    sign.add_argument("dir", type=Path, help="one version folder, e.g. models/<name>/2")
    sign.add_argument("--key", type=Path, required=True, help="elliptic-curve private key, PEM")
    profile = model_cmd.add_parser(
        "profile", help="time one model call at each of batching.allowed_batch_sizes, as the worker calls it"
    )
    profile.add_argument("--config", type=Path, required=True)
    profile.add_argument("--calls", type=int, default=50, help="timed calls per size (default 50)")

    score = commands.add_parser(
        "score",
        help="score an Avro container file offline, through the same path; refused records go to "
        "<output stem>.dlq.avro (exit 1 when there are any)",
    )
    score.add_argument("--config", type=Path, required=True)
    score.add_argument("--input", type=Path, required=True)
    score.add_argument("--output", type=Path, required=True)

    schema = commands.add_parser("schema", help="schemas the config makes")
    schema_cmd = schema.add_subparsers(dest="schema_command", required=True)
    scored_schema = schema_cmd.add_parser(
        "scored", help="print the scored records' Avro schema, derived from the config, schemas.input and the model"
    )
    scored_schema.add_argument("--config", type=Path, required=True)

    drift = commands.add_parser("drift", help="drift windows")
    drift_cmd = drift.add_subparsers(dest="drift_command", required=True)
    report = drift_cmd.add_parser("report", help="merge the group's windows from the drift topic into an HTML report")
    report.add_argument("--config", type=Path, required=True, help="gives topics.drift, schemas.drift, model.path")
    report.add_argument(
        "--out", type=Path, default=Path("drift-report/report.html"), help="the HTML file; PNGs beside it"
    )

    quality = commands.add_parser("quality", help="model quality from delayed labels")
    quality_cmd = quality.add_subparsers(dest="quality_command", required=True)
    join = quality_cmd.add_parser(
        "run", help="join labels from topics.labels to the scores workers kept in Redis, into topics.quality"
    )
    join.add_argument("--config", type=Path, required=True, help="with a quality: section")
    join.add_argument("--max-labels", type=int, help="stop after this many labels (tests, smoke runs)")
    join.add_argument("--timeout", type=float, help="stop after this many seconds")

    demo_commands.add_demo(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging()
    # TensorFlow's native (C++/absl) lines bypass Python logging: those written at its import are
    # logged as records (`import_tensorflow`), any later ones are off unless STREAMER_TF_LOGS=1;
    # its real errors still arrive as exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if os.environ.get("STREAMER_TF_LOGS") == "1" else "3")
    try:
        if args.command in IMPORT_TENSORFLOW_FIRST:
            import_tensorflow()
        return _dispatch(args)
    except Fatal as exc:
        print(f"streamer: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        # Until the worker installs its draining handler, SIGTERM has nothing to drain: exit clean.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        settings = load_settings(args.config)  # before TensorFlow is imported: a bad config is instant
        import_tensorflow()
        from streamer.worker import Worker

        Worker(settings, config_path=args.config).run(max_events=args.max_events, timeout_s=args.timeout)
        return 0
    if args.command == "topics":
        from streamer.kafka.admin import create_topics

        settings = load_settings(args.config)
        topics = settings.topics
        names = settings.topic_names()
        created = create_topics(settings.admin_config(), names, topics.partitions, topics.replication_factor)
        print(f"topics: created {created or 'none'}; present {names}")
        return 0
    if args.command == "model" and args.model_command == "verify":
        from streamer.model import verify_package

        verify_package(args.dir)
        print(f"model {args.dir}: every file matches its manifest")
        return 0
    if args.command == "model" and args.model_command == "sign":
        from streamer.model import sign_package, verify_package

        verify_package(args.dir)  # sign only what matches its manifest
        print(f"signed {args.dir}: {sign_package(args.dir, args.key)}")
        return 0
    if args.command == "model" and args.model_command == "profile":
        from streamer.call_cost import call_costs, table
        from streamer.codec import input_codec
        from streamer.device import serving_device
        from streamer.model import load_model

        settings = load_settings(args.config)
        chosen = settings.model
        device = serving_device(chosen)
        model = load_model(chosen, input_codec(settings).field_types, settings.outputs.values, device)
        print(
            f"model {model.name} v{model.version} on {device}, intra_op_threads {chosen.intra_op_threads}, "
            f"inter_op_threads {chosen.inter_op_threads}; medians of {args.calls} calls per size"
        )
        print(table(call_costs(model, settings.batching.allowed_batch_sizes, max(args.calls, 1))))
        return 0
    if args.command == "model":
        return demo_commands.export_demo(args)
    if args.command == "schema":
        import json

        from streamer.codec import input_codec
        from streamer.model import load_model
        from streamer.outputs import derived_schema

        settings = load_settings(args.config)
        inputs = input_codec(settings)
        model = load_model(settings.model, inputs.field_types, settings.outputs.values)
        print(json.dumps(derived_schema(settings, inputs, model.outputs), indent=2))
        return 0
    if args.command == "drift":
        from streamer.drift.command import write_report

        settings = load_settings(args.config)
        print(write_report(settings, args.out))
        return 0
    if args.command == "quality":
        from streamer.metrics import HealthServer
        from streamer.quality.join import LabelJoiner

        settings = load_settings(args.config)
        joiner = LabelJoiner(settings)
        signal.signal(signal.SIGTERM, lambda *_: joiner.stop())  # drains: counts out, offsets committed
        signal.signal(signal.SIGINT, lambda *_: joiner.stop())
        health = None
        if settings.metrics.enabled and settings.quality is not None:
            health = HealthServer(
                joiner.metrics, settings.metrics.host, settings.quality.metrics_port, lambda: (True, "joining labels")
            )
            health.start()
        try:
            print(joiner.run(max_labels=args.max_labels, timeout_s=args.timeout))
        finally:
            if health is not None:
                health.stop()
        return 0
    if args.command == "score":
        from streamer.offline import score_file

        summary = score_file(load_settings(args.config), args.input, args.output)
        print(summary.line(args.output))
        return 1 if summary.dead_lettered else 0
    return demo_commands.demo(args)
