# The README's two commands, and a few helpers.
#
#   make demo   install what is missing, build (Release), run the flag
#               downloads three ways against the built-in server
#   make demo-cpu  the executor.map, CPU-bound, coroutine and process-pool demos
#   make test   install what is missing, build and run the whole suite:
#               plain (-Werror, coroutine tests also under valgrind),
#               then ThreadSanitizer, then ASan+UBSan, then the portable
#               parking and switch (CF_NO_FUTEX: mutex/condvar;
#               CF_CORO_UCONTEXT: ucontext instead of the assembly switch),
#               then everything built with clang (-Werror) and its unit
#               tests run
#   make bench  run the side-by-side benchmarks, rewrite bench/RESULTS.md
#
# Build trees live under build/ (one per configuration).

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CTEST = ctest --output-on-failure --no-tests=error -j$(JOBS)

.PHONY: demo demo-cpu build-release test test-plain test-tsan test-asan test-nofutex test-clang test-fuzz bench clean

demo: build-release
	scripts/demo_flags.sh build/release/apps

# The earlier demos: executor.map, the CPU-bound comparison, coroutines,
# and the CPU-bound work on the process pool.
demo-cpu: build-release
	./build/release/apps/demo_executor_map
	@echo
	./build/release/apps/cpu_bound
	@echo
	./build/release/apps/cpu_asyncio
	@echo
	./build/release/apps/sleepers -n 100000 -s 1
	@echo
	./build/release/apps/cpu_processes
	@echo
	./build/release/apps/primes

build-release:
	@scripts/ensure-deps.sh demo
	cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release \
	      -DCF_BUILD_TESTS=OFF -DCF_BUILD_APPS=ON
	cmake --build build/release -j$(JOBS)

test:
	@scripts/ensure-deps.sh test
	$(MAKE) --no-print-directory test-plain
	$(MAKE) --no-print-directory test-tsan
	$(MAKE) --no-print-directory test-asan
	$(MAKE) --no-print-directory test-nofutex
	$(MAKE) --no-print-directory test-clang
	$(MAKE) --no-print-directory test-fuzz
	@echo "make test: all five configurations and the fuzz run passed"

test-plain:
	cmake -S . -B build/test -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	      -DCF_WERROR=ON -DCF_BUILD_BENCH=ON
	cmake --build build/test -j$(JOBS)
	cd build/test && $(CTEST)

test-tsan:
	cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	      -DCF_TSAN=ON -DCF_TEST_TIMEOUT_MULTIPLIER=4 -DCF_STRESS_DIV=5
	cmake --build build/tsan -j$(JOBS)
	cd build/tsan && $(CTEST)

test-asan:
	cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug \
	      -DCF_ASAN=ON -DCF_UBSAN=ON -DCF_TEST_TIMEOUT_MULTIPLIER=3 -DCF_STRESS_DIV=3
	cmake --build build/asan -j$(JOBS)
	cd build/asan && $(CTEST)

test-nofutex:
	cmake -S . -B build/nofutex -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	      -DCF_WERROR=ON -DCF_NO_FUTEX=ON -DCF_CORO_UCONTEXT=ON \
	      -DCF_BUILD_APPS=OFF -DCF_VALGRIND_TESTS=OFF
	cmake --build build/nofutex -j$(JOBS)
	cd build/nofutex && $(CTEST)

# The library, tests, apps and benchmarks built by clang with -Werror (a
# second compiler's warnings), and the unit tests run.
test-clang:
	CC=clang cmake -S . -B build/clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	      -DCF_WERROR=ON -DCF_BUILD_BENCH=ON -DCF_VALGRIND_TESTS=OFF
	cmake --build build/clang -j$(JOBS)
	cd build/clang && $(CTEST) -L unit

# The flag server's request parser under libFuzzer (with ASan and UBSan)
# for FUZZ_SECONDS, from the checked-in corpus (copied: the tree stays
# as it is). A crash leaves its input in build/fuzz/ and fails the target.
FUZZ_SECONDS ?= 30
test-fuzz:
	@mkdir -p build/fuzz/corpus
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	      -Iapps/flags fuzz/fuzz_http_request.c apps/flags/http_request.c \
	      -o build/fuzz/fuzz_http_request
	cp fuzz/corpus/http_request/* build/fuzz/corpus/
	cd build/fuzz && ./fuzz_http_request -max_total_time=$(FUZZ_SECONDS) \
	      -timeout=5 -max_len=9000 -print_final_stats=1 corpus > fuzz.log 2>&1; \
	      rc=$$?; tail -6 fuzz.log; exit $$rc

bench:
	@scripts/ensure-deps.sh bench
	cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release \
	      -DCF_BUILD_TESTS=OFF -DCF_BUILD_BENCH=ON
	cmake --build build/bench -j$(JOBS)
	bench/run.sh build/bench

clean:
	rm -rf build
