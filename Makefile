# handwatch: `make demo` transcribes sample photos with the CPU engine, says which need review, then runs the
# daemon on the demo folder and serves the review page on 127.0.0.1:8765 until Ctrl-C; `make test` runs the tests.
# Both set everything up on a fresh Debian machine first (apt packages, a virtual environment).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu poppler-utils fonts-humor-sans fonts-dkg-handwriting fonts-dejavu-core chromium \
	systemd libseccomp2 procps passwd util-linux

.PHONY: setup system-deps test test-openai-oldest docs demo bench clean

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --upgrade --upgrade-strategy eager -e '.[test]'
	$(PY) -m pip list --format=freeze > $(VENV)/versions.txt
	touch $@

# The oldest openai client the package allows (pyproject's lower bound), beside the newest: the API moved
# between them (how an error body reaches the exception), so the engine's server tests run with both.
OPENAI_OLDEST := $(shell sed -n 's/.*"openai>=\([0-9.]*\)".*/\1/p' pyproject.toml)
OLDEST_DIR    := $(VENV)/openai-oldest
OLDEST_TESTS  := tests/transcribe/test_dialects.py tests/transcribe/test_vlm.py tests/transcribe/test_engine_replies.py tests/transcribe/test_gate.py

$(OLDEST_DIR)/.installed: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q --no-deps --upgrade --target $(OLDEST_DIR) openai==$(OPENAI_OLDEST) distro tqdm
	touch $@

setup: system-deps $(VENV)/.installed

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory test-openai-oldest

test-openai-oldest: setup $(OLDEST_DIR)/.installed
	@PYTHONPATH=$(OLDEST_DIR) $(PY) -c "import openai; print('the engine with openai', openai.__version__, 'from', openai.__file__)"
	PYTHONPATH=$(OLDEST_DIR) $(PY) -m pytest -q -p no:cacheprovider $(OLDEST_TESTS)

# The docs site (docs/, mkdocs.yml) into site/; --strict fails on a broken link, a missing anchor or a page left out.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

demo: setup
	rm -rf demo && mkdir -p demo
	$(PY) -m bench.gen demo demo/inbox
	cp config/demo.yaml demo/config.yaml
	@echo "Transcribing the sample photos with the tesseract engine (CPU, no GPU needed):"
	$(VENV)/bin/handwatch -c demo/config.yaml scan
	@echo "Now watching demo/inbox: drop more images in and their Markdown appears beside them."
	@echo "Review page: http://127.0.0.1:8765/ (what needs review comes first; open a file to correct it). Ctrl-C stops and shows the status."
	@trap : INT; $(VENV)/bin/handwatch -c demo/config.yaml run; echo; $(VENV)/bin/handwatch -c demo/config.yaml status

bench: setup
	$(PY) -m bench.preprocess
	$(PY) -m bench.spawn
	$(PY) -m bench.legibility
	$(PY) -m bench.samepixels
	$(PY) -m bench.search
	$(PY) -m bench.throughput
	$(PY) -m bench.doubt
	$(PY) -m pip install -q -e '.[bench]'  # scikit-image's photos: bench.gate only
	$(PY) -m bench.gate

clean:
	rm -rf $(VENV) demo site *.egg-info .pytest_cache
