# Two commands from a fresh clone; each creates .venv and installs the pinned dependencies first.
#   make demo   the whole flow offline on the bundled tiny model and corpus
#   make test   the test suite
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test install browser
install: $(STAMP)

# The review page's browser tests drive the system chromium (Playwright's own download cannot work offline).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(VENV)/bin/dialogtune demo

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest
