"""bench_python - Python's ThreadPoolExecutor, measured like bench_cf.

Run with Debian's /usr/bin/python3. Arguments: [N_TASKS] [N_ROUNDS] [RUNS]
[WORKERS]. Prints RESULT lines in bench.h's format.
"""
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def nop():
    return None


def square(x):
    return x * x


def sum_of_factors(n):
    """The seeds' factors(n), summed (the concurrent.futures notebook)."""
    total, left, limit = 0, n, int(n ** 0.5)
    i = 2
    while i <= limit:
        while left % i == 0:
            total += i
            left //= i
            if left == 1:
                return total
        i = 3 if i == 2 else i + 2
    return total + left


def report(bench, n, workers, unit, values, impl="python"):
    med = statistics.median(values)
    runs = ",".join(f"{v:.3f}" for v in values)
    print(f"RESULT impl={impl} bench={bench} n={n} workers={workers} "
          f"median={med:.3f} unit={unit} runs={runs}", flush=True)


def main():
    args = [int(a) for a in sys.argv[1:]]
    n_tasks, n_rounds, runs, workers = (args + [200000, 20000, 3, 2][len(args):])[:4]
    values = []
    for _ in range(runs):
        with ThreadPoolExecutor(max_workers=workers) as ex:
            t0 = time.perf_counter()
            fs = [ex.submit(nop) for _ in range(n_tasks)]
            for f in fs:
                f.result()
            values.append((time.perf_counter() - t0) / n_tasks * 1e9)
            del fs
    report("throughput", n_tasks, workers, "ns/task", values)
    values = []
    for _ in range(runs):
        with ThreadPoolExecutor(max_workers=workers) as ex:
            ex.submit(nop).result()
            t0 = time.perf_counter()
            for _ in range(n_rounds):
                ex.submit(nop).result()
            values.append((time.perf_counter() - t0) / n_rounds * 1e6)
    report("latency", n_rounds, workers, "us/roundtrip", values)
    for bench, chunk in (("map", 1), ("map_chunked", 1000)):
        values = []
        for _ in range(runs):
            with ThreadPoolExecutor(max_workers=workers) as ex:
                t0 = time.perf_counter()
                # chunksize is accepted but ignored by ThreadPoolExecutor.
                total = sum(ex.map(square, range(n_tasks), chunksize=chunk))
                values.append((time.perf_counter() - t0) / n_tasks * 1e9)
                assert total == sum(x * x for x in range(n_tasks))
        report(bench, n_tasks, workers, "ns/item", values)
    # The seeds' factors of 1..39999: sequential and with map (unchunked;
    # chunksize is ignored by threads).
    seq, par = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        total = sum(sum_of_factors(n) for n in range(1, 40000))
        seq.append((time.perf_counter() - t0) * 1e3)
        assert total == 139614694
        with ThreadPoolExecutor(max_workers=workers) as ex:
            t0 = time.perf_counter()
            total = sum(ex.map(sum_of_factors, range(1, 40000)))
            par.append((time.perf_counter() - t0) * 1e3)
            assert total == 139614694
    report("factors", 39999, 1, "ms", seq, impl="python_sequential")
    report("factors", 39999, workers, "ms", par)


if __name__ == "__main__":
    main()
