# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install install-test postgresql demo demo-headless test dashboard screenshots bench-rerender clean

$(VENV)/.installed: requirements.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -r requirements-nodeps.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install -r requirements-test.txt
	touch $@

/usr/bin/chromium:       # Debian's Chromium for the browser tests (apt; root or passwordless sudo)
	scripts/install-chromium.sh

postgresql:              # Debian's PostgreSQL server for the store's tests (apt when missing; root or passwordless sudo)
	scripts/install-postgresql.sh

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install            ## synthetic data -> train + evaluate every variant (quick) -> leaderboard -> dashboard
	$(PY) -m engine demo

demo-headless: install   ## the same, without starting the dashboard
	$(PY) -m engine demo --no-dashboard

test: install-test /usr/bin/chromium postgresql   ## the whole test suite (SQLite and PostgreSQL stores)
	$(PY) -m pytest

dashboard: install
	$(PY) -m streamlit run dashboard/app.py

screenshots: install-test /usr/bin/chromium   ## every dashboard page, in headless Chromium -> outputs/screenshots
	$(PY) scripts/screenshots.py outputs/screenshots --full

bench-rerender: install-test   ## Compare page re-draw time at 2048x1024 with two models
	$(PY) scripts/bench_rerender.py

clean:                   ## what the demo made (synthetic scenes, its checkpoints, a store of only demo runs); lists what it keeps
	@if [ -x $(PY) ]; then $(PY) -m engine clean; else echo "no $(VENV): nothing the demo made"; fi
	rm -rf .pytest_cache
