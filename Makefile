# alluxiofs developer entry points.
#
#   make test   build once (dev profile), run the Rust tests and the pytest suite
#   make demo   release build, then the end-to-end demo (examples/demo.py)
#   make lint   rustfmt, clippy, rustdoc (library crates), ruff
#   make wheel  the release wheel users pip install, in dist/
#
# Both `make test` and `make demo` work on a fresh Debian 12 machine with only
# the package registries reachable: missing system packages come from apt, the
# Python tools from PyPI into .venv, Garage (the S3 server of the tests) from
# crates.io into ~/.cache/alluxiofs/tools.
#
# Variables:
#   S3=moto      skip installing Garage and run the tests against moto_server
#   PYTEST_ARGS  extra arguments for pytest (e.g. PYTEST_ARGS="-k ring -x")

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# rustup installs cargo into ~/.cargo/bin, which a non-login shell may not have.
export PATH := $(HOME)/.cargo/bin:$(PATH)
# maturin develop and cargo test share one build in target/.
export CARGO_TARGET_DIR := $(CURDIR)/target

VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.requirements-dev.stamp
TOOLS := $(HOME)/.cache/alluxiofs/tools
S3 ?=
PYTEST_ARGS ?=

ifeq ($(shell id -u),0)
SUDO :=
else
SUDO := sudo
endif

.PHONY: help system-deps venv garage compat-venv compat-venv-1.1 develop develop-release wheel test lint demo clean bench-placement

help:
	@echo "make test | make demo | make lint | make wheel | make venv | make develop | make garage | make clean"
	@echo "make fuzz [FUZZ_SECONDS=60] [FUZZ_REQUESTS=100000]"
	@echo "make bench | make bench-quick | make bench-scale | make bench-fuse | make bench-s3 | make bench-eviction | make bench-placement"

## system-deps: apt packages the build and the tests need (installed only when missing)
system-deps:
	@missing=""; \
	command -v protoc >/dev/null 2>&1 || missing="$$missing protobuf-compiler"; \
	test -f /usr/include/google/protobuf/descriptor.proto || missing="$$missing libprotobuf-dev"; \
	command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	command -v etcdctl >/dev/null 2>&1 || missing="$$missing etcd-client"; \
	command -v cc >/dev/null 2>&1 || missing="$$missing build-essential"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	if ! command -v python3 >/dev/null 2>&1; then missing="$$missing python3 python3-venv"; \
	elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
		echo ">>> installing system packages:$$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi; \
	command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found (install Rust >= 1.88 with rustup)" >&2; exit 1; }

## venv: .venv with requirements-dev.txt (skipped while requirements-dev.txt is unchanged)
venv: $(VENV_STAMP)

$(VENV_STAMP): requirements-dev.txt
	@echo ">>> creating $(VENV) from requirements-dev.txt"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

## garage: the Garage S3 server and the TCP_NODELAY shim, once, into ~/.cache/alluxiofs/tools
garage:
	scripts/install-garage.sh

## compat-venv: the alluxiofs client from PyPI (1.0.3) in its own venv, for the compatibility
## tests; cached in ~/.cache/alluxiofs (its etcd3 dependency pins protobuf 3.20)
COMPAT_VENV := $(HOME)/.cache/alluxiofs/compat-1.0.3
compat-venv: $(COMPAT_VENV)/.installed

$(COMPAT_VENV)/.installed:
	@echo ">>> installing the PyPI alluxiofs 1.0.3 client into $(COMPAT_VENV)"
	python3 -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/pip install -q --disable-pip-version-check alluxiofs==1.0.3
	touch $@

## compat-venv-1.1: the alluxiofs client from PyPI (1.1.17) in its own venv, for the test of
## our workers' S3 endpoint (tests/test_compat_pypi_s3.py); cached in ~/.cache/alluxiofs
## (its pycurl comes as a manylinux wheel)
COMPAT_VENV_1_1 := $(HOME)/.cache/alluxiofs/compat-1.1.17
compat-venv-1.1: $(COMPAT_VENV_1_1)/.installed

$(COMPAT_VENV_1_1)/.installed:
	@echo ">>> installing the PyPI alluxiofs 1.1.17 client into $(COMPAT_VENV_1_1)"
	python3 -m venv $(COMPAT_VENV_1_1)
	$(COMPAT_VENV_1_1)/bin/pip install -q --disable-pip-version-check alluxiofs==1.1.17
	touch $@

## develop: build the extension (dev profile) into .venv
develop: system-deps venv
	@echo ">>> $$(date +%T) maturin develop (dev profile, target/)"
	VIRTUAL_ENV=$(VENV) $(VENV)/bin/maturin develop --quiet

