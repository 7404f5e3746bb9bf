# The two commands a new user needs: `make demo` and `make test`. Both set up what is missing.
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint docs bench clean

$(STAMP): requirements.txt pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

demo: $(STAMP)
	$(VENV)/bin/osum-data demo --output manifests/demo

test: $(STAMP)
	$(VENV)/bin/ruff check osum_data training tests bench
	$(VENV)/bin/mkdocs build --strict --quiet
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check osum_data training tests bench

# The docs site (mkdocs.yml): site/index.html. --strict: a broken link or anchor fails the build.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(VENV)/bin/python bench/runner_overhead.py
	$(VENV)/bin/python bench/ray_scaling.py
	$(VENV)/bin/python bench/vs_ray_data.py
	$(VENV)/bin/python bench/train_padding.py
	$(VENV)/bin/python bench/llm_rate.py
	$(VENV)/bin/python bench/llm_embedded.py
	$(VENV)/bin/python bench/augment.py
	$(VENV)/bin/python bench/align_fidelity.py
	$(VENV)/bin/python bench/mix_shar.py
	$(VENV)/bin/python bench/mix_memory.py
	$(VENV)/bin/python bench/longform_memory.py
	$(VENV)/bin/python bench/scaling_estimate.py

clean:
	rm -rf manifests/demo .pytest_cache site
