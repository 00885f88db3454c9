# Each target sets up what it needs: venv, dependencies, the local stack, the demo model.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/local.yaml
STAMP := $(VENV)/.installed

.PHONY: demo demo-canary recommender-demo test lint stack-up stack-down stack-status clean bench soak chaos kit-check

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

models/fraud/1: | $(STAMP)
	$(BIN)/streamer model export-demo --config $(CONFIG)

models/fraud/2: | models/fraud/1
	$(BIN)/streamer model export-demo --config $(CONFIG) --version 2

models/recommender/1: | $(STAMP)
	$(BIN)/python examples/recommender/recommender.py train models/recommender

stack-up:
	docker/local-stack.sh up

stack-down:
	docker/local-stack.sh down

stack-status:
	docker/local-stack.sh status

demo: $(STAMP) stack-up models/fraud/1
	$(BIN)/streamer topics create --config $(CONFIG)
	$(BIN)/streamer demo --config $(CONFIG) --events 20000 --rate 4000

# v1 and v2 on disk; the worker's config goes canary 10% → pinned to v1 → shares 0, each by SIGHUP.
demo-canary: $(STAMP) stack-up models/fraud/2
	$(BIN)/streamer topics create --config $(CONFIG)
	$(BIN)/streamer demo --config $(CONFIG) --canary --events 30000 --rate 3000

# Page views in, the top 5 items per view out: streamed by a worker, then the same views scored
# offline (the same records), the first three printed.
REC := examples/recommender
recommender-demo: $(STAMP) stack-up models/recommender/1
	$(BIN)/streamer topics create --config $(REC)/config.yaml
	$(BIN)/python $(REC)/recommender.py produce --events 2000 --seed 1
	$(BIN)/streamer run --config $(REC)/config.yaml --max-events 2000 --timeout 120
	$(BIN)/python $(REC)/recommender.py events models/recommender-views.avro --events 2000 --seed 1
	$(BIN)/streamer score --config $(REC)/config.yaml --input models/recommender-views.avro \
		--output models/recommended.avro
	$(BIN)/python $(REC)/recommender.py show models/recommended.avro

lint: $(STAMP)
	$(BIN)/ruff check streamer tests load examples
	$(BIN)/ruff format --check streamer tests load examples
	$(BIN)/mypy

test: $(STAMP) stack-up lint
	$(BIN)/pytest -q

clean: stack-down
	rm -rf $(VENV) .stack models

bench: $(STAMP) stack-up models/fraud/1
	$(BIN)/streamer topics create --config $(CONFIG)
	$(BIN)/python load/bench_features.py
	$(BIN)/python load/bench.py --config $(CONFIG)

# Ten minutes at half the rate the last `make bench` sustained: ready time, latency, RSS growth.
soak: $(STAMP) stack-up models/fraud/1
	$(BIN)/python load/loadgen.py --config $(CONFIG) --spawn-worker --duration 600 --out load/results/soak

chaos: $(STAMP) stack-up
	STREAMER_CHAOS_KILLS=20 $(BIN)/pytest -q tests/integration/test_chaos.py

kit-check: $(STAMP)
	docker/validate.sh
