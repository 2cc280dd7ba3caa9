"""aiohttp serving a directory (web.static), for the wrk comparison.
   static_aiohttp.py ROOT PORT"""
import sys

from aiohttp import web

app = web.Application()
app.router.add_static('/flags', sys.argv[1] + '/flags')
web.run_app(app, host='127.0.0.1', port=int(sys.argv[2]), access_log=None,
            print=None)
