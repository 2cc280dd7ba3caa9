"""Turns the RESULT lines of bench/run.sh into bench/RESULTS.md."""
import datetime
import os
import re
import platform
import subprocess
import sys

TARGETS = {"throughput": 100.0, "latency": 2.0}  # absolute targets
TITLES = {
    "throughput": "(a) Throughput: N no-op tasks submitted, then all waited",
    "latency": "(b) Latency: submit one task and wait for its result, N times",
    "map": "(c) map of N tiny items, one task per item (chunksize=1)",
    "map_chunked": "(c) map of N tiny items, chunksize=1000",
    "map_adaptive": "(c) map of N tiny items, no chunksize given",
    "factors": "(d) the seeds' sum of prime factors of 1..39999",
    "sleepers_wall": "(e) N tasks each sleeping 1 s at once: wall time",
    "sleepers_mem": "(e) N tasks each sleeping 1 s at once: memory per task",
    "spawn": "(f) N tasks spawned and gathered (they return at once)",
    "pingpong": "(g) two tasks passing a future back and forth",
}
LOOP_NAMES = {
    "cfutures": "cfutures loop tasks",
    "libuv": "raw libuv timers (uv_timer_t, no tasks)",
    "python": "Python asyncio",
}
LOOP_NAMES_FOR = ("sleepers_wall", "sleepers_mem", "spawn", "pingpong")
LOOP_TARGETS = {"sleepers_wall": (1.15, "s"), "sleepers_mem": (1536.0, "bytes"),
                "pingpong": (50.0, "ns/switch")}
SECTIONS = ["throughput", "latency", "map", "map_chunked", "map_adaptive",
            "factors", "sleepers_wall", "sleepers_mem", "spawn", "pingpong"]
ORDER = ["cfutures", "cfutures_runner", "cfutures_chunked", "c_sequential", "glib", "libuv",
         "naive", "python", "python_sequential"]
NAMES = {
    "cfutures": "cfutures thread pool",
    "cfutures_runner": "cfutures, chunk runner (CF_MAP_CHUNK_FN)",
    "glib": "GLib GThreadPool",
    "libuv": "libuv uv_queue_work",
    "naive": "naive mutex+condvar pool",
    "python": "Python ThreadPoolExecutor",
}
FACTOR_NAMES = {
    "cfutures": "cfutures map, no chunksize",
    "cfutures_chunked": "cfutures map, chunksize=1000",
    "c_sequential": "C, sequential loop",
    "python": "Python ThreadPoolExecutor.map",
    "python_sequential": "Python, sequential loop",
}


def median_of(rows, impl, bench):
    r = next((r for r in rows if r["impl"] == impl and r["bench"] == bench),
             None)
    return r["median"] if r else None


def verdict(ok):
    return "met" if ok else "NOT met"


def relative_targets(rows, bench):
    """The second-pass issue's targets that compare against others."""
    ours = median_of(rows, "cfutures", bench)
    uv = median_of(rows, "libuv", bench)
    glib = median_of(rows, "glib", bench)
    lines = []
    if ours is None:
        return lines
    if bench == "throughput" and uv:
        lines.append(f"Target: >= 4x libuv's throughput "
                     f"({verdict(uv / ours >= 4.0)}: {uv / ours:.1f}x).")
    if bench == "map" and uv:
        lines.append(f"Target: no slower than the hand-written libuv loop "
                     f"({verdict(ours <= uv)}: {ours:.1f} against "
                     f"{uv:.1f} ns/item).")
    if bench == "map_chunked" and uv and glib:
        for impl, how in (("cfutures", "the item function called per item"),
                          ("cfutures_runner", "a chunk runner, "
                           "CF_MAP_CHUNK_FN")):
            t = median_of(rows, impl, bench)
            if t is None:
                continue
            worst = max(t / uv, t / glib)
            lines.append(f"Target: within 1.5x of the hand-written GLib and "
                         f"libuv loops, with {how} ({verdict(worst <= 1.5)}: "
                         f"{t / glib:.2f}x GLib's, {t / uv:.2f}x libuv's).")
    if bench in LOOP_TARGETS:
        limit, unit = LOOP_TARGETS[bench]
        lines.append(f"Target: <= {limit:g} {unit} for cfutures "
                     f"({verdict(ours <= limit)}: {ours:.2f}).")
    if bench in ("sleepers_wall", "sleepers_mem") and uv:
        lines.append(f"The loop's overhead over raw libuv timers: "
                     f"{ours / uv:.2f}x ({ours - uv:+.3g}).")
    if bench == "factors":
        seq = median_of(rows, "c_sequential", bench)
        if seq:
            lines.append(f"Target: with no chunksize, >= 1.0x the C "
                         f"sequential loop ({verdict(seq / ours >= 1.0)}: "
                         f"{seq / ours:.2f}x).")
    return [l + "\n" for l in lines]


