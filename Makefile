# Sendense — build, demo and test entry points. See README.md.

CARGO ?= cargo
# Debian packages the tests and the demo need (installed when missing; needs root or sudo).
DEB_PACKAGES := qemu-utils nbdkit libnbd-bin util-linux fdisk ntfs-3g xfsprogs python3 openssh-server openssh-client iproute2 golang-go golang-github-vmware-govmomi-dev autoconf automake libtool make gcc radosgw ceph-mon ceph-osd ceph-common uuid-runtime curl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BENCH_SIZE ?= 8G
BENCH_RUNS ?= 3

BENCH_PACKAGES := time bc python3-boto3

.PHONY: all build demo test deps bench fuzz lint docs clean

all: build

build:
	$(CARGO) build --workspace --release

## Install the system packages the tests and the demo use, when missing. Debian's
## qemu-system-x86 needs qemu-utils of its own version: both are installed together, so
## qemu-img, qemu-nbd and the live VMs always come from the same QEMU.
deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@if ! dpkg -s qemu-system-x86 >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq; \
		ver=$$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $$2}'); \
		echo "installing: qemu-system-x86 and qemu-utils $$ver"; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			--allow-downgrades qemu-system-x86 "qemu-utils=$$ver"; \
	fi

## Build release binaries and run the main job end to end on the embedded default.
demo: deps build
	bash scripts/demo.sh target/release

## Formatting, lints and the whole test suite.
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	bash scripts/cargo-test.sh

## Benchmarks against the reference tools (nbdcopy), in the same run. Not part of make test.
bench: deps
	@missing=""; \
	for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi
	$(CARGO) build --release --workspace
	bash bench/copy.sh $(BENCH_SIZE) $(BENCH_RUNS)
	bash bench/backup.sh 4G $(BENCH_RUNS)
	bash bench/restore.sh 4G $(BENCH_RUNS)
	bash bench/retention.sh 4G $(BENCH_RUNS) 500
	bash bench/schedule.sh $(BENCH_RUNS)
	bash bench/repo-copy.sh 4G $(BENCH_RUNS)
	bash bench/s3.sh 4G $(BENCH_RUNS)
	bash bench/remote-node.sh 4G $(BENCH_RUNS) 20

## Fuzz the NBD reply parser (FUZZ_SECONDS, default 300). Needs cargo-fuzz.
FUZZ_SECONDS ?= 300
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run nbd_replies -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096

## Regenerate man/ and completions/ from the clap definitions.
docs:
	SENDENSE_UPDATE_DOCS=1 $(CARGO) test -p sendense-cli --test generated_docs

clean:
	$(CARGO) clean
