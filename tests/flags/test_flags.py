#!/usr/bin/python3
"""End-to-end tests of the flag programs (issue 11): flags_server against
hostile and ordinary clients (raw sockets, Python's http.client and
urllib, curl, httpx as the seeds use it), and the seven downloaders
against flags_server and against Python's own http.server.

Run: test_flags.py APPS_DIR [unittest arguments, e.g. a TestCase name].
Every wait has a generous deadline; nothing here depends on speed.
"""
import http.client
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

APPS = None
FLAGS_DIR = "/usr/share/flags/countries/16x11"
POP20 = sorted("CN IN US ID BR PK NG BD RU KR MX PH VN ET EG DE IR TR CD FR".split())
SOON = 60  # seconds: a correctness bound, never a speed expectation


def flag_bytes(cc):
    with open(os.path.join(FLAGS_DIR, cc.lower() + ".gif"), "rb") as f:
        return f.read()


class Server:
    """flags_server on a free port, its output read by a thread."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [os.path.join(APPS, "flags_server"), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = self.proc.stdout.readline()
        m = re.match(r"flags_server: listening on http://127\.0\.0\.1:(\d+)/$", first)
        if not m:
            self.proc.kill()
            raise AssertionError("unexpected first line: %r" % first)
        self.port = int(m.group(1))
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_lines(self, pred, n, timeout=SOON):
        end = time.monotonic() + timeout
        with self.cond:
            while sum(1 for l in self.lines if pred(l)) < n:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SOON)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(SOON)
        self.proc.stdout.close()
        return self.proc.returncode


def raw(port, data, read_timeout=SOON):
    """Sends data, reads until the server closes; returns the bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def responses(blob):
    """Splits raw HTTP/1.1 responses: [(status, headers dict, body)]."""
    out = []
    while blob:
        head, sep, rest = blob.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError("incomplete response: %r" % blob[:200])
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers["content-length"])
        out.append((status, headers, rest[:n]))
        blob = rest[n:]
    return out


def responses_prefix(blob):
    """The complete responses at the start of blob (a partial one is left)."""
    try:
        return responses(blob)
    except (AssertionError, KeyError, ValueError, IndexError):
        return []


