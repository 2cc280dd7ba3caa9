"""Python's asyncio on the loop benchmarks of bench/bench_loop.c.

    python3 bench_asyncio.py sleepers|spawn|pingpong N RUNS

Prints RESULT lines like the C programs (bench/report.py reads them).
Run with Debian's /usr/bin/python3.
"""
import asyncio
import os
import statistics
import sys
import time


def rss_peak_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


async def sleepers_main(n):
    await asyncio.gather(*(asyncio.sleep(1) for _ in range(n)))


def sleepers_once(n):
    before = rss_peak_kib()
    t0 = time.perf_counter()
    asyncio.run(sleepers_main(n))
    wall = time.perf_counter() - t0
    return wall, (rss_peak_kib() - before) * 1024.0 / n


async def noop():
    pass


async def spawn_main(n):
    t0 = time.perf_counter_ns()
    tasks = [asyncio.create_task(noop()) for _ in range(n)]
    await asyncio.gather(*tasks)
    return (time.perf_counter_ns() - t0) / n


async def pingpong_main(rounds):
    loop = asyncio.get_running_loop()
    court = {"ball": loop.create_future(), "reply": None}

    async def server():
        for _ in range(rounds):
            await court["ball"]
            rep = court["reply"]
            court["ball"] = loop.create_future()
            rep.set_result(None)

    async def client():
        for _ in range(rounds):
            court["reply"] = loop.create_future()
            court["ball"].set_result(None)
            await court["reply"]

    t0 = time.perf_counter_ns()
    await asyncio.gather(server(), client())
    return (time.perf_counter_ns() - t0) / (2 * rounds)


def report(bench, n, unit, values):
    runs = ",".join(f"{v:.4f}" for v in values)
    print(f"RESULT impl=python bench={bench} n={n} workers=1 unit={unit} "
          f"median={statistics.median(values):.4f} runs={runs}", flush=True)


def main():
    mode, n, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if mode == "sleepers":
        walls, mems = [], []
        for _ in range(runs):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                wall, mem = sleepers_once(n)
                os.write(w, f"{wall} {mem}".encode())
                os._exit(0)
            os.close(w)
            data = os.read(r, 100).decode().split()
            os.close(r)
            os.waitpid(pid, 0)
            walls.append(float(data[0]))
            mems.append(float(data[1]))
        report("sleepers_wall", n, "s", walls)
        report("sleepers_mem", n, "bytes/task", mems)
    elif mode == "spawn":
        report("spawn", n, "ns/task",
               [asyncio.run(spawn_main(n)) for _ in range(runs)])
    elif mode == "pingpong":
        report("pingpong", n, "ns/switch",
               [asyncio.run(pingpong_main(n)) for _ in range(runs)])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
