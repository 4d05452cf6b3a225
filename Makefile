# Two commands set everything up on a fresh machine with only python3:
#   make demo   a simulated call with a shipped bot, fully offline
#   make test   lint, type check and the test suite
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: all env run-env demo test lint typecheck pytest validate scenarios bench dev clean browser postgres livekit-stack phone-tests phone-demo

all: test

# Bootstrap uv with pip when missing, then install exactly what uv.lock pins: everything
# for the tests (the dev tools and every optional provider) ...
env: .venv/.synced
.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || test -x "$(UV)" || $(PYTHON) -m pip install --user --quiet uv
	$(UV) sync --frozen --all-extras
	@touch $@ .venv/.synced-run

# ... or only what running dialplan needs (no dev tools, no optional providers): the demo
run-env: .venv/.synced-run
.venv/.synced-run: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || test -x "$(UV)" || $(PYTHON) -m pip install --user --quiet uv
	$(UV) sync --frozen --no-dev --inexact
	@touch $@

DIALPLAN := $(CURDIR)/.venv/bin/dialplan

demo: run-env
	$(DIALPLAN) validate bots/
	@# the caller is another voice than the bot's, over a line with hiss; the offline
	@# recognizer (Whisper tiny.en) hears free speech: no grammar of the script's lines
	$(DIALPLAN) simulate receptionist --script bots/receptionist.demo.txt --ignore-schedule \
		--expect-end bot --record -
	@echo "== a flow bot: the dentist's booking line (triage -> booking -> confirmation -> wrap-up)"
	@# in a scratch directory: each run books into a new calendar file (var/ there)
	cd "$$(mktemp -d)" && $(DIALPLAN) simulate dentist \
		--bots "$(CURDIR)/bots" --script "$(CURDIR)/bots/dentist.demo.txt" --voice bob \
		--expect-end bot --expect-step confirmation --expect-step wrap_up
	@echo "== next: source .venv/bin/activate, then dialplan chat dentist (see README.md)"

# the real LiveKit server and SIP service, built from their Go modules at the versions
# pinned in .ci/build-livekit (into ~/.cache/dialplan-livekit, reused once built), with
# Debian's Redis, baresip and sipp beside them: the phone path's tests, demo and benches
livekit-stack:
	@missing=""; for p in pkg-config libopus-dev libopusfile-dev libsoxr-dev redis-server \
		baresip-core sip-tester; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian's$$missing for the LiveKit stack"; \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; fi
	.ci/build-livekit all

lint: env
	$(UV) run --frozen ruff check runtime plugins phonelab tests bench
	$(UV) run --frozen ruff format --check runtime plugins phonelab tests bench

typecheck: env
	$(UV) run --frozen mypy

# the widget test drives a real headless Chromium (Debian's package: playwright never
# downloads a browser here)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser widget test"; \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# the results-store tests start a throwaway PostgreSQL from Debian's server binaries
# (kept off PATH in /usr/lib/postgresql/<major>/bin)
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing Debian's postgresql for the results-store tests"; \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }

pytest: env browser postgres
	$(UV) run --frozen pytest -q

validate: env
	$(UV) run --frozen dialplan validate bots/

# development server: bots and templates hot-reload, Python changes restart it
dev: env
	$(UV) run --frozen dialplan dev bots/

# the shipped bots' pinned conversations (bots/*.scenarios.toml)
scenarios: env
	$(UV) run --frozen dialplan test

# the real phone path (tests/phone): livekit-server, livekit-sip, Redis, dialplan workers
# and SIP phones, in a private network namespace nothing outside can reach
phone-tests: env livekit-stack
	.ci/in-private-net $(CURDIR)/.venv/bin/pytest -q tests/phone

# one real SIP call to the receptionist over the real stack, printed as the caller heard it
phone-demo: run-env livekit-stack
	.ci/in-private-net $(CURDIR)/.venv/bin/python -m phonelab.demo

test: lint typecheck validate scenarios pytest phone-tests

# the SIP benches (bench/sip_*.py) run the real stack, in a private network namespace
bench: env livekit-stack
	@for script in bench/*.py; do \
		case $$script in bench/bench_stats.py|bench/sip_lab.py) continue;; esac; \
		echo "== $$script"; \
		case $$script in \
			bench/sip_*) .ci/in-private-net $(CURDIR)/.venv/bin/python $$script;; \
			*) $(UV) run --frozen python $$script;; \
		esac; done

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