def get_req(path, extra=""):
    return ("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, extra)).encode()


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp()
        for cc in ("cn", "br"):
            shutil.copy(os.path.join(FLAGS_DIR, cc + ".gif"), cls.root)
        os.makedirs(os.path.join(cls.root, "sub"))
        with open(os.path.join(cls.root, "sub", "note.txt"), "w") as f:
            f.write("hello\n")
        os.symlink("/etc/passwd", os.path.join(cls.root, "out.gif"))
        os.symlink("cn.gif", os.path.join(cls.root, "in.gif"))
        os.symlink("/", os.path.join(cls.root, "up"))
        os.mkfifo(os.path.join(cls.root, "pipe.gif"))  # must not block the loop
        # The book's own tree for one flag (flags.zip unzipped): served as
        # it is, beside the bare files.
        os.makedirs(os.path.join(cls.root, "flags", "jp"))
        shutil.copy(os.path.join(FLAGS_DIR, "jp.gif"),
                    os.path.join(cls.root, "flags", "jp"))
        cls.big = os.urandom(3 << 20)  # written in pieces
        with open(os.path.join(cls.root, "big.bin"), "wb") as f:
            f.write(cls.big)
        cls.srv = Server("--dir", cls.root, "--header-timeout", "0.5")
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        shutil.rmtree(cls.root)
        assert rc == 0, rc

    def one(self, data):
        r = responses(raw(self.port, data))
        self.assertEqual(len(r), 1, r)
        status, headers, body = r[0]
        self.assertIn("content-type", headers)
        self.assertEqual(int(headers["content-length"]), len(body))
        return status, headers, body

    def test_get_and_head_in_the_seeds_layout(self):
        st, h, body = self.one(get_req("/flags/cn/cn.gif", "Connection: close\r\n"))
        self.assertEqual(st, 200)
        self.assertEqual(h["content-type"], "image/gif")
        self.assertEqual(body, flag_bytes("cn"))
        blob = raw(self.port, b"HEAD /flags/br/br.gif HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n")
        head, _, rest = blob.partition(b"\r\n\r\n")
        self.assertIn(b"HTTP/1.1 200 OK", head)
        self.assertIn(b"Content-Length: %d" % len(flag_bytes("br")), head)
        self.assertEqual(rest, b"")
        st, h, body = self.one(get_req("/sub/note.txt", "Connection: close\r\n"))
        self.assertEqual((st, body), (200, b"hello\n"))
        self.assertTrue(h["content-type"].startswith("text/plain"))

    def test_the_books_own_tree_is_served_too(self):
        st, h, body = self.one(get_req("/flags/jp/jp.gif", "Connection: close\r\n"))
        self.assertEqual((st, body), (200, flag_bytes("jp")))

    def test_a_refused_head_gets_no_body(self):
        for req in (b"HEAD /../x HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"HEAD /flags/zz/zz.gif HTTP/1.1\r\nHost: x\r\n"
                    b"Connection: close\r\n\r\n"):
            blob = raw(self.port, req)
            head, _, rest = blob.partition(b"\r\n\r\n")
            self.assertRegex(head, rb"^HTTP/1.1 40[04] ", req)
            self.assertIn(b"Content-Length: ", head)
            self.assertEqual(rest, b"", req)

    def test_missing_files_are_404_with_type_and_length(self):
        for path in ("/flags/zz/zz.gif", "/nope", "/", "/sub", "/flags/cn/br.gif"):
            st, h, body = self.one(get_req(path, "Connection: close\r\n"))
            self.assertEqual(st, 404, path)

    def test_fifos_are_refused_and_large_files_arrive_whole(self):
        st, _, _ = self.one(get_req("/pipe.gif", "Connection: close\r\n"))
        self.assertEqual(st, 404)
        st, h, body = self.one(get_req("/big.bin", "Connection: close\r\n"))
        self.assertEqual((st, h["content-type"]), (200, "application/octet-stream"))
        self.assertEqual(body, self.big)
        blob = raw(self.port, b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n")
        self.assertIn(b"Content-Length: %d\r\n" % len(self.big), blob)
        self.assertTrue(blob.endswith(b"\r\n\r\n"))

    def test_keep_alive_and_pipelining(self):
        data = get_req("/cn.gif") + get_req("/br.gif") + get_req("/nope") + \
            get_req("/cn.gif", "Connection: close\r\n")
        r = responses(raw(self.port, data))
        self.assertEqual([x[0] for x in r], [200, 200, 404, 200])
        self.assertEqual(r[1][2], flag_bytes("br"))
        self.assertEqual(r[0][1]["connection"], "keep-alive")
        self.assertEqual(r[3][1]["connection"], "close")
        # HTTP/1.0 closes unless asked to keep alive
        r = responses(raw(self.port, b"GET /cn.gif HTTP/1.0\r\n\r\n" + get_req("/br.gif")))
        self.assertEqual(len(r), 1)

    def test_path_traversal_is_refused(self):
        bad = ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
               "/%2E%2E%2Fetc%2Fpasswd", "/flags/..%2F..%2Fetc/passwd",
               "/sub/../../etc/passwd", "/%00", "/a%zz", "/a%2", "/x%5c..",
               "http://localhost/etc/passwd", "*", "etc/passwd"]
        for path in bad:
            st, _, body = self.one(get_req(path))
            self.assertEqual(st, 400, path)
            self.assertNotIn(b"root:", body)
        for path in ("//etc/passwd", "/etc/passwd", "/out.gif", "/up/etc/passwd",
                     "/up/proc/self/environ"):
            st, _, body = self.one(get_req(path, "Connection: close\r\n"))
            self.assertEqual(st, 404, path)
            self.assertNotIn(b"root:", body)
        st, _, body = self.one(get_req("/in.gif", "Connection: close\r\n"))
        self.assertEqual((st, body), (200, flag_bytes("cn")))

    def test_oversized_and_malformed_heads(self):
        cases = [
            (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 9000 + b"\r\n\r\n", 431),
            (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
                b"X-%d: y\r\n" % i for i in range(120)) + b"\r\n", 431),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
            (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),  # bare LF
            (b"POST /cn.gif HTTP/1.1\r\nHost: x\r\n\r\n", 405),
            (b"GET /cn.gif HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 413),
            (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
             b"Content-Length: 2\r\n\r\n", 400),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
            (bytes(range(256)) + b"\r\n\r\n", 400),
        ]
        for data, want in cases:
            st, h, _ = self.one(data)
            self.assertEqual(st, want, data[:60])
            self.assertEqual(h["connection"], "close")
        st, h, _ = self.one(b"PUT / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(h["allow"], "GET, HEAD")
        # garbage after a good request: the good one is answered, then 400
        r = responses(raw(self.port, get_req("/cn.gif") + b"\x00\x01garbage\r\n\r\n"))
        self.assertEqual([x[0] for x in r], [200, 400])
        # binary bytes without an end: the limit answers
        st, _, _ = self.one(os.urandom(9000).replace(b"\n", b"x"))
        self.assertIn(st, (400, 414, 431))

    def test_slow_senders_get_408_and_idle_connections_close(self):
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=SOON) as s:
            s.sendall(b"GET /cn.gif HTTP/1.1\r\nHo")  # and then nothing
            blob = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                blob += chunk
        self.assertEqual(responses(blob)[0][0], 408)
        with socket.create_connection(("127.0.0.1", self.port), timeout=SOON) as s:
            self.assertEqual(s.recv(4096), b"")  # closed, silently
        self.assertLess(time.monotonic() - t0, SOON)

    def test_pythons_own_clients_and_curl(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=SOON)
        for cc in ("cn", "br", "cn"):
            c.request("GET", "/flags/%s/%s.gif" % (cc, cc))
            r = c.getresponse()
            self.assertEqual((r.status, r.read()), (200, flag_bytes(cc)))
        c.request("HEAD", "/flags/cn/cn.gif")
        r = c.getresponse()
        self.assertEqual((r.status, r.read()), (200, b""))
        c.close()
        with urllib.request.urlopen("http://localhost:%d/flags/br/br.gif" % self.port,
                                    timeout=SOON) as r:
            self.assertEqual(r.read(), flag_bytes("br"))
        out = subprocess.run(
            ["curl", "-sS", "-o", "-", "-w", "%{http_code}",
             "http://127.0.0.1:%d/flags/cn/cn.gif" % self.port,
             "http://127.0.0.1:%d/flags/zz/zz.gif" % self.port],
            capture_output=True, timeout=SOON, check=True).stdout
        self.assertTrue(out.startswith(flag_bytes("cn")))
        self.assertTrue(out.endswith(b"404"))
        # the seeds' own client library
        import httpx
        resp = httpx.get("http://localhost:%d/flags/cn/cn.gif" % self.port,
                         timeout=3.1, follow_redirects=True)
        resp.raise_for_status()
        self.assertEqual(resp.content, flag_bytes("cn"))
        with self.assertRaises(httpx.HTTPStatusError):
            httpx.get("http://localhost:%d/flags/zz/zz.gif" % self.port,
                      timeout=3.1).raise_for_status()

    def test_the_server_still_serves_after_all_that(self):
        st, _, body = self.one(get_req("/cn.gif", "Connection: close\r\n"))
        self.assertEqual((st, body), (200, flag_bytes("cn")))


class DelayAndErrorTest(unittest.TestCase):
    def test_delay_is_logged_and_waited_and_errors_are_teapots(self):
        srv = Server("--delay", "0.3", "--error-rate", "1")
        try:
            t0 = time.monotonic()
            st, h, body = responses(raw(srv.port, get_req("/flags/cn/cn.gif",
                                                          "Connection: close\r\n")))[0]
            self.assertGreaterEqual(time.monotonic() - t0, 0.29)
            self.assertEqual(st, 418)
            self.assertIn(b"teapot", body)
            self.assertTrue(srv.wait_lines(lambda l: l == "CN delay: 0.3s", 1))
        finally:
            self.assertEqual(srv.stop(), 0)
        srv = Server("--delay", "0.1:0.2", "--quiet")
        try:
            st, _, body = responses(raw(srv.port, get_req("/flags/br/br.gif",
                                                          "Connection: close\r\n")))[0]
            self.assertEqual((st, body), (200, flag_bytes("br")))
        finally:
            srv.stop()
        self.assertEqual(srv.lines, [])

    def test_stopping_closes_idle_connections_without_a_word(self):
        srv = Server("--quiet")
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=SOON) as s:
                s.sendall(get_req("/flags/cn/cn.gif"))  # kept alive, then idle
                first = b""
                while len(responses_prefix(first)) < 1:
                    chunk = s.recv(65536)
                    self.assertTrue(chunk)
                    first += chunk
                srv.proc.send_signal(signal.SIGTERM)
                rest = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
                self.assertEqual(rest, b"")  # no made-up answer on the way out
            # one SIGTERM is a clean stop (a second one would be a kill)
            self.assertEqual(srv.proc.wait(SOON), 0)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_bad_options_are_usage_errors(self):
        for args in (["--delay", "x"], ["--delay", "2:1"], ["--error-rate", "2"],
                     ["--delay", "0.5-5"], ["--error-rate", "0.25x"],
                     ["--port", "70000"], ["--preset", "FAST"], ["--bogus"],
                     ["--port"]):
            p = subprocess.run([os.path.join(APPS, "flags_server"), *args],
                               capture_output=True, text=True, timeout=SOON)
            self.assertEqual(p.returncode, 2, args)
            self.assertTrue(p.stderr, args)
        p = subprocess.run([os.path.join(APPS, "flags_server"), "--port", "0",
                            "--dir", "/no/such/dir"],
                           capture_output=True, text=True, timeout=SOON)
        self.assertEqual(p.returncode, 1)
        self.assertIn("/no/such/dir", p.stderr)


