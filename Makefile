# Two commands do all the set-up on a fresh machine:
#   make demo   the main job: Kafka + Redis + the streaming service + a replayed watch stream
#   make test   the whole test suite against the real local Kafka and Redis
SHELL := /bin/bash
PY := .venv/bin/python
SERVICES := deploy/local/with_services.sh
PYTEST_ARGS ?=

.PHONY: help venv lock up down status demo test lint bench data clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' Makefile | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

venv:  ## create .venv from requirements.lock (heavy dependencies cached outside the clone)
	@bash deploy/local/venv.sh

lock:  ## regenerate requirements.lock from pyproject.toml (UPGRADE=1, or UPGRADE=pkg,pkg, to move versions)
	@bash deploy/local/lock.sh

up:  ## start the local Kafka broker, Redis server and three-node Redis Cluster (idempotent)
	@bash deploy/local/redis.sh start
	@bash deploy/local/redis_cluster.sh start
	@bash deploy/local/kafka.sh start

down:  ## stop the local Kafka broker and Redis server started by `make up`
	@bash deploy/local/kafka.sh stop
	@bash deploy/local/redis_cluster.sh stop
	@bash deploy/local/redis.sh stop

status:  ## say whether the local services run
	@bash deploy/local/redis.sh status || true
	@bash deploy/local/redis_cluster.sh status || true
	@bash deploy/local/kafka.sh status || true

demo: venv  ## the main job: stream a simulated AVOD watch stream through Kafka into Redis, then look users up
	@bash $(SERVICES) $(PY) -m streamer.cli.demo

test: venv lint  ## run lint and the whole test suite against the real local Kafka and Redis
	@bash deploy/local/promtool.sh
	@bash $(SERVICES) $(PY) -m pytest --doctest-modules model streamer tests $(PYTEST_ARGS)

lint: venv  ## ruff: lint and format check of model/, streamer/, tests/ and benchmarks/
	@$(PY) -m ruff check model streamer tests benchmarks
	@$(PY) -m ruff format --check model streamer tests benchmarks

bench: venv  ## benchmarks against the real local services; writes benchmarks/results.json
	@bash $(SERVICES) $(PY) -m benchmarks.run

data: venv  ## fetch MovieLens 100K (from the recbole wheel) into .data/
	@$(PY) -m benchmarks.movielens

clean:  ## remove .venv and local run state (not the cached environment or jars)
	@rm -rf .venv .run .data