develop-release: system-deps venv
	@echo ">>> maturin develop --release"
	VIRTUAL_ENV=$(VENV) $(VENV)/bin/maturin develop --release --quiet

## wheel: the release wheel (what `pip install` gives users) in dist/.
## WHEEL_COMPATIBILITY is the manylinux tag it claims; maturin audits the
## extension's versioned glibc symbols against it and fails rather than tag a
## wheel that would not load. Linked against Debian 12's glibc 2.36, the
## extension needs GLIBC_2.34 (pthread_*, dlsym moved into libc.so.6 in 2.34;
## stat64 2.33), so manylinux_2_34 is the oldest tag maturin accepts here
## (manylinux_2_28 is refused): glibc >= 2.34, e.g. Debian 12, Ubuntu 22.04,
## RHEL 9. An older tag needs a build against an older glibc (a manylinux
## container or maturin --zig). The embedded worker is in the same extension
## (`alluxiofs worker`), so that one .so is all the wheel has to run.
## tests/test_wheel.py checks a dev-profile wheel with this tag on every
## `make test` (reusing make develop's build, no release build) from a fresh
## venv with no Rust and no protoc.
WHEEL_COMPATIBILITY := manylinux_2_34
wheel: system-deps venv
	@echo ">>> $$(date +%T) maturin build --release ($(WHEEL_COMPATIBILITY)) into dist/"
	$(VENV)/bin/maturin build --release --quiet --compatibility $(WHEEL_COMPATIBILITY) --out dist
	@ls -l dist/alluxiofs-*.whl

ifeq ($(S3),moto)
TEST_S3_DEPS :=
TEST_ENV := ALLUXIOFS_TEST_S3=moto
else
TEST_S3_DEPS := garage
TEST_ENV :=
endif

## test: everything CI runs
test: system-deps venv $(TEST_S3_DEPS) compat-venv compat-venv-1.1 develop
	@echo ">>> $$(date +%T) cargo test (alluxiofs-core, alluxiofs-worker, alluxiofs-fuse, alluxiofs-csi, alluxiofs-delay-proxy)"
	PATH="$(abspath $(VENV))/bin:$$PATH" cargo test -p alluxiofs-core -p alluxiofs-worker -p alluxiofs-fuse -p alluxiofs-csi -p alluxiofs-delay-proxy
	@echo ">>> $$(date +%T) pytest"
	$(TEST_ENV) $(PY) -m pytest tests -q --timeout 300 $(PYTEST_ARGS)
	@echo ">>> $$(date +%T) make test: all passed"

## bench-placement: load balance and key movement of each placement (3, 10, 100 workers,
## 1 M paths; release build, about half a minute); the table in docs/placement.md comes from it
bench-placement:
	cargo bench -p alluxiofs-core --bench placement

## lint: formatting and static checks
lint: venv
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p alluxiofs-core -p alluxiofs-worker -p alluxiofs-fuse -p alluxiofs-delay-proxy
	$(VENV)/bin/ruff check $(wildcard python tests examples benches scripts)

## fuzz: every cargo-fuzz target (fuzz/, nightly) for FUZZ_SECONDS each, then the HTTP
## fuzzer with FUZZ_REQUESTS requests at a live worker (docs/reliability.md). New inputs go
## to fuzz/target/work/<target> (the committed seeds in fuzz/corpus stay as they are);
## a crash stops the run and leaves its input in fuzz/artifacts/<target>.
FUZZ_SECONDS ?= 60
FUZZ_REQUESTS ?= 100000
FUZZ_TARGETS := url query page_header parquet_footer etcd_record s3_request
CARGO_FUZZ_VERSION := 0.13.2

.PHONY: fuzz fuzz-tools
fuzz-tools:
	@rustup toolchain list | grep -q '^nightly' || { echo ">>> installing the nightly toolchain (cargo fuzz needs it)"; rustup toolchain install nightly --profile minimal; }
	@cargo fuzz --version 2>/dev/null | grep -q '$(CARGO_FUZZ_VERSION)' || { echo ">>> installing cargo-fuzz $(CARGO_FUZZ_VERSION)"; cargo install cargo-fuzz@$(CARGO_FUZZ_VERSION) --locked; }

