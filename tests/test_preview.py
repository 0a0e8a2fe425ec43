"""Preview links: a box's ports through the daemon, by host and by path; HTTP with streaming,
Server-Sent Events and WebSocket; links, cookies, expiry and revocation; clear error pages."""

import base64
import hashlib
import http.client
import os
import re
import socket
import struct
import subprocess
import time
import unittest

from daemon import DaemonTestCase
from pitbox_test import PITBOX

# Servers the box runs (the host image has python3).
SSE_SERVER = r"""
import http.server, os, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b"data: one\n\n"); self.wfile.flush()
        while not os.path.exists("/tmp/go"):
            time.sleep(0.02)
        self.wfile.write(b"data: two\n\n"); self.wfile.flush()
        self.close_connection = True
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", 8001), H).serve_forever()
"""

# Echoes a POST's body after its SHA-256; a chunked answer at /chunked; at /short, an answer
# that ends (the connection closes) before the length it announced.
BODY_SERVER = r"""
import hashlib, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        out = hashlib.sha256(body).hexdigest().encode() + b"\n" + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.end_headers()
    def do_GET(self):
        if self.path == "/hints":  # an interim answer first
            self.send_response_only(103)
            self.send_header("Link", "</a.css>; rel=preload")
            self.end_headers()
        self.send_response(200)
        if self.path == "/gzip-framed":  # a transfer coding that is not chunked
            self.send_header("Transfer-Encoding", "gzip")
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"12345")
            return
        if self.path == "/hints":
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"hinted")
            return
        if self.path == "/headers":
            out = str(self.headers).encode()
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if self.path == "/big":  # 1 GB, until the client goes
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"z" * 10**6)
            except OSError:
                pass
            self.close_connection = True
            return
        if self.path == "/short":
            self.send_header("Content-Length", "5000000")
            self.end_headers()
            self.wfile.write(b"x" * 100000)
            self.close_connection = True
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in (b"one ", b"two ", b"three"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8002), H).serve_forever()
"""

WS_SERVER = r"""
import base64, hashlib, socket, threading
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def serve(c):
    head = b""
    while b"\r\n\r\n" not in head:
        head += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")
           if l.lower().startswith(b"sec-websocket-key:")][0]
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    def read(n):
        b = b""
        while len(b) < n:
            part = c.recv(n - len(b))
            if not part:
                raise EOFError
            b += part
        return b
    try:
        while True:
            b0, b1 = read(2)
            n = b1 & 127
            mask = read(4)
            data = bytes(x ^ mask[i % 4] for i, x in enumerate(read(n)))
            if b0 & 15 == 8:
                break
            c.sendall(bytes([b0, len(data)]) + data)
    except EOFError:
        pass
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8002)); s.listen(8)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""


ECHO_SERVER = r"""
import socket, threading
def serve(c):
    c.sendall(b"hello\n")
    while True:
        data = c.recv(65536)
        if not data:
            break
        c.sendall(data)
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9000)); s.listen(8)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""


def read_until(c, done):
    """What the socket `c` gives until done(bytes so far), or until it ends (done=None)."""
    got = b""
    while done is None or not done(got):
        part = c.recv(65536)
        if not part:
            if done is None:
                return got
            raise AssertionError("the connection ended early: %r" % got)
        got += part
    return got