def parse(path):
    rows = []
    for line in open(path):
        if not line.startswith("RESULT "):
            continue
        # key=value pairs; a value may hold spaces ("prog=flags2_asyncio
        # -m 20"): it runs up to the next " key="
        fields = dict(re.findall(r"(\w+)=(.*?)(?= \w+=|$)",
                                 line[len("RESULT "):].rstrip("\n")))
        if "median" in fields:
            fields["median"] = float(fields["median"])
        rows.append(fields)
    return rows


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit():
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], text=True,
            stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def procpool_section(rows):
    """(l): the process pool (issue 9), bench_procpool."""
    pp = [r for r in rows if r["bench"] == "pp_factors"]
    if not pp:
        return []
    out = ["## (l) process pool: sum of prime factors of 1..39999 as a map, "
           "and the round trip\n"]
    by = {r["impl"]: r for r in pp}
    seq = by.get("c_sequential")
    ours = by.get("cfutures_process")
    chunked = by.get("cfutures_process_chunked")
    if seq and ours:
        ratio = ours["median"] / seq["median"]
        out.append(f"Target: with no chunksize, <= 3x the C sequential loop "
                   f"({verdict(ratio <= 3.0)}: {ratio:.2f}x).\n")
    if seq and chunked:
        ratio = chunked["median"] / seq["median"]
        out.append(f"With chunksize 1000: {ratio:.2f}x the sequential loop.\n")
    rt = next((r for r in rows if r["bench"] == "pp_roundtrip"
               and r["impl"] == "cfutures_process"), None)
    pyrt = next((r for r in rows if r["bench"] == "pp_roundtrip"
                 and r["impl"] == "python_process"), None)
    if rt:
        out.append(f"Target: a submit/result round trip to an idle worker "
                   f"<= 20 us ({verdict(rt['median'] <= 20)}: "
                   f"{rt['median']:.1f} us).\n")
    names = {"c_sequential": "C, sequential loop",
             "cfutures_process": "process pool, map, no chunksize",
             "cfutures_process_chunked": "process pool, map, chunksize 1000",
             "cfutures_thread": "thread pool, map, no chunksize",
             "python_process": "Python ProcessPoolExecutor, map, unchunked",
             "python_process_chunked": "Python ProcessPoolExecutor, map, chunksize 1000",
             "python_mp_pool": "Python multiprocessing.Pool, map (its chunksize)"}
    out.append("| implementation | workers | median s | ratio to sequential | runs |")
    out.append("| --- | ---: | ---: | ---: | --- |")
    for r in pp:
        ratio = f"{r['median'] / seq['median']:.2f}x" if seq else "-"
        out.append(f"| {names.get(r['impl'], r['impl'])} | {r['workers']} | "
                   f"{r['median']:.4f} | {ratio} | {r['runs'].replace(',', ', ')} |")
    for r, who in ((rt, "process pool"), (pyrt, "Python ProcessPoolExecutor")):
        if r:
            out.append(f"| {who}, submit + result of one empty task | 1 | "
                       f"{r['median']:.1f} us | - | {r['runs'].replace(',', ', ')} |")
    out.append("\nThe seeds measured Python's ProcessPoolExecutor on this "
               "map at 10.8 s unchunked and 0.176 s with chunksize=1000.\n")
    fib = {r["impl"]: r for r in rows if r["bench"] == "pp_fib"}
    one, all_ = fib.get("cfutures_process_1"), fib.get("cfutures_process")
    if one and all_:
        speedup = one["median"] / all_["median"]
        out.append(f"fib(35) x 20 on the process pool (warm workers): "
                   f"{one['median']:.3f} s on 1 worker (runs {one['runs']}), "
                   f"{all_['median']:.3f} s on {all_['workers']} (runs "
                   f"{all_['runs']}). Target: speedup >= 1.9 on this 2-core "
                   f"machine ({verdict(speedup >= 1.9)}: {speedup:.2f}x).")
        c1, c2 = fib.get("c_threads_1"), fib.get("c_threads")
        if c1 and c2:
            out.append(f"The machine's own ceiling in the same run, the same "
                       f"calls on plain threads without the library: "
                       f"{c1['median']:.3f} s on 1, {c2['median']:.3f} s on "
                       f"{c2['workers']}: {c1['median'] / c2['median']:.2f}x.")
        out.append("")
    rec = {r["impl"]: r for r in rows if r["bench"] == "pp_recovery"}
    ours_rec, py_rec = rec.get("cfutures_process"), rec.get("python_process")
    if ours_rec:
        line = (f"Recovery from a worker killed with SIGKILL (from the submit "
                f"of the task that dies to the result of the next one): "
                f"{ours_rec['median']:.2f} ms median (runs {ours_rec['runs']})")
        if py_rec:
            line += (f"; Python, whose pool is broken then (a new pool and its "
                     f"first result): {py_rec['median']:.2f} ms (runs "
                     f"{py_rec['runs']}), {py_rec['median'] / ours_rec['median']:.1f}x")
        out.append(line + ".\n")
    return out