fuzz: fuzz-tools develop
	@echo ">>> $$(date +%T) cargo fuzz build (nightly, release, fuzz/target)"
	cd fuzz && CARGO_TARGET_DIR=$(CURDIR)/fuzz/target cargo +nightly fuzz build -O
	@for t in $(FUZZ_TARGETS); do \
		echo ">>> $$(date +%T) cargo fuzz run $$t for $(FUZZ_SECONDS) s"; \
		mkdir -p fuzz/target/work/$$t; \
		log=fuzz/target/work/$$t.log; \
		if (cd fuzz && CARGO_TARGET_DIR=$(CURDIR)/fuzz/target cargo +nightly fuzz run -O $$t target/work/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1) > $$log 2>&1; \
		then grep -E '^Done [0-9]+ runs|stat::new_units_added' $$log; \
		else tail -40 $$log; echo "error: $$t found a crash (its input is in fuzz/artifacts/$$t, the log in $$log)" >&2; exit 1; fi; \
	done
	@echo ">>> $$(date +%T) HTTP fuzzer: $(FUZZ_REQUESTS) requests"
	$(TEST_ENV) ALLUXIOFS_FUZZ_REQUESTS=$(FUZZ_REQUESTS) ALLUXIOFS_FUZZ_SEED=random $(PY) -m pytest tests/test_http_fuzz.py -q -s --timeout 3600 -k 'test_http_fuzz'
	@echo ">>> $$(date +%T) make fuzz: no crash"

## demo: release build, then the demo against a local S3 server
demo: system-deps venv develop-release
	$(PY) examples/demo.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .demo

## bench, bench-quick: alluxiofs against s3fs, fsspec caches, obstore and the PyPI client,
## on an S3 server behind a shaped veth (tc tbf) and a delaying proxy (benches/README.md).
## A release wheel in its own .bench-venv (make develop swaps .venv's build at any time).
## bench: ~35 min with Ray Data (benches/ray, --ray), writes benches/results/<date>-<host>.json,
## docs/benchmarks.md and docs/img/bench-*.png; bench-quick: ~4 min, no Ray, writes a -quick
## JSON and prints the table.
BENCH_VENV := $(CURDIR)/.bench-venv
BENCH_PYPI_VENV := $(HOME)/.cache/alluxiofs/bench-pypi-1.0.3
BENCH_ARGS ?=

.PHONY: bench bench-quick bench-env bench-wheel bench-pypi-venv bench-scale

bench-pypi-venv: $(BENCH_PYPI_VENV)/.installed

$(BENCH_PYPI_VENV)/.installed:
	python3 -m venv $(BENCH_PYPI_VENV)
	$(BENCH_PYPI_VENV)/bin/pip install -q --disable-pip-version-check alluxiofs==1.0.3 pyarrow==26.0.1
	touch $@

## bench-wheel: the release wheel of alluxiofs installed in .bench-venv with requirements-bench.txt
bench-wheel: system-deps venv
	@echo ">>> $$(date +%T) release build: the alluxiofs wheel (target/)"
	$(VENV)/bin/maturin build --release --quiet -o target/bench-wheels
	test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-bench.txt
	$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps target/bench-wheels/alluxiofs-*.whl

bench-env: bench-wheel garage bench-pypi-venv
	@echo ">>> $$(date +%T) release build: the delay proxy (target/)"
	cargo build --release -p alluxiofs-delay-proxy

bench: bench-env fuse-peers
	$(BENCH_VENV)/bin/python benches/suite.py --scale 0.5 --repeat 3 --ray $(BENCH_ARGS)
	$(BENCH_VENV)/bin/python benches/fuse.py
	$(BENCH_VENV)/bin/python benches/s3_api.py

bench-quick: bench-env
	$(BENCH_VENV)/bin/python benches/suite.py --quick --scale 0.02 --repeat 2 --no-doc $(BENCH_ARGS)

## bench-scale: one release-build worker filled with 1 M, then 10 M files of 2 KiB (file:// UFS):
## resident bytes per page after a restart, disk bytes per cached byte, index bytes, cold and
## warm files/s, p99, time to first hit and bytes read at startup (benches/scale.py; a step the
## disk cannot hold is skipped; where a file per name does not fit, the names are hard links to
## 4,096 files). Prints the table, writes benches/results/scale-<date>.json. Not part of make
## test or make bench; e.g. BENCH_ARGS="--files 100000,10000000 --ufs links --max-minutes 90"
bench-scale: bench-wheel
	$(BENCH_VENV)/bin/python benches/scale.py $(BENCH_ARGS)

## fuse-peers: the FUSE filesystems benches/fuse.py measures against (Debian packages s3fs,
## rclone and fuse3: rclone mounts through fusermount3), installed when missing
.PHONY: fuse-peers
fuse-peers:
	@missing=""; \
	command -v s3fs >/dev/null 2>&1 || missing="$$missing s3fs"; \
	command -v rclone >/dev/null 2>&1 || missing="$$missing rclone"; \
	command -v fusermount3 >/dev/null 2>&1 || missing="$$missing fuse3"; \
	if [ -n "$$missing" ]; then \
		echo ">>> installing the FUSE peers:$$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

