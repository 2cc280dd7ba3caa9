"""Python asyncio streams on the echo benchmark (bench/run.sh; the same
shape as apps/echo_client against apps/echo_server):

    python3 bench_asyncio_echo.py server            # prints its port
    python3 bench_asyncio_echo.py client PORT CONNS MSGS SIZE

The client opens CONNS connections at once, waits until all are up, then
sends MSGS messages of SIZE bytes on each and waits for each echo; prints
a RESULT line like echo_client's. Run with Debian's /usr/bin/python3.
"""
import asyncio
import resource
import sys
import time


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def handle(reader, writer):
    try:
        while True:
            data = await reader.read(16384)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def serve():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(f"listening on 127.0.0.1 port {server.sockets[0].getsockname()[1]}",
          flush=True)
    async with server:
        await server.serve_forever()


async def client(port, conns, msgs, size):
    lat = []
    up = asyncio.Event()
    count = [0]
    t_up = [0.0]

    async def one(i):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        count[0] += 1
        if count[0] == conns:
            t_up[0] = time.perf_counter()
            up.set()
        await up.wait()
        payload = bytes((i + k) % 256 for k in range(size))
        for _ in range(msgs):
            t0 = time.perf_counter()
            writer.write(payload)
            await writer.drain()
            got = await reader.readexactly(size)
            lat.append(time.perf_counter() - t0)
            assert got == payload
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(conns)))
    t1 = time.perf_counter()
    lat.sort()
    n = len(lat)
    print(f"RESULT impl=python bench=echo conns={conns} msgs={msgs} "
          f"connect_per_s={conns / (t_up[0] - t0):.0f} "
          f"rt_per_s={n / (t1 - t_up[0]):.0f} "
          f"p50_us={lat[n // 2] * 1e6:.1f} p99_us={lat[n * 99 // 100] * 1e6:.1f}",
          flush=True)


def main():
    raise_fd_limit()
    if sys.argv[1] == "server":
        asyncio.run(serve())
    else:
        port, conns, msgs, size = map(int, sys.argv[2:6])
        asyncio.run(client(port, conns, msgs, size))


if __name__ == "__main__":
    main()
