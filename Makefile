# taskq — build, run and test. `make run` and `make test` are the two
# commands a newcomer needs; both install what is missing first.

SHELL := /bin/bash
SO := modules/taskq.so
CLI := bin/taskq
BIN_DIR := /usr/local/bin
# PHP's own ini scan dir minus an installed taskq.ini, so the fresh build is
# the only taskq loaded even after `make install`.
SCAN_DIR := $(CURDIR)/target/php-conf.d
PHP := PHP_INI_SCAN_DIR=$(SCAN_DIR) php -d extension=$(CURDIR)/$(SO)
# Debian 12 packages: PHP and its headers, libclang for bindgen, PHPUnit,
# the real servers tests start (aiosmtpd, redis-server), and headless
# Chromium with its WebDriver for the status page's browser test.
APT_PACKAGES := php8.2-cli php8.2-dev clang libclang-dev phpunit \
	python3-aiosmtpd procps redis-server chromium chromium-driver
INI_DIR := /etc/php/8.2/mods-available

.PHONY: all deps build run test test-rust test-php install uninstall bench fuzz clean lint
FUZZ_SECONDS ?= 60

all: build

## deps: install missing apt packages (idempotent; needs root or sudo)
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first"; exit 1; }

## build: release extension at modules/taskq.so and the taskq command at bin/taskq
build: deps
	cargo build --release
	cargo build --release -p taskq-cli
	@mkdir -p modules bin
	cp target/release/libtaskq.so $(SO).tmp && mv -f $(SO).tmp $(SO)  # new inode: running servers keep their mapping
	cp target/release/taskq $(CLI).tmp && mv -f $(CLI).tmp $(CLI)
	@rm -rf $(SCAN_DIR) && mkdir -p $(SCAN_DIR)
	@src=$$(php -r 'echo PHP_CONFIG_FILE_SCAN_DIR;'); \
	for f in "$$src"/*.ini; do case "$$f" in *taskq*) ;; *) [ -e "$$f" ] && cp "$$f" $(SCAN_DIR)/ ;; esac; done; true

## run: the example task server in the foreground on 127.0.0.1:9501 (Ctrl-C stops it)
run: build
	$(PHP) php/examples/server.php

## test: every test (cargo test + PHPUnit)
test: build test-rust test-php

## test-rust: every crate's tests; `cargo test -p taskq-engine` alone needs no PHP
test-rust:
	cargo test --release --workspace

test-php:
	TASKQ_EXT=$(CURDIR)/$(SO) $(PHP) /usr/bin/phpunit -c tests/phpunit.xml

lint:
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings

## install: copy into PHP's extension dir (with the IDE stubs next to it) and enable for every SAPI; the taskq command into $(BIN_DIR)
install: build
	install -m 0755 $(CLI) $(BIN_DIR)/taskq
	install -m 0644 $(SO) "$$(php-config --extension-dir)/taskq.so"
	install -m 0644 php/taskq.stub.php "$$(php-config --extension-dir)/taskq.stub.php"
	printf '; priority=30\nextension=taskq.so\n' > $(INI_DIR)/taskq.ini
	phpenmod taskq
	php --ri taskq

## uninstall: undo `make install`: disable for every SAPI, remove the ini and the extension
uninstall:
	-phpdismod taskq
	rm -f $(INI_DIR)/taskq.ini "$$(php-config --extension-dir)/taskq.so" "$$(php-config --extension-dir)/taskq.stub.php" $(BIN_DIR)/taskq
	@! php -m | grep -qx taskq || { echo "taskq is still loaded by php"; exit 1; }

## fuzz: run each cargo-fuzz target for FUZZ_SECONDS (needs the nightly toolchain)
fuzz: deps
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cargo +nightly fuzz run wire --fuzz-dir fuzz -- -max_total_time=$(FUZZ_SECONDS)
	cargo +nightly fuzz run options --fuzz-dir fuzz -- -max_total_time=$(FUZZ_SECONDS)

clean:
	cargo clean
	rm -rf modules bin

## bench: the benchmark suite (issue 6): one table of medians with in-run
## baselines, written to bench/results.json too. BENCH_SCALE=0.1 shrinks every
## count, BENCH_REPS=3 sets the repetitions, BENCH_ONLY=3,4 picks scenarios.
## Installs Postfix for its standalone smtp-sink without starting its daemon,
## and redis-tools for redis-benchmark (scenario 9's XADD baseline).
BENCH_APT_PACKAGES := postfix redis-server redis-tools procps
bench: build
	@missing=""; for p in $(BENCH_APT_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing (postfix only for /usr/sbin/smtp-sink; its daemon stays off)"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections; \
		made_policy=""; \
		if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null && \
			$$SUDO chmod +x /usr/sbin/policy-rc.d && made_policy=1; \
		fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; rc=$$?; \
		[ -n "$$made_policy" ] && $$SUDO rm -f /usr/sbin/policy-rc.d; \
		[ $$rc = 0 ] || exit $$rc; \
	fi; \
	if dpkg -s postfix >/dev/null 2>&1; then \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		if command -v systemctl >/dev/null && systemctl is-enabled --quiet postfix 2>/dev/null; then \
			$$SUDO systemctl disable --now postfix >/dev/null 2>&1 || true; \
		fi; \
		if pgrep -x master >/dev/null 2>&1 && [ -x /usr/sbin/postfix ]; then $$SUDO /usr/sbin/postfix stop >/dev/null 2>&1 || true; fi; \
	fi
	bench/run.sh