## bench-fuse: alluxiofs mount against s3fs-fuse, rclone mount (--vfs-cache-mode full) and the
## raw local read over one Garage bucket: small files (16 threads), sequential 8 MiB reads,
## 4 KiB preads, pq.read_table by path, ls -lR (benches/fuse.py; also the last step of make
## bench)
.PHONY: bench-fuse
bench-fuse: bench-wheel garage fuse-peers
	$(BENCH_VENV)/bin/python benches/fuse.py $(BENCH_ARGS)

## bench-s3: the worker's S3 endpoint on the suite's remote UFS (Garage behind the shaped veth
## and the delay proxy): Parquet 2 of 20 columns by PyArrow's S3 through the endpoint (warm)
## against our fsspec path (warm) and PyArrow's S3 straight to the UFS; small files by boto3
## and obstore, endpoint against UFS (benches/s3_api.py, ~2.5 min; also part of make bench);
## writes benches/results/s3-api-<date>.json
.PHONY: bench-s3
bench-s3: bench-env
	$(BENCH_VENV)/bin/python benches/s3_api.py $(BENCH_ARGS)

## bench-tls: the same warm reads from one worker over HTTP and over HTTPS (small files
## with 16 threads, a large file in 8 MiB ranges): the ratio is what TLS costs a reader
## (benches/tls.py, ~1 min; a release build: make develop-release first)
.PHONY: bench-tls
bench-tls: venv
	$(PY) benches/tls.py $(BENCH_ARGS)

## bench-eviction: hit ratio per epoch of each eviction policy (LRU, S3-FIFO), a 64 MiB
## cache and 1.5x that of data, 4 epochs in sequential and shuffled order (~15 s);
## the table in docs/eviction.md comes from it
.PHONY: bench-eviction
bench-eviction: venv develop
	$(PY) benches/eviction.py $(BENCH_ARGS)

## test-extras: the optional suite (tests/extras, PyTorch DataLoader with forked workers).
## Installs torch into .venv first (PyPI has no CPU-only build: ~5 GB, about a minute);
## kept out of `make test`, which checks the same fork pattern with multiprocessing
.PHONY: test-extras
TORCH_VERSION ?= 2.15.0
test-extras: system-deps venv $(TEST_S3_DEPS) develop
	@$(PY) -c 'import torch' 2>/dev/null || { echo ">>> installing torch $(TORCH_VERSION) into .venv"; \
		$(PY) -m pip install -q --disable-pip-version-check torch==$(TORCH_VERSION); }
	ALLUXIOFS_EXTRAS=1 $(TEST_ENV) $(PY) -m pytest tests/extras -q --timeout 300 $(PYTEST_ARGS)
	$(PY) examples/torch_dataset.py --files 256 --epochs 2

## soak: the soak under faults (scripts/soak.py, docs/reliability.md): SOAK_READERS readers
## (threads over 8 processes) over 3 workers found through etcd with replicas=2, for
## SOAK_SECONDS, while a worker is SIGKILLed and restarted every minute, etcd restarts once, the
## UFS answers 503 SlowDown / ServiceUnavailable and resets or cuts connections (the delay
## proxy), and one cache directory sits on a tmpfs smaller than its capacity (needs root).
## Prints the report (p50/p99 per read kind and phase, RSS and descriptors, capacity, ENOSPC),
## writes it as JSON to SOAK_JSON; exits 1 when a check fails. The short version is
## tests/test_soak.py, part of make test.
SOAK_SECONDS ?= 600
SOAK_READERS ?= 64
SOAK_JSON ?= $(CURDIR)/target/soak-report.json
.PHONY: soak
soak: system-deps venv $(TEST_S3_DEPS) develop
	@echo ">>> $$(date +%T) cargo build -p alluxiofs-delay-proxy"
	cargo build -q -p alluxiofs-delay-proxy
	@echo ">>> $$(date +%T) soak: $(SOAK_READERS) readers, $(SOAK_SECONDS) s"
	$(TEST_ENV) ALLUXIOFS_TEST_DELAY_PROXY_BIN=$(CARGO_TARGET_DIR)/debug/alluxiofs-delay-proxy \
		$(PY) scripts/soak.py --seconds $(SOAK_SECONDS) --readers $(SOAK_READERS) --json $(SOAK_JSON)
