# The two commands of the README. Everything else is CMake/ctest.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
# Seconds per fuzz target: 60 in `make test` (the smoke run), more with `make fuzz FUZZ_SECONDS=600`.
FUZZ_SECONDS ?= 60
# The fuzz (clang) and ASan (gcc) builds compile at -O1 with line tables only (clang's
# -gline-tables-only is gcc's -g1): reports name source lines, and the build stays short.
FUZZ_FLAGS = -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DSEGICL_BUILD_BENCH=OFF
ASAN_FLAGS = -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DSEGICL_BUILD_BENCH=OFF
# UB is an error in test-asan, not a log line; the suppression files say why each entry is there.
SANITIZER_ENV = UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=$(CURDIR)/tests/sanitizer/ubsan.supp \
  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizer/lsan.supp

.PHONY: deps build noitk test test-asan fuzz-build fuzz test-unit demo clean

deps:
	bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DSEGICL_NOITK_BINARY=$(abspath $(BUILD))-noitk/bin/segicl $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

# The GPU machine's configuration (scripts/gpu-build.sh: no ITK, header dependencies from the
# travelling folder of scripts/gpu-deps.sh) built against Debian's CPU LibTorch; the integration
# test NoItkBuild.* checks that it trains bit-identically to the main build.
noitk: deps
	test -d $(BUILD)-noitk-deps || bash scripts/gpu-deps.sh $(BUILD)-noitk-deps
	SEGICL_DEPS_DIR=$(abspath $(BUILD))-noitk-deps SEGICL_CMAKE_FLAGS=-DSEGICL_FORCE_DEPS_DIR=ON \
	  bash scripts/gpu-build.sh $(BUILD)-noitk

test: build noitk fuzz-build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900
	cd $(BUILD)-fuzz && ctest --output-on-failure -j $(JOBS) -L fuzz

# libFuzzer targets (fuzz/README.md), built with clang, ASan and UBSan in $(BUILD)-fuzz.
fuzz-build: deps
	CC=clang CXX=clang++ cmake -S . -B $(BUILD)-fuzz -G Ninja $(FUZZ_FLAGS) -DSEGICL_BUILD_TESTS=OFF \
	  -DSEGICL_BUILD_FUZZ=ON -DSEGICL_FUZZ_SMOKE=ON -DSEGICL_FUZZ_SMOKE_SECONDS=$(FUZZ_SECONDS) $(CMAKE_FLAGS)
	cmake --build $(BUILD)-fuzz -j $(JOBS) --target segicl_fuzz

# Every fuzz target for FUZZ_SECONDS with a random seed, JOBS at a time; what they learn stays in
# $(BUILD)-fuzz/fuzz-corpus. (make test's smoke run is the reproducible one: fixed seed and count.)
fuzz: fuzz-build
	cmake -S . -B $(BUILD)-fuzz -DSEGICL_FUZZ_SMOKE=OFF
	cd $(BUILD)-fuzz && ctest --output-on-failure -j $(JOBS) -L fuzz

# The unit tests built with ASan + UBSan (gcc) in $(BUILD)-asan. Not part of `make test` (it would
# add about 20 min to CI; reports/RELIABILITY.md has the times): run it before each landing.
# `_NOT_BUILT` entries are the integration executables it does not build.
test-asan: deps
	cmake -S . -B $(BUILD)-asan -G Ninja $(ASAN_FLAGS) -DSEGICL_SANITIZE=ON $(CMAKE_FLAGS)
	cmake --build $(BUILD)-asan -j $(JOBS) --target segicl_unit_tests
	cd $(BUILD)-asan && $(SANITIZER_ENV) ctest --output-on-failure -j $(JOBS) -LE integration -E '_NOT_BUILT$$'

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -LE integration

demo: build
	bash scripts/demo.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD)-noitk $(BUILD)-noitk-deps $(BUILD)-fuzz $(BUILD)-asan