class SlowConnectionsTest(unittest.TestCase):
    N = 1000

    def test_a_thousand_slow_connections_are_held_at_once(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        srv = Server("--delay", "2", "--quiet")
        try:
            sel = selectors.DefaultSelector()
            socks = []
            t0 = time.monotonic()
            for i in range(self.N):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=SOON)
                s.sendall(get_req("/flags/cn/cn.gif", "Connection: close\r\n"))
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ, [s, b""])
                socks.append(s)
            done = []
            deadline = time.monotonic() + SOON
            while len(done) < self.N and time.monotonic() < deadline:
                for key, _ in sel.select(1):
                    s, buf = key.data[0], key.data[1]
                    chunk = s.recv(65536)
                    if chunk:
                        key.data[1] = buf + chunk
                    else:
                        sel.unregister(s)
                        done.append(key.data[1])
                        s.close()
            elapsed = time.monotonic() - t0
            self.assertEqual(len(done), self.N)
            for blob in done:
                self.assertEqual(responses(blob)[0][0], 200)
            # 1,000 requests of 2 s each, answered together: far less
            # than one after another (2,000 s) could take.
            self.assertLess(elapsed, SOON)
        finally:
            for s in socks:
                s.close()
            self.assertEqual(srv.stop(), 0)


def run(prog, *args, env=None, cwd=None, timeout=SOON):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([os.path.join(APPS, prog), *args], capture_output=True,
                          text=True, env=e, cwd=cwd, timeout=timeout)


class ClientsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.local = Server("--quiet")
        cls.error = Server("--quiet", "--error-rate", "1")
        cls.slow = Server("--quiet", "--delay", "4")
        cls.env = {"FLAGS_LOCAL_PORT": str(cls.local.port),
                   "FLAGS_ERROR_PORT": str(cls.error.port),
                   "FLAGS_DELAY_PORT": str(cls.slow.port)}

    @classmethod
    def tearDownClass(cls):
        for s in (cls.local, cls.error, cls.slow):
            s.stop()

    def setUp(self):
        self.cwd = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.cwd)

    def saved(self):
        d = os.path.join(self.cwd, "downloaded")
        names = sorted(os.listdir(d))
        for n in names:
            self.assertRegex(n, r"^[A-Z]{2}\.gif$")  # no temporary left
            with open(os.path.join(d, n), "rb") as f:
                self.assertEqual(f.read(), flag_bytes(n[:2]), n)
        return [n[:2] for n in names]

    def test_the_chapter_one_programs(self):
        for prog in ("flags", "flags_threadpool", "flags_asyncio"):
            p = run(prog, env=self.env, cwd=self.cwd)
            self.assertEqual(p.returncode, 0, p.stderr)
            lines = p.stdout.split("\n")
            self.assertEqual(sorted(lines[0].split()), POP20, prog)
            if prog == "flags":
                self.assertEqual(lines[0], " ".join(POP20) + " ")
            self.assertRegex(lines[1], r"^20 downloads in \d+\.\d\ds$")
            self.assertEqual(self.saved(), POP20)
            shutil.rmtree(os.path.join(self.cwd, "downloaded"))

    def test_a_file_where_the_directory_goes_stops_before_downloading(self):
        # The seed's DEST_DIR.mkdir(exist_ok=True) raises FileExistsError.
        with open(os.path.join(self.cwd, "downloaded"), "w") as f:
            f.write("not a directory\n")
        for prog in ("flags", "flags2_sequential"):
            p = run(prog, env=self.env, cwd=self.cwd)
            self.assertNotEqual(p.returncode, 0, prog)
            self.assertIn("downloaded", p.stderr, prog)
            self.assertNotIn("BR", p.stdout, prog)  # nothing was fetched

    def test_flags_threadpool_futures_prints_each_future(self):
        p = run("flags_threadpool_futures", env=self.env, cwd=self.cwd)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        sched = re.findall(r"Scheduled for (\w\w): <Future at 0x[0-9a-f]+ "
                           r"state=(pending|running|finished returned str)>", out)
        self.assertEqual([s[0] for s in sched], ["BR", "CN", "ID", "IN", "US"])
        results = re.findall(r"<Future at 0x[0-9a-f]+ state=finished returned str> "
                             r"result: '(\w\w)'", out)
        self.assertEqual(sorted(results), ["BR", "CN", "ID", "IN", "US"])
        self.assertRegex(out, r"\n5 downloads in \d+\.\d\ds\n$")
        self.assertEqual(self.saved(), ["BR", "CN", "ID", "IN", "US"])

    def test_chapter_one_failure_exits_nonzero(self):
        p = run("flags", env={"FLAGS_LOCAL_PORT": str(self.error.port)}, cwd=self.cwd)
        self.assertEqual(p.returncode, 1)
        self.assertIn("HTTP error 418", p.stderr)

    def flags2(self, prog, *args, env=None):
        e = dict(self.env)
        e.update(env or {})
        p = run(prog, *args, env=e, cwd=self.cwd)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p

    def test_flags2_default_run(self):
        for prog, conns in (("flags2_sequential", "1 connection will be used"),
                            ("flags2_threadpool", "20 concurrent connections will be used."),
                            ("flags2_asyncio", "5 concurrent connections will be used.")):
            p = self.flags2(prog)
            self.assertEqual(p.stdout.split("\n")[:3], [
                "LOCAL site: http://localhost:%d/flags" % self.local.port,
                "Searching for 20 flags: from BD to VN", conns])
            self.assertIn("--------------------\n 20 flags downloaded.\nElapsed time: ",
                          p.stdout)
            self.assertNotIn("not found", p.stdout)
            self.assertNotIn("error", p.stdout)
            self.assertIn("100%|", p.stderr)
            self.assertIn("20/20", p.stderr)
            self.assertEqual(self.saved(), POP20)
            shutil.rmtree(os.path.join(self.cwd, "downloaded"))

    def test_flags2_not_found_is_counted(self):
        codes = [a + b for a in "AB" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"][:30]
        present = [c for c in codes if os.path.exists(
            os.path.join(FLAGS_DIR, c.lower() + ".gif"))]
        for prog in ("flags2_sequential", "flags2_threadpool", "flags2_asyncio"):
            p = self.flags2(prog, "-e", "-l", "30", "-m", "30")
            self.assertIn("Searching for 30 flags: from AA to BD", p.stdout)
            self.assertIn("%3d flags downloaded.\n%3d not found.\n" %
                          (len(present), 30 - len(present)), p.stdout)
            self.assertEqual(self.saved(), present)
            shutil.rmtree(os.path.join(self.cwd, "downloaded"))
        p = self.flags2("flags2_asyncio", "-v", "A", "zz", "-m", "100")
        self.assertIn("Searching for 27 flags: from AA to ZZ", p.stdout)
        self.assertIn("ZZ not found: http://localhost:%d/flags/zz/zz.gif" %
                      self.local.port, p.stdout)
        self.assertIn("AD OK", p.stdout)

    def test_flags2_error_mode_counts_errors(self):
        for prog in ("flags2_sequential", "flags2_threadpool", "flags2_asyncio"):
            p = self.flags2(prog, "-s", "error", "-l", "4", "-v")
            self.assertIn("ERROR site: http://localhost:%d/flags" % self.error.port,
                          p.stdout)
            self.assertIn("  0 flags downloaded.\n  4 errors.\n", p.stdout)
            self.assertIn("BD error: HTTP error 418 - I'm a teapot", p.stdout)

    def test_flags2_client_timeouts_and_refusals_are_errors(self):
        for prog in ("flags2_threadpool", "flags2_asyncio"):
            p = self.flags2(prog, "-s", "DELAY", "-l", "2", "-v")
            self.assertIn("  0 flags downloaded.\n  2 errors.\n", p.stdout)
            self.assertRegex(p.stdout, r"BD error: .*timed out.*\(ETIMEDOUT\)")
        p = self.flags2("flags2_sequential", "-v", "-l", "2",
                        env={"FLAGS_LOCAL_PORT": "1"})
        self.assertIn("  2 errors.\n", p.stdout)
        self.assertRegex(p.stdout, r"BD error: .*\(ECONNREFUSED\)")

    def test_flags2_usage_errors(self):
        usage = ("usage: flags2_threadpool [-h] [-a] [-e] [-l N] [-m CONCURRENT] "
                 "[-s LABEL] [-v]\n                         [CC ...]\n")
        cases = [
            (["-m", "0"], "*** Usage error: --mx_req CONCURRENT must be >= 1\n", ""),
            (["-l", "0"], "*** Usage error: --limit N must be >= 1\n", ""),
            (["-s", "NOPE"], "*** Usage error: --server LABEL must be one of "
                             "DELAY, ERROR, LOCAL, REMOTE\n", ""),
            (["A1"], "*** Usage error: each CC argument must be A to Z or AA to ZZ.\n", ""),
            (["ABC"], "*** Usage error: each CC argument must be A to Z or AA to ZZ.\n", ""),
            (["-l", "x"], "", "flags2_threadpool: error: argument -l/--limit: "
                              "invalid int value: 'x'\n"),
            (["-m"], "", "flags2_threadpool: error: argument -m/--max_req: "
                         "expected one argument\n"),
            (["--bogus"], "", "flags2_threadpool: error: unrecognized arguments: --bogus\n"),
            (["-q"], "", "flags2_threadpool: error: unrecognized arguments: -q\n"),
        ]
        for args, out, err in cases:
            p = run("flags2_threadpool", *args, env=self.env, cwd=self.cwd)
            self.assertEqual(p.returncode, 2, args)
            if out:
                self.assertEqual(p.stdout, out + usage, args)
            else:
                self.assertEqual(p.stderr, usage + err, args)
            self.assertFalse(os.path.exists(os.path.join(self.cwd, "downloaded")))
        p = run("flags2_asyncio", "-h", cwd=self.cwd)
        self.assertEqual(p.returncode, 0)
        self.assertIn("maximum concurrent requests (default=5)", p.stdout)
        # abbreviations, clusters and = work as in argparse
        p = self.flags2("flags2_sequential", "--lim=2", "-vs", "local", "--max", "1")
        self.assertIn("BD OK\nBR OK\n", p.stdout)

    def test_io_sites_in_every_mode(self):
        sizes = {"cn": len(flag_bytes("cn")), "br": len(flag_bytes("br"))}
        for mode in ("sequential", "threads", "asyncio", "processes"):
            p = run("io_sites", "--mode", mode, env=self.env, cwd=self.cwd)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            reads = re.findall(r"^Read (\d+) bytes from "
                               r"http://localhost:\d+/flags/(\w\w)/\w\w\.gif$",
                               p.stdout, re.M)
            self.assertEqual(len(reads), 100, mode)
            for n, cc in reads:
                self.assertEqual(int(n), sizes[cc])
            self.assertRegex(p.stdout, r"\nExecution time: \d+\.\d\ds\n$")
        p = run("io_sites", "--mode", "x", env=self.env, cwd=self.cwd)
        self.assertEqual(p.returncode, 2)

    def test_flags2_all_uses_the_codes_present(self):
        present = sorted(n[:2].upper() for n in os.listdir(FLAGS_DIR)
                         if re.match(r"^[a-z]{2}\.gif$", n))
        p = self.flags2("flags2_asyncio", "-a", "-m", "100")
        self.assertIn("Searching for %d flags: from %s to %s" %
                      (len(present), present[0], present[-1]), p.stdout)
        self.assertIn("%3d flags downloaded." % len(present), p.stdout)
        with open(os.path.join(self.cwd, "country_codes.txt"), "w") as f:
            f.write("BR CN\nFR\n")
        p = self.flags2("flags2_threadpool", "-a")
        self.assertIn("Searching for 3 flags: BR, CN, FR", p.stdout)


class InterruptTest(unittest.TestCase):
    """SIGINT mid-run: the report still prints, no partial file is left."""

    def check(self, prog, *args):
        srv = Server("--delay", "1")
        cwd = tempfile.mkdtemp()
        try:
            e = dict(os.environ, FLAGS_LOCAL_PORT=str(srv.port))
            p = subprocess.Popen([os.path.join(APPS, prog), "-l", "12", *args],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=e, cwd=cwd)
            # mid-run for sure: the server has seen at least 3 requests
            self.assertTrue(srv.wait_lines(lambda l: "delay:" in l, 3))
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=SOON)
            self.assertEqual(p.returncode, 0, err)
            self.assertIn("Elapsed time:", out)
            m = re.search(r"\n *(\d+) flags? downloaded\.\n", out)
            self.assertTrue(m, out)
            self.assertLess(int(m.group(1)), 12)
            names = os.listdir(os.path.join(cwd, "downloaded"))
            self.assertEqual(len(names), int(m.group(1)), names)
            for n in names:
                self.assertRegex(n, r"^[A-Z]{2}\.gif$")
                with open(os.path.join(cwd, "downloaded", n), "rb") as f:
                    self.assertEqual(f.read(), flag_bytes(n[:2]))
        finally:
            srv.stop()
            shutil.rmtree(cwd)

    def test_sequential(self):
        self.check("flags2_sequential")

    def test_threadpool(self):
        self.check("flags2_threadpool", "-m", "3")

    def test_asyncio(self):
        self.check("flags2_asyncio", "-m", "3")