def flags_sections(rows):
    """(i)-(k): the flag benchmarks of issue 11 (bench/run_flags.sh)."""
    out = []
    f20 = [r for r in rows if r["bench"] == "flags20"]
    if f20:
        out.append("## (i) 20 flags from flags_server, a fixed 0.5 s delay "
                   "per request\n")
        conc = [r for r in f20 if r["impl"] == "cfutures" and "-m 20" in r["prog"]]
        worst = max((r["median"] for r in conc), default=None)
        if worst is not None:
            out.append(f"Target: the concurrent downloaders within 10 % of the "
                       f"0.5 s delay ({verdict(worst <= 0.55)}: slowest "
                       f"{worst:.2f} s).\n")
        out.append("| implementation | program | median s | runs |")
        out.append("| --- | --- | ---: | --- |")
        for r in f20:
            who = "cfutures (C)" if r["impl"] == "cfutures" else "Python (seeds' code)"
            out.append(f"| {who} | `{r['prog']}` | {r['median']:.2f} | "
                       f"{r['runs'].replace(',', ', ')} |")
        out.append("\nThe chapter-one programs (`flags`, `flags_threadpool`, "
                   "`flags_asyncio`) have no -m: `flags_threadpool` uses "
                   "Python's default pool size, min(32, cpus + 4).\n")
    f10 = [r for r in rows if r["bench"] == "flags10k"]
    if f10:
        out.append("## (j) 10,000 downloads from flags_server --delay 1, one "
                   "client thread\n")
        ours = next((r for r in f10 if "asyncio -m 10000" in r["prog"]), None)
        if ours:
            out.append(f"Target: `flags2_asyncio -m 10000` in <= 2.2 s wall, "
                       f"nginx's figure with a raw libuv client in the issue "
                       f"({verdict(ours['median'] <= 2.2)}: "
                       f"{ours['median']:.2f} s).\n")
        out.append("| implementation | program | median s | runs |")
        out.append("| --- | --- | ---: | --- |")
        for r in f10:
            who = "cfutures (C)" if r["impl"] == "cfutures" else "Python"
            out.append(f"| {who} | `{r['prog']}` | {r['median']:.2f} | "
                       f"{r['runs'].replace(',', ', ')} |")
        out.append("\nThe 10,000 are the 200 first flags of `-a` 50 times "
                   "(`FLAGS_REPEAT=50`, each flag saved once), with the cap on "
                   "concurrent requests raised (`FLAGS_MAX_CONCUR_REQ=10000`; "
                   "the seeds' cap is 1000); the server runs its connections "
                   "on the loop's shared stack. The thread pool's 1,000 "
                   "workers need ten rounds of 1 s.\n")
    wrk = [r for r in rows if r["bench"] == "wrk"]
    if wrk:
        out.append("## (k) the servers alone: wrk -t2 -c100 on "
                   "/flags/cn/cn.gif\n")
        ours = next((r for r in wrk if r["impl"] == "cfutures"), None)
        ng = next((r for r in wrk if r["impl"] == "nginx-1"), None)
        if ours and ng:
            ratio = ours["median"] / ng["median"]
            out.append(f"Target: flags_server >= 0.8x a single nginx worker "
                       f"({verdict(ratio >= 0.8)}: {ratio:.2f}x).\n")
        names = {"cfutures": "flags_server (one thread), same tree as nginx",
                 "cfutures (flags layout)": "flags_server on Debian's flag directory",
                 "nginx-1": "nginx, 1 worker", "nginx-2": "nginx, 2 workers",
                 "aiohttp": "aiohttp web.static", "http.server": "python3 -m http.server"}
        out.append("| server | median req/s | ratio to flags_server | runs |")
        out.append("| --- | ---: | ---: | --- |")
        for r in wrk:
            ratio = f"{r['median'] / ours['median']:.2f}x" if ours else "-"
            out.append(f"| {names.get(r['impl'], r['impl'])} | "
                       f"{r['median']:,.0f} | {ratio} | "
                       f"{r['runs'].replace(',', ', ')} |")
        out.append("\nwrk's two threads and the server share the machine's "
                   "two cores.\n")
    return out


