# The two commands of the README: `make run` (the main job on embedded defaults) and
# `make test` (the whole suite). Both create .venv and install pinned dependencies.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DATA ?= data
ONLINE_RETAIL ?= ../shared/datasets/online-retail/online_retail_2010-12-01_2011-09-30.csv.gz
export TAILOR_DATA_DIR ?= $(abspath $(DATA))
# Where `make run` delivers approved prices (the demo's `web` channel is a price feed file
# under data/channel_feeds/; the example's other channels need credentials). Not exported:
# the tests set up channels of their own.
CHANNELS_CONFIG ?= $(abspath channels.example.yaml)

.PHONY: run serve test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install -qq -c requirements.lock -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install -qq -c requirements.lock -e '.[dev]'
	touch $@ $(VENV)/.installed-run

# Each stage leaves a stamp, so re-running `make run` redoes only what its inputs changed.
$(ONLINE_RETAIL):
	@echo "error: the Online Retail export is missing at $(ONLINE_RETAIL);" >&2
	@echo "       pass its path as ONLINE_RETAIL=... (see ../shared/datasets/online-retail)" >&2
	@exit 1

$(DATA)/.imported: $(ONLINE_RETAIL) | $(VENV)/.installed-run
	$(BIN)/tailor data import-online-retail $(ONLINE_RETAIL)
	touch $@

$(DATA)/.features: $(DATA)/.imported $(wildcard features/*.py features/feature_repo/*)
	$(BIN)/tailor features build
	$(BIN)/tailor features apply
	$(BIN)/tailor features materialize
	touch $@

$(DATA)/.trained-recs: $(DATA)/.features $(shell find models training/recs -name "*.py")
	$(BIN)/tailor train recs
	touch $@

# Price suggestions for the review page: the Online Retail shop sells on one channel, `web`,
# whose fees channels.example.csv gives (the export has none).
$(DATA)/.priced: $(DATA)/.imported channels.example.csv $(shell find models/pricing training/pricing -name "*.py")
	$(BIN)/tailor pricing suggest --channels channels.example.csv
	touch $@

run: $(VENV)/.installed-run $(DATA)/.trained-recs $(DATA)/.priced
	$(BIN)/tailor keys demo
	@echo "MLflow runs: $(BIN)/mlflow ui --backend-store-uri sqlite:///$(TAILOR_DATA_DIR)/mlflow/mlflow.db"
	@echo "Serving on http://127.0.0.1:8000 (Ctrl-C stops). Try, from another shell, with the"
	@echo "demo-storefront key printed above (or one from 'tailor keys create --role storefront'):"
	@echo "  curl -H \"Authorization: Bearer \$$KEY\" 'http://127.0.0.1:8000/v1/users/12347/recommendations?k=5'"
	@echo "Price review page: http://127.0.0.1:8000/review (log in with the demo-merchandiser key)"
	@echo "Events posted to /v1/events reach the log and the online features through"
	@echo "'tailor events consume'; approved prices are delivered by 'tailor channels push --loop';"
	@echo "both run beside the service"
	export TAILOR_CHANNELS_CONFIG=$(CHANNELS_CONFIG); \
	$(BIN)/tailor channels push --loop & worker=$$!; \
	$(BIN)/tailor events consume --channels channels.example.csv & consumer=$$!; \
	trap 'kill $$worker $$consumer 2>/dev/null' EXIT INT TERM; \
	$(BIN)/tailor serve --clock model

serve: $(VENV)/.installed-run
	$(BIN)/tailor serve

test: $(VENV)/.installed-dev
	scripts/ensure-services.sh redis postgresql
	scripts/ensure-chromium.sh
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python scripts/export_openapi.py --check
	$(BIN)/pytest

bench: $(VENV)/.installed-dev
	scripts/ensure-services.sh redis postgresql
	$(BIN)/python -m benchmarks.feature_store
	$(BIN)/python -m benchmarks.recs_quality
	$(BIN)/python -m benchmarks.pricing_quality
	$(BIN)/python -m benchmarks.pricing_tests
	$(BIN)/python -m benchmarks.serving
	$(BIN)/python -m benchmarks.ranker_predict
	$(BIN)/python -m benchmarks.review_page
	$(BIN)/python -m benchmarks.delivery
	$(BIN)/python -m benchmarks.ingest

clean:
	rm -rf $(DATA) $(VENV)
