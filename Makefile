# gridtools: nothing to build; these targets test, lint, benchmark and install.
PYTHON  ?= python3
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DESTDIR ?=
PYTEST_ARGS ?= -q

MAN1 := $(wildcard man/*.1)
MAN7 := $(wildcard man/*.7)
MAN8 := $(wildcard man/*.8)

.PHONY: test test-slow test-deps lint bench install install-man

# make test leaves out the tests marked slow (a Slurm cluster started and
# stopped, minutes of scheduler time); make test-slow runs only those, and
# .ci/run runs both.  pytest exits 5 when a marker selects nothing.
test: test-deps
	$(PYTHON) -m pytest $(PYTEST_ARGS) -m 'not slow'

test-slow: test-deps
	$(PYTHON) -m pytest $(PYTEST_ARGS) -m slow || [ $$? -eq 5 ]

# The tests need pytest, hypothesis and prometheus_client's parser, compare against GNU parallel and
# mandoc, and run gridd under sshd, inetd, tcpserver, systemd's tools and
# Slurm; install what is missing.  A test whose peer is still missing skips
# and says why.
test-deps:
	@$(PYTHON) -c 'import pytest, hypothesis, prometheus_client' 2>/dev/null || \
	  $(PYTHON) -m pip install -q pytest hypothesis prometheus_client
	@tests/install-peers parallel:parallel mandoc:mandoc openssh-server:/usr/sbin/sshd \
	  openbsd-inetd:/usr/sbin/inetd ucspi-tcp:tcpserver systemd:systemd-socket-activate \
	  slurm-wlm:/usr/sbin/slurmctld munge:/usr/sbin/munged chromium:/usr/bin/chromium \
	  chromium-driver:/usr/bin/chromedriver tmux:tmux

lint:
	@tests/install-peers mandoc:mandoc
	@for f in man/*.[1-8]; do mandoc -T lint -W warning $$f || exit 1; done
	@echo "man pages: lint clean"

bench:
	$(PYTHON) bench/run.py

install: install-man
	$(PYTHON) -m pip install --prefix "$(DESTDIR)$(PREFIX)" --no-deps .

install-man:
	@for f in $(MAN1); do install -Dm644 $$f $(DESTDIR)$(MANDIR)/man1/$$(basename $$f); done
	@for f in $(MAN7); do install -Dm644 $$f $(DESTDIR)$(MANDIR)/man7/$$(basename $$f); done
	@for f in $(MAN8); do install -Dm644 $$f $(DESTDIR)$(MANDIR)/man8/$$(basename $$f); done

# Kill workers and hubs with SIGKILL while jobs flow, then count missing and
# doubled results (a few minutes; not part of `make test`).
.PHONY: chaos
chaos:
	$(PYTHON) tests/chaos.py
