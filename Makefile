# Everything runs from .venv, built from pyproject.toml on first use (only python3 is needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test chaos stress differential demo lint docs bench gateway clean redis-server browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[flask,starlette,fastapi,django,gateway,openfeature,otel,redis,dev,bench]'
	touch $(STAMP)

test: $(STAMP) redis-server browser
	$(BIN)/python -m pytest -m "not chaos and not differential" $(PYTEST_ARGS)

# The Redis tests need a real redis-server: installed from Debian when missing and possible.
redis-server:
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server \
		>/dev/null; } || echo "redis-server cannot be installed here: the Redis tests are skipped"

# The browser tests need Chromium (Debian's, installed when missing and possible) and VWO's web
# SDK from the npm registry (pinned, unpacked into .venv/npm); without them they are skipped.
VWO_WEB_SDK := vwo-fme-node-sdk@1.35.0
browser: $(STAMP)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		>/dev/null; } || echo "Chromium cannot be installed here: the browser tests are skipped"
	@test -f $(VENV)/npm/package/package.json || { command -v npm >/dev/null \
		&& mkdir -p $(VENV)/npm && cd $(VENV)/npm && npm pack --silent $(VWO_WEB_SDK) >/dev/null \
		&& tar xzf vwo-fme-node-sdk-*.tgz; } \
		|| echo "VWO's web SDK cannot be fetched from npm: its browser tests are skipped"

chaos: $(STAMP) redis-server
	$(BIN)/python -m pytest -m chaos -s -p no:cacheprovider tests/test_chaos.py tests/test_crash_recovery.py \
		tests/test_redis_failover.py

# The concurrency, burst, chaos and crash tests, each run 20 times (STRESS_COUNT) beside a
# CPU-bound process: a race that fails 1 run in 10 fails here, not in CI.
stress: $(STAMP) redis-server
	$(BIN)/python -m tests.stress

# The native evaluator against the SDK on 250,000 generated cases (VWO_HEAP_DIFFERENTIAL_CASES,
# VWO_HEAP_DIFFERENTIAL_SEED change the run).
differential: $(STAMP)
	$(BIN)/python -m pytest -m differential -p no:cacheprovider tests/evaluation/test_native.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The documentation as a site (site/): every page, link and anchor checked (--strict).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet

demo: $(STAMP)
	$(BIN)/python -m examples.fastapi_app

gateway: $(STAMP)
	$(BIN)/python -m vwo_heap_middleware.testing.gateway --flags vwo_heap_middleware/testing/gateway/samples/flags.toml \
		--segments vwo_heap_middleware/testing/gateway/samples/segments.json --port 8787

bench: $(STAMP) redis-server
	$(BIN)/python -m bench
	$(BIN)/python -m bench.shared

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
