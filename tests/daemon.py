"""A real `pitbox serve` for the tests: started on a free port with its own state directory,
talked to over HTTP, killed or restarted at will, and checked for leftovers afterwards.
"""

import http.client
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse

from pitbox_test import PITBOX, PitboxTestCase


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body) if self.body else None

    @property
    def error_code(self):
        return (self.json() or {}).get("error", {}).get("code")

    def __repr__(self):
        return "<%d %s>" % (self.status, self.body[:300])


class Daemon:
    """One `pitbox serve` on the state directory of `env`."""

    # Warm boxes the test daemons keep (pitbox serve --pool): small, but on, so that every
    # test's creates go through the pool as a user's would.
    POOL = 2

    def __init__(self, env, pool=POOL, args=()):
        self.env = env
        self.pool = pool
        self.args = list(args)  # more `pitbox serve` flags
        self.proc = None
        self.port = None
        self.log_path = os.path.join(env.state, "daemon.log")  # stderr: the JSON log
        self.out_path = os.path.join(env.state, "daemon.out")  # stdout: the admin key, once

    def start(self, timeout=30):
        log = open(self.log_path, "ab")
        out = open(self.out_path, "ab")
        self.log_offset = log.tell()
        self.proc = subprocess.Popen(
            [PITBOX, "serve", "--listen", "127.0.0.1:0", "--pool", str(self.pool)] + self.args,
            stdout=out,
            stderr=log, stdin=subprocess.DEVNULL, env=self.env.env)
        log.close()
        out.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in self.log_lines():
                if line.get("msg") == "listening":
                    self.port = int(line["address"].rsplit(":", 1)[1])
                    with open(os.path.join(self.env.state, "keys", "admin.key")) as f:
                        self.admin_key = f.read().strip()
                    return self
            if self.proc.poll() is not None:
                with open(self.log_path) as f:
                    raise AssertionError("pitbox serve exited with %d: %s" % (
                        self.proc.returncode, f.read()[-2000:]))
            time.sleep(0.02)
        raise AssertionError("pitbox serve did not start listening")

    def log_lines(self):
        """The JSON log lines of the current run."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            lines = []
            for raw in f.read().splitlines():
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    pass
            return lines

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill9(self):
        self.stop(signal.SIGKILL)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def connection(self, timeout=120):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, key="admin", headers=None, raw=None,
                timeout=120):
        """One call; `body` is sent as JSON, `raw` as bytes. key=None sends no key."""
        conn = self.connection(timeout)
        h = dict(headers or {})
        if key == "admin":
            key = self.admin_key
        if key is not None:
            h["Authorization"] = "Bearer " + key
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            return Response(r.status, dict(r.getheaders()), r.read())
        finally:
            conn.close()


def q(**params):
    return "?" + urllib.parse.urlencode(params, doseq=True)


class DaemonTestCase(PitboxTestCase):
    """A daemon per test class; after every test its sandboxes are deleted and nothing of
    them may be left on the machine."""

    daemon = None
    serve_args = ()  # more `pitbox serve` flags for this class's daemon
    storage_root = ""  # where the storage driver keeps boxes/ and snapshots/ ("" = the state dir)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.daemon = Daemon(cls.env, args=cls.serve_args).start()

    @classmethod
    def tearDownClass(cls):
        if cls.daemon:
            cls.daemon.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.addCleanup(self.delete_all)

    def delete_all(self):
        if self.daemon.proc.poll() is not None:
            self.daemon.start()
        r = self.api("GET", "/v1/sandboxes?limit=1000")
        for sb in r.json()["items"]:
            d = self.api("DELETE", "/v1/sandboxes/" + sb["id"])
            self.assertIn(d.status, (204, 404), d)
        # What is left is the pool: once it is full again, exactly its boxes.
        boxes = os.path.join(self.env.state, self.storage_root, "boxes")
        deadline = time.time() + 15
        while True:
            dirs = os.listdir(boxes) if os.path.isdir(boxes) else []
            ready = self.pool_ready()
            if len(dirs) == ready == self.daemon.pool or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual((len(dirs), ready), (self.daemon.pool, self.daemon.pool),
                         "box directories left behind, or the pool not refilled: %s" % dirs)

    def kept_boxes(self):
        # The pool's boxes stay while the daemon runs (delete_all checked that they are all
        # that is left); a stopped daemon leaves none.
        if not self.daemon or not self.daemon.proc or self.daemon.proc.poll() is not None:
            return set()
        boxes = os.path.join(self.env.state, self.storage_root, "boxes")
        return set(os.listdir(boxes)) if os.path.isdir(boxes) else set()

    def pool_ready(self):
        text = self.api("GET", "/metrics").body.decode()
        return int(re.search(r"^pitbox_pool_ready (\d+)$", text, re.M).group(1))

    def api(self, method, path, body=None, **kwargs):
        return self.daemon.request(method, path, body, **kwargs)

    def ok(self, method, path, body=None, status=200, **kwargs):
        """A call that must answer `status`; its JSON."""
        r = self.api(method, path, body, **kwargs)
        self.assertEqual(r.status, status, r)
        return r.json()

    def create(self, **body):
        return self.ok("POST", "/v1/sandboxes", body, status=201)

    def exec(self, box, *cmd, **extra):
        body = dict(cmd=list(cmd), **extra)
        return self.ok("POST", "/v1/sandboxes/%s/exec" % box, body)

    def sh(self, box, script, **extra):
        return self.ok("POST", "/v1/sandboxes/%s/exec" % box, dict(shell=script, **extra))