class PreviewTest(DaemonTestCase):
    def box(self, **body):
        sb = self.create(image="host", **body)
        self.sh(sb["id"], "mkdir -p /srv && echo 'hello from the box' > /srv/index.html")
        return sb

    def serve(self, sb, script_or_cmd, port, python=False):
        if python:
            self.sh(sb["id"], "cat > /tmp/server%d.py" % port, stdin=script_or_cmd)
            script_or_cmd = "python3 /tmp/server%d.py" % port
        self.sh(sb["id"], "cd /srv && nohup %s >/dev/null 2>&1 &" % script_or_cmd)
        for _ in range(200):
            ports = [p["port"] for p in self.ok("GET", "/v1/sandboxes/%s/ports" % sb["id"])["items"]]
            if port in ports:
                return
            time.sleep(0.05)
        self.fail("nothing listens on %d" % port)

    def get(self, path, host=None, headers=None, method="GET"):
        """A request to the daemon without an API key; (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.daemon.port, timeout=30)
        h = dict(headers or {})
        if host:
            h["Host"] = host
        conn.request(method, path, headers=h)
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), body

    def host(self, sb, port):
        return "%d-%s.localhost:%d" % (port, sb["id"], self.daemon.port)

    def link(self, sb, port, **body):
        return self.ok("POST", "/v1/sandboxes/%s/ports/%d/preview-url" % (sb["id"], port), body,
                       status=201)

    def test_a_web_server_in_the_box_through_its_preview_url(self):
        sb = self.box()
        self.serve(sb, "python3 -m http.server 8000", 8000)
        ports = self.ok("GET", "/v1/sandboxes/%s/ports" % sb["id"])["items"]
        self.assertEqual([p["port"] for p in ports], [8000])
        self.assertEqual(ports[0]["url"], "http://%s/" % self.host(sb, 8000))
        link = self.link(sb, 8000)
        # curl resolves *.localhost to loopback itself: the link as a user would open it.
        out = subprocess.run(["curl", "-sS", "-L", "-c", "-", link["url"]], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("hello from the box", out.stdout)
        self.assertIn("pitbox_preview", out.stdout)  # the cookie jar curl printed
        # By path, with the token in a header; a file of the app's by its own path.
        status, _, body = self.get("/v1/sandboxes/%s/ports/8000/proxy/index.html" % sb["id"],
                                   headers={"X-Pitbox-Preview-Token": link["token"]})
        self.assertEqual((status, body), (200, b"hello from the box\n"))
        # By name too.
        named = self.box(name="web")
        self.serve(named, "python3 -m http.server 8000", 8000)
        status, _, body = self.get("/index.html", host="8000-web.localhost",
                                   headers={"X-Pitbox-Preview-Token": self.link(named, 8000)["token"]})
        self.assertEqual((status, body), (200, b"hello from the box\n"))

    def test_bodies_both_ways_on_a_kept_connection(self):
        sb = self.box()
        self.serve(sb, BODY_SERVER, 8002, python=True)
        headers = {"Host": self.host(sb, 8002), "X-Pitbox-Preview-Token": self.link(sb, 8002)["token"]}
        conn = http.client.HTTPConnection("127.0.0.1", self.daemon.port, timeout=30)
        # Uploads and downloads larger than any buffer of the daemon's, several on one connection
        # of the client's: each body is passed on exactly, nothing of the next request with it.
        for size in (3 << 20, 10, 0, 1 << 20):
            payload = os.urandom(size)
            conn.request("POST", "/echo", body=payload, headers=headers)
            r = conn.getresponse()
            body = r.read()
            self.assertEqual(r.status, 200)
            self.assertEqual(body, hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
        # HEAD: a length, but no body to wait for; the connection goes on.
        conn.request("HEAD", "/anything", headers=headers)
        r = conn.getresponse()
        self.assertEqual((r.status, r.getheader("Content-Length"), r.read()), (200, "12345", b""))
        conn.request("GET", "/chunked", headers=headers)
        r = conn.getresponse()
        self.assertEqual((r.status, r.read()), (200, b"one two three"))
        # A client that waits for a go-ahead before its body gets one; interim answers of the
        # app reach the client before the final one.
        head = "Host: %s\r\nX-Pitbox-Preview-Token: %s\r\n" % (
            headers["Host"], headers["X-Pitbox-Preview-Token"])
        c = socket.create_connection(("127.0.0.1", self.daemon.port), 10)
        c.sendall(("POST /echo HTTP/1.1\r\n%sContent-Length: 5\r\nExpect: 100-continue\r\n\r\n" %
                   head).encode())
        self.assertEqual(c.recv(65536), b"HTTP/1.1 100 Continue\r\n\r\n")
        c.sendall(b"hello")
        echo = hashlib.sha256(b"hello").hexdigest().encode() + b"\nhello"
        got = read_until(c, lambda got: echo in got)
        self.assertTrue(got.startswith(b"HTTP/1.1 200"), got)
        # An API key that comes with a link stays with us too.
        c.sendall(("GET /headers HTTP/1.1\r\n%sAuthorization: Bearer %s\r\n\r\n" %
                   (head, self.daemon.admin_key)).encode())
        got = read_until(c, lambda got: b"X-Forwarded-Proto" in got)
        self.assertNotIn(self.daemon.admin_key.encode(), got)
        c.sendall(("GET /hints HTTP/1.1\r\n%s\r\n" % head).encode())
        got = read_until(c, lambda got: got.endswith(b"hinted"))
        self.assertTrue(got.startswith(b"HTTP/1.1 103 Early Hints\r\n"), got)
        self.assertIn(b"Link: </a.css>; rel=preload\r\n", got)
        self.assertIn(b"\r\n\r\nHTTP/1.1 200 OK\r\n", got)
        c.close()
        # Bodies another reader could frame otherwise are not passed on, either way.
        for framing in ("Transfer-Encoding: gzip\r\nContent-Length: 5\r\n",
                        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"):
            c = socket.create_connection(("127.0.0.1", self.daemon.port), 10)
            c.sendall(("POST /echo HTTP/1.1\r\n%s%s\r\n5\r\nhello\r\n0\r\n\r\n" %
                       (head, framing)).encode())
            got = read_until(c, None)
            self.assertTrue(got.startswith(b"HTTP/1.1 400"), got)
            c.close()
        status, _, body = self.get("/gzip-framed", headers=headers)
        self.assertEqual(status, 502)
        self.assertIn(b"Transfer-Encoding is not chunked", body)
        # Clients that go mid-download (closing, or resetting): the daemon carries on.
        for linger in (False, True):
            c = socket.create_connection(("127.0.0.1", self.daemon.port), 10)
            c.sendall(("GET /big HTTP/1.1\r\nHost: %s\r\nX-Pitbox-Preview-Token: %s\r\n\r\n" %
                       (headers["Host"], headers["X-Pitbox-Preview-Token"])).encode())
            self.assertTrue(c.recv(65536).startswith(b"HTTP/1.1 200"))
            if linger:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            time.sleep(0.3)
            self.assertEqual(self.ok("GET", "/v1/sandboxes/" + sb["id"])["id"], sb["id"])
        # An app that ends before the length it announced: the client's answer ends too.
        conn.request("GET", "/short", headers=headers)
        r = conn.getresponse()
        self.assertEqual(r.status, 200)
        with self.assertRaises(http.client.IncompleteRead) as cm:
            r.read()
        self.assertEqual(len(cm.exception.partial), 100000)
        conn.close()

    def test_public_ports(self):
        sb = self.box()
        self.serve(sb, BODY_SERVER, 8002, python=True)
        path = "/v1/sandboxes/%s/ports/8002/proxy/headers" % sb["id"]
        self.assertEqual(self.get("/headers", host=self.host(sb, 8002))[0], 401)
        access = self.ok("PUT", "/v1/sandboxes/%s/ports/8002/public" % sb["id"])
        self.assertEqual((access["port"], access["public"]), (8002, True))
        self.assertEqual(access["url"], "http://%s/" % self.host(sb, 8002))
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + sb["id"])["public_ports"], [8002])
        self.assertEqual([(p["port"], p["public"]) for p in
                          self.ok("GET", "/v1/sandboxes/%s/ports" % sb["id"])["items"]],
                         [(8002, True)])
        # Anyone, by host and by path; an API key sent anyway stays with us, the app's own
        # Authorization reaches it.
        status, _, body = self.get("/headers", host=self.host(sb, 8002))
        self.assertEqual(status, 200)
        status, _, body = self.get(path, headers={"Authorization": "Bearer " + self.daemon.admin_key})
        self.assertEqual(status, 200)
        self.assertNotIn(self.daemon.admin_key.encode(), body)
        status, _, body = self.get(path, headers={"Authorization": "Bearer app-secret"})
        self.assertEqual(status, 200)
        self.assertIn(b"Authorization: Bearer app-secret", body)
        # Nor anything shaped like a key (any case; unknown or revoked ones too).
        for value in ("bearer " + self.daemon.admin_key, "Bearer pb_" + "x" * 43):
            status, _, body = self.get(path, headers={"Authorization": value})
            self.assertEqual(status, 200)
            self.assertNotIn(b"Authorization", body)
        # Another port of the same box is not public.
        self.serve(sb, "python3 -m http.server 8000", 8000)
        self.assertEqual(self.get("/", host=self.host(sb, 8000))[0], 401)
        # Private again; and revoking the links makes every port private.
        self.ok("DELETE", "/v1/sandboxes/%s/ports/8002/public" % sb["id"])
        self.assertEqual(self.get(path)[0], 401)
        self.ok("PUT", "/v1/sandboxes/%s/ports/8002/public" % sb["id"])
        self.assertEqual(self.get(path)[0], 200)
        self.ok("DELETE", "/v1/sandboxes/%s/preview-urls" % sb["id"], status=204)
        self.assertEqual(self.get(path)[0], 401)
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + sb["id"])["public_ports"], [])
        # Bad input is named.
        for port in ("0", "65536", "http"):
            r = self.api("PUT", "/v1/sandboxes/%s/ports/%s/public" % (sb["id"], port))
            self.assertEqual(r.status, 400)
            self.assertEqual(r.json()["error"]["details"]["field"], "port")
        self.assertEqual(self.api("PUT", "/v1/sandboxes/nope/ports/80/public").status, 404)

    def test_previews_count_as_activity(self):
        sb = self.box(auto_stop_minutes=0.03)  # 1.8 s idle
        self.serve(sb, "python3 -m http.server 8000", 8000)
        headers = {"X-Pitbox-Preview-Token": self.link(sb, 8000)["token"]}
        deadline = time.time() + 3.5
        while time.time() < deadline:
            self.assertEqual(self.get("/index.html", host=self.host(sb, 8000), headers=headers)[0],
                             200)
            time.sleep(0.3)
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + sb["id"])["state"], "started")
        # A paused box is resumed by its preview.
        self.ok("POST", "/v1/sandboxes/%s/pause" % sb["id"])
        status, _, body = self.get("/index.html", host=self.host(sb, 8000), headers=headers)
        self.assertEqual((status, body), (200, b"hello from the box\n"))
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + sb["id"])["state"], "started")
        # Left alone, it stops (watched through the list: a call on the box is activity too).
        deadline = time.time() + 10
        while next(s["state"] for s in self.ok("GET", "/v1/sandboxes?limit=1000")["items"]
                   if s["id"] == sb["id"]) != "stopped":
            self.assertLess(time.time(), deadline, "the idle box did not stop")
            time.sleep(0.2)

    def test_the_cli(self):
        self.env.env["PITBOX_API_URL"] = self.daemon.url
        r = self.pitbox("create", "--image", "host", "--network", "none", "--name", "clibox")
        self.assertEqual(r.returncode, 0, r.stderr)
        box = r.stdout.decode().strip()
        r = self.pitbox("network", "clibox", "--deny", "198.51.100.0/24")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("policy         egress", r.stdout.decode())  # a change names it all
        self.assertIn("deny_cidrs     198.51.100.0/24", r.stdout.decode())
        r = self.pitbox("network", "clibox", "--allow", "10.0.0.300")
        self.assertEqual(r.returncode, 1)
        self.assertIn("network.allow_cidrs[0]", r.stderr.decode())
        self.sh(box, "mkdir -p /srv && echo cli > /srv/index.html")
        self.serve({"id": box}, "python3 -m http.server 8000", 8000)
        r = self.pitbox("ports", "clibox")
        self.assertIn("8000", r.stdout.decode())
        r = self.pitbox("preview", "clibox", "8000", "--expires", "60")
        self.assertEqual(r.returncode, 0, r.stderr)
        url = r.stdout.decode().strip()
        self.assertTrue(url.startswith("http://8000-%s.localhost:%d/?pitbox_token=" %
                                       (box, self.daemon.port)), url)
        # Like a browser: the cookie the link sets carries the redirect.
        out = subprocess.run(["curl", "-sSL", "-b", "", url], capture_output=True, text=True,
                             timeout=30)
        self.assertEqual(out.stdout, "cli\n", out.stderr)
        r = self.pitbox("preview", "clibox", "8000", "--public")
        self.assertEqual(r.returncode, 0, r.stderr)
        public_url = r.stdout.decode().strip()
        self.assertEqual(public_url, "http://8000-%s.localhost:%d/" % (box, self.daemon.port))
        self.assertIn("8000   yes", self.pitbox("ports", "clibox").stdout.decode())
        out = subprocess.run(["curl", "-sS", public_url], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.stdout, "cli\n", out.stderr)
        r = self.pitbox("preview", "clibox", "8000", "--public", "--private")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(self.pitbox("preview", "clibox", "8000", "--private").returncode, 0)
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", public_url],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.stdout, "401")
        self.assertEqual(self.pitbox("preview", "clibox", "8000", "--revoke").returncode, 0)
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-L", "-b", "",
                              url],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.stdout, "403")

    def test_links_cookies_expiry_and_revocation(self):
        sb = self.box()
        self.serve(sb, "python3 -m http.server 8000", 8000)
        link = self.link(sb, 8000)
        token = link["token"]
        # Opening the link: a cookie and a redirect to the address without the token.
        status, headers, _ = self.get("/index.html?a=1&pitbox_token=" + token,
                                      host=self.host(sb, 8000))
        self.assertEqual(status, 302)
        self.assertEqual(headers["location"], "/index.html?a=1")
        cookie = headers["set-cookie"].split(";")[0]
        self.assertEqual(cookie, "pitbox_preview=" + token)
        status, _, body = self.get("/index.html", host=self.host(sb, 8000),
                                   headers={"Cookie": "theme=dark; " + cookie})
        self.assertEqual((status, body), (200, b"hello from the box\n"))
        # Without anything: 401; a link of another port or a forged one: 403.
        status, _, body = self.get("/", host=self.host(sb, 8000))
        self.assertEqual(status, 401)
        self.assertIn(b"preview-url", body)
        other = self.link(sb, 9000)["token"]
        for bad in (other, token[:-1] + ("0" if token[-1] != "0" else "1"), "garbage"):
            status, _, _ = self.get("/", host=self.host(sb, 8000),
                                    headers={"X-Pitbox-Preview-Token": bad})
            self.assertEqual(status, 403, bad)
        # Expiry.
        short = self.link(sb, 8000, expires_in=1)["token"]
        time.sleep(1.2)
        status, _, body = self.get("/", host=self.host(sb, 8000),
                                   headers={"X-Pitbox-Preview-Token": short})
        self.assertEqual(status, 403)
        self.assertIn(b"expired", body)
        r = self.api("POST", "/v1/sandboxes/%s/ports/8000/preview-url" % sb["id"],
                     {"expires_in": 0})
        self.assertEqual(r.status, 400)
        self.assertIn("expires_in", r.json()["error"]["message"])
        # Revocation: every earlier link fails; new ones work.
        self.ok("DELETE", "/v1/sandboxes/%s/preview-urls" % sb["id"], status=204)
        status, _, body = self.get("/", host=self.host(sb, 8000), headers={"Cookie": cookie})
        self.assertEqual(status, 403)
        self.assertIn(b"revoked", body)
        fresh = self.link(sb, 8000)["token"]
        status, _, _ = self.get("/", host=self.host(sb, 8000),
                                headers={"X-Pitbox-Preview-Token": fresh})
        self.assertEqual(status, 200)

    def test_error_pages(self):
        sb = self.box()
        token = self.link(sb, 9999)["token"]
        status, headers, body = self.get("/", host=self.host(sb, 9999),
                                         headers={"X-Pitbox-Preview-Token": token})
        self.assertEqual(status, 502)
        self.assertTrue(headers["content-type"].startswith("text/html"))
        self.assertIn(b"Nothing listens on port 9999", body)
        status, _, body = self.get("/", host="8000-sb-nosuchbox.localhost",
                                   headers={"X-Pitbox-Preview-Token": token})
        self.assertEqual(status, 404)
        self.ok("POST", "/v1/sandboxes/%s/stop" % sb["id"])
        status, _, body = self.get("/", host=self.host(sb, 9999),
                                   headers={"X-Pitbox-Preview-Token": token})
        self.assertEqual(status, 409)
        self.assertIn(b"stopped", body)

    def open_events(self, sb):
        """The SSE server on port 8001 of the box, through a preview; (connection, response)."""
        self.serve(sb, SSE_SERVER, 8001, python=True)
        token = self.link(sb, 8001)["token"]
        conn = http.client.HTTPConnection("127.0.0.1", self.daemon.port, timeout=30)
        conn.request("GET", "/events", headers={"Host": self.host(sb, 8001),
                                                "X-Pitbox-Preview-Token": token})
        return conn, conn.getresponse()

    def test_server_sent_events_stream(self):
        sb = self.box(network="none")  # previews reach boxes without a network too
        conn, r = self.open_events(sb)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("Content-Type"), "text/event-stream")
        # The first event arrives while the app still holds the second back.
        self.assertEqual(r.readline(), b"data: one\n")
        self.assertEqual(r.readline(), b"\n")
        self.sh(sb["id"], "touch /tmp/go")
        self.assertEqual(r.readline(), b"data: two\n")
        conn.close()

    def test_websocket_echo(self):
        sb = self.box()
        self.serve(sb, WS_SERVER, 8002, python=True)
        token = self.link(sb, 8002)["token"]
        s = socket.create_connection(("127.0.0.1", self.daemon.port), 10)
        s.settimeout(10)
        key = base64.b64encode(os.urandom(16))
        s.sendall(b"GET /v1/sandboxes/%s/ports/8002/proxy/ws HTTP/1.1\r\nHost: x\r\n"
                  b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Key: %s\r\nX-Pitbox-Preview-Token: %s\r\n\r\n"
                  % (sb["id"].encode(), key, token.encode()))
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                  .digest())
        self.assertIn(b"Sec-WebSocket-Accept: " + accept, head)
        for text in (b"hello", b"again, both ways"):
            mask = os.urandom(4)
            s.sendall(bytes([0x81, 0x80 | len(text)]) + mask +
                      bytes(b ^ mask[i % 4] for i, b in enumerate(text)))
            frame = b""
            while len(frame) < 2 + len(text):
                frame += s.recv(4096)
            self.assertEqual(frame, bytes([0x81, len(text)]) + text)
        s.close()

    def test_port_forward_carries_a_tcp_stream_both_ways(self):
        sb = self.box(network="none")
        # An echo server that also speaks first, on the box's loopback only.
        self.serve(sb, ECHO_SERVER, 9000, python=True)
        self.env.env["PITBOX_API_URL"] = self.daemon.url
        p = subprocess.Popen([PITBOX, "port-forward", sb["id"], "0:9000"], env=self.env.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(p.stderr.close)
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        line = p.stderr.readline().decode()
        m = re.match(r"forwarding 127\.0\.0\.1:(\d+) -> %s:9000" % sb["id"], line)
        self.assertTrue(m, line)
        port = int(m.group(1))
        conns = [socket.create_connection(("127.0.0.1", port), 10) for _ in range(2)]
        for i, c in enumerate(conns):
            c.settimeout(10)
            self.assertEqual(c.recv(64), b"hello\n")
            payload = (b"%d" % i) * 100000  # more than one message's worth
            c.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += c.recv(65536)
            self.assertEqual(got, payload)
        for c in conns:
            c.shutdown(socket.SHUT_WR)
            self.assertEqual(c.recv(64), b"")  # the app saw the end and closed
            c.close()
        # A port nobody listens on: the connection is refused with the daemon's reason.
        q = subprocess.Popen([PITBOX, "port-forward", sb["id"], "0:9999"], env=self.env.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(q.stderr.close)
        self.addCleanup(q.wait)
        self.addCleanup(q.kill)
        port = int(re.search(r":(\d+) ->", q.stderr.readline().decode()).group(1))
        c = socket.create_connection(("127.0.0.1", port), 10)
        c.settimeout(10)
        self.assertEqual(c.recv(64), b"")
        c.close()
        self.assertIn("nothing listening on port 9999", q.stderr.readline().decode())

    def test_a_box_that_stops_mid_answer(self):
        sb = self.box()
        conn, r = self.open_events(sb)
        self.assertEqual(r.readline(), b"data: one\n")
        self.ok("POST", "/v1/sandboxes/%s/stop" % sb["id"])
        # The answer ends (the connection closes) instead of hanging.
        try:
            rest = r.read()
        except http.client.IncompleteRead as e:
            rest = e.partial
        self.assertNotIn(b"two", rest)
        conn.close()


if __name__ == "__main__":
    unittest.main()