def main():
    rows = parse(sys.argv[1])
    command = sys.argv[2]
    out = []
    out.append("# Benchmark results\n")
    out.append("Written by `bench/run.sh` (do not edit by hand). Command:\n")
    out.append(f"    {command}\n")
    out.append(f"- date: {datetime.date.today().isoformat()}, commit {commit()}")
    out.append(f"- machine: {os.cpu_count()} CPUs ({cpu_model()}), "
               f"{platform.system()} {platform.release()}")
    out.append(f"- Python: {platform.python_version()} (/usr/bin/python3)")
    c2c = [r for r in rows if r["bench"] == "c2c"]
    if c2c:
        parts = [f"{r['median']:.0f} ns ({r.get('when', 'now').replace('-', ' ')})"
                 for r in c2c]
        out.append("- the host's core-to-core hand-off (bench/probe_c2c, one "
                   "cache line between two threads): " + ", ".join(parts) +
                   "; the figures that hand work between cores move with it "
                   "(bench/NOTES.md section 19)")
    out.append("- figures are medians of the runs listed; ratio = other / "
               "cfutures (higher is slower than cfutures)\n")
    for bench in SECTIONS:
        bench_rows = [r for r in rows if r["bench"] == bench]
        if bench == "map_adaptive":
            # Beside the hand-written loops at their best chunk size.
            bench_rows += [r for r in rows if r["bench"] == "map_chunked"
                           and not r["impl"].startswith("cfutures")]
        if not bench_rows:
            continue
        bench_rows.sort(key=lambda r: ORDER.index(r["impl"]))
        ours = next((r for r in bench_rows if r["impl"] == "cfutures"), None)
        unit = bench_rows[0]["unit"]
        out.append(f"## {TITLES[bench]}\n")
        if bench in TARGETS and ours:
            ok = "met" if ours["median"] <= TARGETS[bench] else "NOT met"
            out.append(f"Target: <= {TARGETS[bench]:g} {unit} for cfutures "
                       f"({ok}: {ours['median']:.2f}).\n")
        out.extend(relative_targets(rows, bench))
        if bench == "map_adaptive":
            out.append("The other rows are the hand-written loops with 1000 "
                       "items per task.\n")
        names = (FACTOR_NAMES if bench == "factors" else
                 LOOP_NAMES if bench in LOOP_NAMES_FOR else NAMES)
        out.append(f"| implementation | N | workers | median {unit} | ratio | runs |")
        out.append("| --- | ---: | ---: | ---: | ---: | --- |")
        for r in bench_rows:
            ratio = (f"{r['median'] / ours['median']:.1f}x"
                     if ours and ours["median"] > 0 else "-")
            out.append(f"| {names.get(r['impl'], r['impl'])} | {r['n']} | "
                       f"{r['workers']} | {r['median']:.2f} | {ratio} | "
                       f"{r['runs'].replace(',', ', ')} |")
        out.append("")
    echo = [r for r in rows if r["bench"] == "echo"]
    if echo:
        out.append("## (h) echo: N connections on one thread, 100 round trips "
                   "of 64 bytes each\n")
        out.append("Server and client are separate processes of the same "
                   "implementation (bench/run_echo.sh).\n")
        for conns in sorted({int(r["conns"]) for r in echo}):
            ours = next((r for r in echo if r["impl"] == "cfutures"
                         and int(r["conns"]) == conns), None)
            uv = next((r for r in echo if r["impl"] == "libuv"
                       and int(r["conns"]) == conns), None)
            if ours and uv:
                ratio = float(uv["rt_per_s"]) / float(ours["rt_per_s"])
                out.append(f"Target at {conns} connections: round trips "
                           f"within 1.3x of raw libuv's "
                           f"({verdict(ratio <= 1.3)}: libuv / cfutures = "
                           f"{ratio:.2f}x).\n")
        out.append("| implementation | connections | connections/s | round "
                   "trips/s | p50 us | p99 us |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: |")
        names = {"cfutures": "cfutures tasks (cf/net.h)",
                 "libuv": "raw libuv callbacks (libuv's documented pattern)",
                 "libuv_lean": "raw libuv callbacks, lean (static read buffer, try_write)",
                 "python": "Python asyncio streams"}
        order = ["cfutures", "libuv", "libuv_lean", "python"]
        mem = {(r["impl"], r["conns"]): r["bytes_per_conn"] for r in rows
               if r["bench"] == "echo_mem"}
        out[-2] = ("| implementation | connections | connections/s | round "
                   "trips/s | p50 us | p99 us | server memory per "
                   "connection (bytes) |")
        out[-1] = "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        for r in sorted(echo, key=lambda r: (int(r["conns"]),
                                             order.index(r["impl"]) if r["impl"] in order else 99)):
            out.append(f"| {names.get(r['impl'], r['impl'])} | {r['conns']} | "
                       f"{r['connect_per_s']} | {r['rt_per_s']} | "
                       f"{r['p50_us']} | {r['p99_us']} | "
                       f"{mem.get((r['impl'], r['conns']), '-')} |")
        out.append("")
        out.append("Memory: the server's peak resident set during the run less "
                   "its resident set before (cfutures' server on the loop's "
                   "shared stack). Target: near raw libuv's 1.0-1.3 KiB "
                   "measured in the issue. Raw libuv here is bench_uv_echo in "
                   "two forms: libuv's documented pattern, which keeps a 16 "
                   "KiB read buffer per connection until its echo is written, "
                   "and a lean one (one static read buffer, uv_try_write "
                   "first), which holds little more than its uv_tcp_t: the "
                   "floor.\n")
        for conns in sorted({int(r["conns"]) for r in echo}):
            m = mem.get(("cfutures", str(conns)))
            if m is not None:
                kib = int(m) / 1024
                out.append(f"Target at {conns} connections: memory near 1.0-1.3 "
                           f"KiB per connection ({verdict(kib <= 1.3)}: "
                           f"{kib:.2f} KiB).\n")
    out.extend(procpool_section(rows))
    out.extend(flags_sections(rows))
    out.append("Notes:\n")
    out.append("- GLib and libuv have no futures: their tasks signal "
               "completion through a counter and a condition variable "
               "(GLib) or the loop's after-work callback (libuv), which is "
               "how their users wait. The naive pool has a done flag per "
               "task and one shared condition variable. cfutures and "
               "Python create, complete and wait on a real future per "
               "task.")
    out.append("- GLib, libuv and the naive pool have no map: their (c) rows "
               "are what their users write by hand (bench/bench.h): all "
               "tasks submitted at once, each writing int64 results into "
               "a preallocated array, read in order after the waits. "
               "cfutures' map is lazy (bounded look-ahead, any input "
               "iterator) and moves a cf_value per item through the "
               "consumer; Python's map is eager and yields objects.")
    out.append("- Python's ThreadPoolExecutor accepts chunksize but ignores "
               "it, so its two map rows measure the same thing.")
    out.append("- (d) runs 21 times on one warm pool, each run a few "
               "milliseconds (the seeds' workload); the map with no "
               "chunksize starts with one item per task and grows its "
               "chunks as it learns the items are short.")
    out.append("- The first run of each C benchmark in a fresh process pays "
               "for faulting in the memory of a million live tasks (about "
               "12 us per 4 KiB page on this VM; see bench/NOTES.md); the "
               "median reflects the warm steady state.")
    out.append("- (e)-(g): cfutures' tasks are stackful coroutines on a "
               "libuv loop; in (e) on the loop's shared stack "
               "(cf_loop_opts.shared_stack: a sleeping task keeps its few "
               "hundred bytes of frames saved, not a stack of its own), in "
               "(f) and (g) on stacks of their own (the default). Python's "
               "are asyncio tasks; raw libuv has only the timers, no tasks, "
               "futures or gather. Each (e) run is a fresh process (peak "
               "RSS growth / N).")
    print("\n".join(out))


if __name__ == "__main__":
    main()
