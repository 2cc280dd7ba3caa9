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


def report(bench, n, workers, unit, values):
    med = statistics.median(values)
    runs = ",".join(f"{v:.3f}" for v in values)
    print(f"RESULT impl=python bench={bench} n={n} workers={workers} "
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


if __name__ == "__main__":
    main()
