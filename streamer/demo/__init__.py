"""The payments demo, kept out of the worker's core (tests/unit/test_core.py greps the core for
its names): `payments` makes the events and trains the model, `run` streams them through a
worker (`streamer demo`), `commands` adds both to the CLI."""
