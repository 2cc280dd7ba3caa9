"""N downloads at once with aiohttp (the seeds' io_asyncio.py way: one
ClientSession, a task per URL, gather), for the 10,000-download run.
   many_aiohttp.py BASE_URL N CONCURRENT
Prints "downloads=N ok=K elapsed=S"."""
import asyncio
import sys
import time

import aiohttp


async def main(base, n, concur):
    codes = [l.strip() for l in open('codes.txt')]
    urls = [f'{base}/{cc}/{cc}.gif'.lower() for cc in
            (codes[i % len(codes)] for i in range(n))]
    sem = asyncio.Semaphore(concur)
    ok = 0

    async def download_site(url, session):
        nonlocal ok
        async with sem:
            async with session.get(url) as response:
                await response.read()
                ok += response.status == 200

    conn = aiohttp.TCPConnector(limit=0)
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(download_site(u, session) for u in urls),
                             return_exceptions=True)
    print(f'downloads={n} ok={ok} elapsed={time.perf_counter() - t0:.2f}')


if __name__ == '__main__':
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