class PythonServerTest(unittest.TestCase):
    """The downloaders against Python's http.server (the book's LOCAL)."""

    def test_downloaders_against_http_server(self):
        root = tempfile.mkdtemp()
        cwd = tempfile.mkdtemp()
        for cc in POP20:
            d = os.path.join(root, "flags", cc.lower())
            os.makedirs(d)
            shutil.copy(os.path.join(FLAGS_DIR, cc.lower() + ".gif"), d)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        srv = subprocess.Popen(["/usr/bin/python3", "-m", "http.server", "--bind",
                                "127.0.0.1", "-d", root, str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + SOON
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            e = {"FLAGS_LOCAL_PORT": str(port)}
            for prog, args in (("flags2_asyncio", ["-m", "20", "BD", "BR", "ZZ"]),
                               ("flags2_threadpool", ["-l", "20"]),
                               ("flags_asyncio", [])):
                p = run(prog, *args, env=e, cwd=cwd)
                self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                if prog == "flags2_asyncio":
                    self.assertIn("  2 flags downloaded.\n  1 not found.\n", p.stdout)
            for cc in POP20:
                with open(os.path.join(cwd, "downloaded", cc + ".gif"), "rb") as f:
                    self.assertEqual(f.read(), flag_bytes(cc))
        finally:
            srv.terminate()
            srv.wait()
            shutil.rmtree(root)
            shutil.rmtree(cwd)


if __name__ == "__main__":
    APPS = os.path.abspath(sys.argv[1])
    unittest.main(argv=[sys.argv[0], *sys.argv[2:]], verbosity=2)
