# OnAir — the two commands: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run run-cluster test lint imports format typecheck pytest pytest-postgres browser bench clean native nat-table nat-deps deploy-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

## native: build the C forwarding loop (sfu/native); without a C compiler it says so, and the
## SFU forwards with its Python loop. Strict under CI, where its tests must not be skipped.
native: $(VENV)/.runtime
	$(BIN)/python -m sfu.native.build $(if $(CI),--strict)

## run: install, migrate, create the demo user and stream, serve with daphne
run: $(VENV)/.runtime native
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py onair_demo --host $(HOST) --port $(PORT)
	$(BIN)/python -m onair.serve -b $(HOST) -p $(PORT) onair.asgi:application

## run-cluster: cluster mode on this machine (docs/SCALING.md): PostgreSQL and Redis (started
## if installed and down), `runsfu --workers 2`, daphne on PORT and PORT+1. Ctrl-C (SIGINT) or
## SIGTERM stops all; a clean stop exits 0 (make, if signalled itself, says nothing more).
CLUSTER_DATABASE ?= onair
CLUSTER_ENV := DATABASE_URL=postgres://postgres@127.0.0.1:5432/$(CLUSTER_DATABASE) \
	REDIS_URL=redis://127.0.0.1:6379/0 ONAIR_SFU_MODE=cluster
run-cluster: $(VENV)/.runtime native
	@bash .ci/services
	@psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$(CLUSTER_DATABASE)'" \
		| grep -q 1 || createdb -h 127.0.0.1 -U postgres $(CLUSTER_DATABASE)
	$(CLUSTER_ENV) $(BIN)/python manage.py migrate --noinput
	$(CLUSTER_ENV) $(BIN)/python manage.py onair_demo --host $(HOST) --port $(PORT)
	@export $(CLUSTER_ENV); pids=""; \
	stop() { kill $$pids 2>/dev/null; status=0; for pid in $$pids; do wait $$pid || status=$$?; done; exit $$status; }; \
	trap 'kill $$pids 2>/dev/null' EXIT; trap stop INT TERM; \
	$(BIN)/python manage.py runsfu --workers 2 & pids="$$pids $$!"; \
	$(BIN)/python -m onair.serve -b $(HOST) -p $$(($(PORT) + 1)) onair.asgi:application & pids="$$pids $$!"; \
	$(BIN)/python -m onair.serve -b $(HOST) -p $(PORT) onair.asgi:application & pids="$$pids $$!"; \
	echo "cluster: daphne on :$(PORT) and :$$(($(PORT) + 1)), 2 SFU workers; Ctrl-C stops"; \
	wait

## browser: Debian's Chromium for the browser tests (Playwright never downloads its own)
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

## nat-table: run the NAT matrix (tests/nat) and write its table into docs/NAT.md
nat-table: $(VENV)/.dev native nat-deps
	ONAIR_WRITE_NAT_TABLE=1 $(BIN)/python -m pytest tests/nat/test_nat_matrix.py

## nat-deps: coturn and iptables for the NAT rig (tests/nat); needs root, as CI has
nat-deps:
	@command -v turnserver >/dev/null && command -v iptables >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn iptables)

## deploy-deps: nginx and coturn for the deployment recipe's tests (tests/deploy, docs/DEPLOY.md);
## needs root, as CI has. The tests run their own nginx: one the package started is stopped.
deploy-deps:
	@command -v nginx >/dev/null && command -v turnserver >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx coturn \
		&& (nginx -s quit 2>/dev/null || true))

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

## imports: the SFU boundary (pyproject.toml, [tool.importlinter]): sfu/ imports no Django and
## nothing of the project; outside signaling.gateway, nothing imports sfu (tests and bench may)
imports: $(VENV)/.dev
	$(BIN)/lint-imports

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## The SFU's tests that run no forwarding loop (no router, or the C loop on its own, or a
## default that ignores ONAIR_NATIVE_FORWARDING), or test what comes before it (a producer's
## packet taps: recording): the second pass would run them unchanged.
SFU_LOOP_INDEPENDENT := test_native.py test_munger.py test_heap.py test_keyframe.py \
	test_retransmission.py test_simulcast.py test_simulcast_ingest.py test_track.py test_frames.py \
	test_recorder.py test_recording_files.py test_bandwidth.py test_layers.py \
	test_simulcast_publisher.py test_cluster_node.py test_ffmpeg_handshake.py
## Tests that choose their loop themselves, each loop a case of its own: the first pass runs both.
SFU_BOTH_LOOPS := test_feedback.py::test_a_nack_flood_is_answered_within_the_budget_and_other_viewers_are_untouched

## Two pytest-xdist workers (one per core: most tests wait on real time, a browser or a
## server); tests/conftest.py keeps a module's tests, and the NAT rig's, on one worker. The
## benchmarks' smoke tests and the shaped-link rig measure CPU and rates (a bench run on a
## crowded machine leaves its points out): they run after them, one at a time on each of the
## two workers (the bench's on one, the rig's on the other: two viewers cost the bench's
## pinned server a few percent of its core, and the rig compares windows of one run) (exit
## status 5: PYTEST_ARGS chose none of their tests).
XDIST := -n 2 --dist loadgroup
ALONE := tests/bench tests/quality

## The fuzzing's budget in make test (tests/fuzz: ONAIR_FUZZ_SCALE=1 is its whole budget, ≈ 2 min
## of one core; 10 for a longer hunt): half, for the suite's 15 minutes.
ONAIR_FUZZ_SCALE ?= 0.5
export ONAIR_FUZZ_SCALE

pytest: $(VENV)/.dev native browser nat-deps deploy-deps
	$(BIN)/python -m pytest $(XDIST) --durations=20 $(foreach path,$(ALONE),--ignore=$(path)) $(PYTEST_ARGS)
	$(BIN)/python -m pytest $(XDIST) -p no:cacheprovider $(ALONE) $(PYTEST_ARGS) || [ $$? = 5 ]
	@echo "the SFU's tests again with the C forwarding loop off (the Python loop forwards)"
	ONAIR_NATIVE_FORWARDING=0 $(BIN)/python -m pytest $(XDIST) -p no:cacheprovider tests/sfu \
		$(foreach test,$(SFU_LOOP_INDEPENDENT),--ignore=tests/sfu/$(test)) \
		$(foreach test,$(SFU_BOTH_LOOPS),--deselect=tests/sfu/$(test))
	$(MAKE) --no-print-directory pytest-postgres

## pytest-postgres: the model/API suite again on the real PostgreSQL (skipped, saying why, if it is down)
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
pytest-postgres: $(VENV)/.dev
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest $(XDIST) -p no:cacheprovider tests/broadcast tests/viewers \
		tests/recordings/test_services.py tests/recordings/test_apis.py tests/recordings/test_admin.py \
		tests/chat/test_consumers.py tests/chat/test_replay.py tests/chat/test_admin.py \
		tests/webhooks/test_services.py tests/webhooks/test_apis.py

## test: everything CI runs
test: lint typecheck imports pytest

$(VENV)/.bench: requirements.txt requirements-dev.txt requirements-bench.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $@ $(VENV)/.dev $(VENV)/.runtime

## bench: viewers/core of OnAir, Janus and MediaRelay → docs/BENCHMARKS.md (QUICK=1: ≈ 3 min)
bench: $(VENV)/.bench native
	$(BIN)/python -m bench $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
