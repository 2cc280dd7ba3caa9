"""Python's ProcessPoolExecutor on the process-pool benchmark (issue 9):
the sum of the prime factors of 1..39999 as a map, unchunked and with
chunksize=1000 (the concurrent.futures notebook), the same map on
multiprocessing.Pool (its own default chunksize), the submit/result round
trip to an idle worker, and the recovery from a killed worker: Python's
pool is broken then, so recovering is a new pool and its first result.
RESULT lines as bench_procpool.c prints.
    bench_procpool.py RUNS WORKERS ROUNDS"""
import math
import multiprocessing
import os
import signal
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool


def factors(n):
    def candidates():
        yield 2
        yield from range(3, int(math.floor(math.sqrt(n))) + 1, 2)

    def gen(n):
        for i in candidates():
            while n % i == 0:
                yield i
                n //= i
                if n == 1:
                    return
        yield n
    return tuple(gen(n))


def sum_factors(n):
    return sum(factors(n))


def nothing():
    return 1


def report(impl, bench, workers, unit, runs):
    med = statistics.median(runs)
    print(f"RESULT impl={impl} bench={bench} n=39999 workers={workers} "
          f"unit={unit} median={med:.4f} runs={','.join(f'{r:.4f}' for r in runs)}",
          flush=True)


def main():
    runs, workers, rounds = (int(a) for a in sys.argv[1:4])
    with ProcessPoolExecutor(workers) as ex:
        list(ex.map(nothing_arg, range(workers * 4)))  # start the workers
        for chunksize, impl, nruns in ((1, "python_process", 1),
                                       (1000, "python_process_chunked", runs)):
            times = []
            for _ in range(nruns):
                t0 = time.perf_counter()
                total = sum(ex.map(sum_factors, range(1, 40000), chunksize=chunksize))
                times.append(time.perf_counter() - t0)
                assert total == 139614694, total
            report(impl, "pp_factors", workers, "s", times)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            for _ in range(rounds):
                ex.submit(nothing).result()
            times.append((time.perf_counter() - t0) / rounds * 1e6)
        report("python_process", "pp_roundtrip", 1, "us", times)
    with multiprocessing.Pool(workers) as pool:
        pool.map(nothing_arg, range(workers * 4))
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            total = sum(pool.map(sum_factors, range(1, 40000)))
            times.append(time.perf_counter() - t0)
            assert total == 139614694, total
        report("python_mp_pool", "pp_factors", workers, "s", times)
    times = []
    ex = ProcessPoolExecutor(1)
    ex.submit(nothing).result()
    for _ in range(runs):
        t0 = time.perf_counter()
        try:
            ex.submit(crash).result()
            raise AssertionError("the worker survived")
        except BrokenProcessPool:
            pass
        ex.shutdown()
        ex = ProcessPoolExecutor(1)
        ex.submit(nothing).result()
        times.append((time.perf_counter() - t0) * 1e3)
    ex.shutdown()
    report("python_process", "pp_recovery", 1, "ms", times)


def nothing_arg(_):
    return 1


def crash():
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
