"""Boxes' networks: what each policy lets a box reach, against test hosts in a network namespace
the test makes (never an outside address), and that nothing of a box's network is left behind.

    host --veth-- "world" namespace: 198.18.0.2 and 198.18.0.3 (HTTP servers on :8080) and
                  169.254.169.254 (a stand-in metadata service, routed there by the host)
"""

import json
import os
import re
import socket
import subprocess
import threading
import time
import unittest
import http.server

from daemon import DaemonTestCase
from pitbox_test import fnv1a

WORLD = "198.18.0.2"
OTHER = "198.18.0.3"
METADATA = "169.254.169.254"


def ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), check=check, capture_output=True, text=True)


class World:
    """A network namespace with test hosts, wired to the host; removed with everything in it."""

    def __init__(self):
        self.name = "pbt-world-%d" % os.getpid()
        self.link = "pbtw%d" % (os.getpid() % 100000)
        self.servers = []

    def __enter__(self):
        try:
            ip("netns", "add", self.name)
            ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", self.name)
            ip("addr", "add", "198.18.0.1/24", "dev", self.link)
            ip("link", "set", self.link, "up")
            ip("route", "add", METADATA + "/32", "via", WORLD)
            inside = ["ip", "netns", "exec", self.name]
            for cmd in (["ip", "link", "set", "lo", "up"],
                        ["ip", "addr", "add", WORLD + "/24", "dev", "eth0"],
                        ["ip", "addr", "add", OTHER + "/24", "dev", "eth0"],
                        ["ip", "addr", "add", METADATA + "/32", "dev", "lo"],
                        ["ip", "link", "set", "eth0", "up"],
                        ["ip", "route", "add", "default", "via", "198.18.0.1"]):
                subprocess.run(inside + cmd, check=True, capture_output=True)
            for addr in (WORLD, OTHER, METADATA):
                self.servers.append(subprocess.Popen(
                    inside + ["python3", "-c", SERVER, addr],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.servers.append(subprocess.Popen(
                inside + ["python3", "-c", DNS_SERVER, WORLD],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for addr in (WORLD, OTHER, METADATA):
                self.wait_for(addr)
        except BaseException:
            self.__exit__()
            raise
        return self

    def wait_for(self, addr):
        for _ in range(200):
            r = subprocess.run(["ip", "netns", "exec", self.name, "python3", "-c",
                                "import socket; socket.create_connection(('%s', 8080), 1)" % addr],
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.05)
        raise AssertionError("the test host %s did not start" % addr)

    def __exit__(self, *exc):
        for p in self.servers:
            p.kill()
            p.wait()
        ip("route", "del", METADATA + "/32", check=False)
        ip("link", "del", self.link, check=False)
        ip("netns", "del", self.name, check=False)


# A tiny HTTP server that answers with the address it was reached on.
SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from %s\n" % sys.argv[1]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer((sys.argv[1], 8080), H).serve_forever()
"""


# The test's DNS server: example.test and www.example.test are OTHER, other.test is WORLD.
DNS_SERVER = r"""
import socket, sys
NAMES = {"example.test": "198.18.0.3", "www.example.test": "198.18.0.3",
         "other.test": "198.18.0.2"}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
while True:
    q, peer = s.recvfrom(4096)
    at, labels = 12, []
    while q[at]:
        labels.append(q[at + 1:at + 1 + q[at]].decode().lower())
        at += 1 + q[at]
    question = q[12:at + 5]
    qtype = q[at + 1:at + 3]
    addr = NAMES.get(".".join(labels))
    if addr is None:
        s.sendto(q[:2] + b"\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00" + question, peer)
    elif qtype != b"\x00\x01":
        s.sendto(q[:2] + b"\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00" + question, peer)
    else:
        answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(addr)
        s.sendto(q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + question + answer, peer)
"""

# In a box of the host image: what http://URL/ answered, or the error.
PY_FETCH = r"""
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end="")
except Exception as e:
    print("failed:", e)
"""


class NetworkTest(DaemonTestCase):
    world = None
    serve_args = ("--dns-upstream", WORLD)

    @classmethod
    def setUpClass(cls):
        cls.world = World().__enter__()
        try:
            super().setUpClass()
        except BaseException:
            cls.world.__exit__()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.world.__exit__()
        # With no box left, the daemon took its table with it.
        NetworkTest.assert_no_rules(cls, table_gone=True)

    def tag(self):
        return fnv1a(self.env.state)[:4]

    def links(self):
        return re.findall(r"^\d+: (pb%s-\d+)[@:]" % self.tag(), ip("-o", "link").stdout, re.M)

    def ruleset(self):
        return subprocess.run(["nft", "list", "ruleset"], check=True, capture_output=True,
                              text=True).stdout

    def fetch(self, box, addr, port=8080):
        """What the box got from http://addr:port/, or None when it could not reach it."""
        # (busybox wget crashes on -T: the timeout comes from timeout)
        r = self.sh(box, "timeout 5 wget -q -O - http://%s:%d/ 2>&1" % (addr, port))
        return r["stdout"] if r["exit_code"] == 0 else None

    def box(self, network=None):
        body = {"image": "busybox"}
        if network is not None:
            body["network"] = network
        return self.create(**body)

    def test_egress_reaches_the_world_but_not_the_metadata_service(self):
        sb = self.box()  # the server's default: egress
        self.assertEqual(sb["network"]["policy"], "egress")
        self.assertTrue(sb["network"]["address"].startswith("10.88."), sb["network"])
        self.assertEqual(self.fetch(sb["id"], WORLD), "hello from %s\n" % WORLD)
        self.assertEqual(self.fetch(sb["id"], OTHER), "hello from %s\n" % OTHER)
        self.assertIsNone(self.fetch(sb["id"], METADATA))
        # The host reaches it there itself (the route is real): only the box is kept out.
        with socket.create_connection((METADATA, 8080), 3):
            pass

    def test_none_reaches_nothing(self):
        sb = self.box("none")
        self.assertEqual(sb["network"]["policy"], "none")
        self.assertIsNone(self.fetch(sb["id"], WORLD))

    def test_deny_and_allow_lists(self):
        deny = self.box({"policy": "egress", "deny_cidrs": [WORLD + "/32"]})
        self.assertIsNone(self.fetch(deny["id"], WORLD))
        self.assertEqual(self.fetch(deny["id"], OTHER), "hello from %s\n" % OTHER)
        allow = self.box({"allow_cidrs": [OTHER]})
        self.assertEqual(allow["network"]["allow_cidrs"], [OTHER + "/32"])
        self.assertIsNone(self.fetch(allow["id"], WORLD))
        self.assertEqual(self.fetch(allow["id"], OTHER), "hello from %s\n" % OTHER)
        # Metadata only when named exactly; "everything" does not include it.
        everything = self.box({"allow_cidrs": ["0.0.0.0/0"]})
        self.assertEqual(self.fetch(everything["id"], WORLD), "hello from %s\n" % WORLD)
        self.assertIsNone(self.fetch(everything["id"], METADATA))
        meta = self.box({"allow_cidrs": [METADATA + "/32"]})
        self.assertEqual(self.fetch(meta["id"], METADATA), "hello from %s\n" % METADATA)

    def test_the_host_and_other_boxes_are_out_of_reach(self):
        # A service of the host's on every address, and the pitbox API itself.
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", 0))
        listener.listen(8)
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        api_port = self.daemon.port
        a = self.box({"allow_cidrs": ["0.0.0.0/0"]})
        b = self.box()
        gateway = "10.88.0.1"
        for addr, p in ((gateway, port), ("198.18.0.1", port), (gateway, api_port),
                        ("198.18.0.1", api_port)):
            self.assertIsNone(self.fetch(a["id"], addr, p), "%s:%d" % (addr, p))
        # b serves; the host reaches it, a does not.
        self.sh(b["id"], "mkdir -p /www && echo from-b > /www/index.html && "
                         "httpd -p 8000 -h /www")
        b_addr = b["network"]["address"]
        with socket.create_connection((b_addr, 8000), 3) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = b""
            while True:
                part = s.recv(4096)
                if not part:
                    break
                answer += part
            self.assertIn(b"from-b", answer)
        self.assertIsNone(self.fetch(a["id"], b_addr, 8000))
        # Nor can a box pretend to be another: its root cannot change its address.
        r = self.sh(a["id"], "ip addr add %s/32 dev eth0" % b_addr)
        self.assertNotEqual(r["exit_code"], 0)

    def test_live_policy_change(self):
        sb = self.box()
        started = sb["started_at"]
        self.assertIsNotNone(self.fetch(sb["id"], WORLD))
        changed = self.ok("PUT", "/v1/sandboxes/%s/network" % sb["id"], "none")
        self.assertEqual(changed["network"]["policy"], "none")
        self.assertIsNone(self.fetch(sb["id"], WORLD))
        self.ok("PUT", "/v1/sandboxes/%s/network" % sb["id"], {"deny_cidrs": [OTHER]})
        self.assertIsNotNone(self.fetch(sb["id"], WORLD))
        self.assertIsNone(self.fetch(sb["id"], OTHER))
        again = self.ok("GET", "/v1/sandboxes/" + sb["id"])
        self.assertEqual(again["started_at"], started)  # not restarted
        self.assertEqual(again["network"]["deny_cidrs"], [OTHER + "/32"])
        # Kept across a stop and start.
        self.ok("POST", "/v1/sandboxes/%s/stop" % sb["id"])
        self.assertIsNone(self.ok("GET", "/v1/sandboxes/" + sb["id"])["network"]["address"])
        self.ok("POST", "/v1/sandboxes/%s/start" % sb["id"])
        self.assertIsNotNone(self.fetch(sb["id"], WORLD))
        self.assertIsNone(self.fetch(sb["id"], OTHER))

    def test_bad_policies_are_refused_by_name(self):
        cases = [
            ({"allow_cidrs": ["10.0.0.300/8"]}, "network.allow_cidrs[0]"),
            ({"deny_cidrs": ["10.0.0.1/8"]}, "has bits set past its prefix"),
            ({"allow_domains": ["exa mple.test"]}, "network.allow_domains[0]"),
            ({"allow_cidrs": ["127.0.0.1"]}, "the host itself"),
            ({"allow_cidrs": ["10.88.0.1"]}, "the host itself"),
            ({"allow_cidrs": ["10.88.3.0/24"]}, "box-to-box network"),
            ({"policy": "open"}, "network.policy"),
            ({"allow": []}, "network.allow: unknown field"),
            ("everything", "must be \"none\" or \"egress\""),
        ]
        for network, words in cases:
            r = self.api("POST", "/v1/sandboxes", {"image": "busybox", "network": network})
            self.assertEqual(r.status, 400, r)
            self.assertIn(words, r.json()["error"]["message"], network)
        sb = self.box()
        r = self.api("PUT", "/v1/sandboxes/%s/network" % sb["id"], {"allow_cidrs": ["x"]})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + sb["id"])["network"]["policy"],
                         "egress")

    def py_fetch(self, box, url):
        return self.sh(box, "python3 -c '%s' %s" % (PY_FETCH.replace("'", "'\\''"), url))["stdout"]

    def test_allow_domains_through_the_node_resolver(self):
        sb = self.create(image="host", network={"allow_domains": ["example.test"]})
        box = sb["id"]
        # Its resolver is the node's.
        self.assertEqual(self.sh(box, "cat /etc/resolv.conf")["stdout"], "nameserver 10.88.0.1\n")
        # The address is closed until the name is looked up ...
        self.assertTrue(self.py_fetch(box, "http://%s:8080/" % OTHER).startswith("failed"))
        # ... and open for its TTL once it is.
        self.assertEqual(self.py_fetch(box, "http://example.test:8080/"),
                         "hello from %s\n" % OTHER)
        self.assertEqual(self.py_fetch(box, "http://%s:8080/" % OTHER), "hello from %s\n" % OTHER)
        # Other names do not resolve; other addresses stay closed.
        r = self.sh(box, "getent hosts other.test || echo unresolved")
        self.assertEqual(r["stdout"], "unresolved\n")
        self.assertTrue(self.py_fetch(box, "http://%s:8080/" % WORLD).startswith("failed"))
        self.assertTrue(self.py_fetch(box, "http://www.example.test:8080/").startswith("failed"))
        # Over TCP too (glibc's use-vc), its address admitted alike.
        tcp = self.create(image="host", network={"allow_domains": ["example.test"]})["id"]
        self.assertTrue(self.py_fetch(tcp, "http://%s:8080/" % OTHER).startswith("failed"))
        r = self.sh(tcp, "RES_OPTIONS=use-vc getent hosts example.test")
        self.assertEqual(r["stdout"].split()[:1], [OTHER], r)
        self.assertEqual(self.py_fetch(tcp, "http://%s:8080/" % OTHER), "hello from %s\n" % OTHER)
        # A wildcard admits the names below.
        wild = self.create(image="host", network={"allow_domains": ["*.example.test"]})["id"]
        self.assertEqual(self.py_fetch(wild, "http://www.example.test:8080/"),
                         "hello from %s\n" % OTHER)
        # An egress box resolves anything; a box with policy none nothing.
        egress = self.create(image="host")["id"]
        self.assertEqual(self.sh(egress, "getent hosts other.test")["stdout"].split()[0], WORLD)
        none = self.create(image="host", network="none")["id"]
        self.assertEqual(self.sh(none, "getent hosts example.test || echo unresolved")["stdout"],
                         "unresolved\n")

    def test_box_to_box_network(self):
        team = {"policy": "none", "networks": ["team"]}
        a = self.create(image="host", name="team-a", network=team)
        b = self.create(image="host", name="team-b", network=team)
        outsider = self.create(image="host", name="outsider")
        self.sh(b["id"], "mkdir -p /srv && echo from-b > /srv/index.html && cd /srv && "
                         "(nohup python3 -m http.server 8000 >/dev/null 2>&1 &)")
        for _ in range(200):
            if self.ok("GET", "/v1/sandboxes/%s/ports" % b["id"])["items"]:
                break
            time.sleep(0.05)
        # Members reach each other by name, whatever else their policy ("none") says ...
        self.assertEqual(self.py_fetch(a["id"], "http://team-b:8000/"), "from-b\n")
        self.assertTrue(self.py_fetch(a["id"], "http://%s:8080/" % WORLD).startswith("failed"))
        # ... and nobody else does, by name or by address.
        b_addr = b["network"]["address"]
        self.assertEqual(self.sh(outsider["id"], "getent hosts team-b || echo unresolved")["stdout"],
                         "unresolved\n")
        self.assertTrue(self.py_fetch(outsider["id"], "http://%s:8000/" % b_addr)
                        .startswith("failed"))
        # Leaving the network (a live change) closes it.
        self.ok("PUT", "/v1/sandboxes/%s/network" % a["id"], "none")
        self.assertTrue(self.py_fetch(a["id"], "http://%s:8000/" % b_addr).startswith("failed"))
        r = self.api("POST", "/v1/sandboxes", {"network": {"networks": ["Bad Name"]}})
        self.assertEqual(r.status, 400)
        self.assertIn("network.networks[0]", r.json()["error"]["message"])

    def test_nothing_is_left_when_boxes_go(self):
        boxes = [self.box()["id"] for _ in range(3)]
        self.assertGreaterEqual(len(self.links()), 3)
        for b in boxes:
            self.ok("DELETE", "/v1/sandboxes/" + b, status=204)
        self.assert_no_rules(self)

    @staticmethod
    def assert_no_rules(case, table_gone=False):
        tag = fnv1a(case.env.state)[:4]
        rules = subprocess.run(["nft", "list", "ruleset"], check=True, capture_output=True,
                               text=True).stdout
        if table_gone:
            assert "pitbox_" + tag not in rules, rules
            return
        # Only the pool's warm boxes keep rules (and links) while the daemon runs.
        chains = re.findall(r"chain box_(\d+)", rules.split("table inet pitbox_" + tag, 1)[-1]
                            .split("\ntable ", 1)[0])
        case.assertLessEqual(len(chains), case.daemon.pool, rules)


if __name__ == "__main__":
    unittest.main()
