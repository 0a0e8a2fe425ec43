"""Restart safety and lifecycle timers: boxes outlive the daemon (even kill -9), are found again,
and auto-stop, auto-delete and ephemeral boxes work across restarts."""

import glob
import ipaddress
import os
import re
import signal
import subprocess
import time
import unittest

from daemon import DaemonTestCase, q
from pitbox_test import CGROUP_PARENT, fnv1a


def kill_box_from_host(box_id):
    """Kills every process of a box, as if it had crashed while nobody watched."""
    for procs in glob.glob("/sys/fs/cgroup/*/%s/%s/cgroup.procs" % (CGROUP_PARENT, box_id)):
        with open(procs) as f:
            for pid in f.read().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


class LifecycleTestCase(DaemonTestCase):
    def wait_state(self, box, state, timeout=15):
        """Waits for sandbox id `box` to be in `state` (404: gone). Watches through the list,
        since a call on the sandbox itself would count as activity."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            items = self.ok("GET", "/v1/sandboxes?limit=1000")["items"]
            got = next((s["state"] for s in items if s["id"] == box), 404)
            if got == state:
                return
            time.sleep(0.1)
        self.fail("%s did not become %s (is %s)" % (box, state, got))


class RestartTest(LifecycleTestCase):
    def test_kill_9_leaves_boxes_running_and_a_restart_finds_them(self):
        self.create(name="survivor")
        self.create(name="casualty")
        self.create(name="resting")
        self.ok("POST", "/v1/sandboxes/resting/stop")
        self.sh("survivor", "echo before > /root/state")
        session = self.ok("POST", "/v1/sandboxes/survivor/sessions",
                          {"shell": "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1;"
                                    " done"}, status=201)
        casualty = self.ok("GET", "/v1/sandboxes/casualty")["id"]

        self.daemon.kill9()
        # The boxes run on without the daemon.
        procs = glob.glob("/sys/fs/cgroup/pids/%s/*/cgroup.procs" % CGROUP_PARENT)
        self.assertGreaterEqual(len(procs), 2)
        kill_box_from_host(casualty)
        time.sleep(0.3)

        self.daemon.start()
        sb = self.ok("GET", "/v1/sandboxes/survivor")
        self.assertEqual(sb["state"], "started")
        self.assertEqual(self.sh("survivor", "cat /root/state")["stdout"], "before\n")
        # The background session is followed again; its output carries on.
        s = self.ok("GET", "/v1/sandboxes/survivor/sessions/" + session["id"])
        self.assertEqual(s["state"], "running")
        base = "/v1/sandboxes/survivor/sessions/" + session["id"]
        deadline = time.time() + 10
        while b"tick" not in self.api("GET", base + "/logs").body and time.time() < deadline:
            time.sleep(0.1)
        self.assertIn(b"tick", self.api("GET", base + "/logs").body)
        self.assertEqual(self.api("POST", base + "/kill", {"signal": 9}).status, 204)
        # The box that died meanwhile is stopped, and starts again on its files.
        self.assertEqual(self.ok("GET", "/v1/sandboxes/casualty")["state"], "stopped")
        self.assertEqual(self.ok("POST", "/v1/sandboxes/casualty/start")["state"], "started")
        self.assertEqual(self.ok("GET", "/v1/sandboxes/resting")["state"], "stopped")
        self.assertEqual(len(self.ok("GET", "/v1/sandboxes")["items"]), 3)

    def test_kill_9_leaves_no_network_behind(self):
        tag = fnv1a(self.env.state)[:4]
        first = int(ipaddress.IPv4Address("10.88.0.2"))  # the default range's first box

        def slot(sb):
            return int(ipaddress.IPv4Address(sb["network"]["address"])) - first

        def links():
            out = subprocess.run(["ip", "-o", "link"], check=True, capture_output=True,
                                 text=True).stdout
            return {int(n) for n in re.findall(r"^\d+: pb%s-(\d+)[@:]" % tag, out, re.M)}

        def chains():
            out = subprocess.run(["nft", "list", "table", "inet", "pitbox_" + tag],
                                 capture_output=True, text=True).stdout
            return {int(n) for n in re.findall(r"chain box_(\d+)", out)}

        survivor = self.create(name="net-survivor")
        casualty = self.create(name="net-casualty")
        self.assertTrue({slot(survivor), slot(casualty)} <= links() & chains())
        self.daemon.kill9()
        kill_box_from_host(casualty["id"])
        time.sleep(0.3)
        # The namespaces the daemon made ahead went with it, the dead box's with its last
        # process: links are left only for boxes that run (whose rules stay in force).
        self.assertIn(slot(survivor), links())
        self.assertNotIn(slot(casualty), links())
        self.assertLessEqual(links(), chains())
        self.daemon.start()
        self.assertEqual(self.ok("GET", "/v1/sandboxes/net-casualty")["state"], "stopped")
        # The table is built afresh: no rules for the dead box, none without a link; the
        # survivor keeps its address, link and rules.
        self.assertNotIn(slot(casualty), chains())
        self.assertLessEqual(chains(), links())
        self.assertEqual(self.ok("GET", "/v1/sandboxes/net-survivor")["network"]["address"],
                         survivor["network"]["address"])
        self.assertIn(slot(survivor), chains())
        # The dead one starts again with a network.
        again = self.ok("POST", "/v1/sandboxes/net-casualty/start")
        self.assertIn(slot(again), links() & chains())

    def test_sigterm_detaches_and_a_restart_reattaches(self):
        self.create(name="calm")
        self.sh("calm", "sleep 1000 >/dev/null 2>&1 &")
        self.daemon.stop(signal.SIGTERM)
        self.assertEqual(self.daemon.proc.returncode, 0)
        self.daemon.start()
        r = self.sh("calm", "ps -e -o comm= | grep -c sleep")
        self.assertEqual(r["stdout"], "1\n")

    def test_second_daemon_on_the_same_state_is_refused(self):
        from daemon import Daemon
        second = Daemon(self.env)
        with self.assertRaises(AssertionError) as ctx:
            second.start(timeout=10)
        self.assertIn("another pitbox serve", str(ctx.exception))


class TimersTest(LifecycleTestCase):
    def test_auto_stop_after_idle_minutes_and_activity_keeps_it(self):
        idle = self.create(name="idle", auto_stop_minutes=0.03)  # 1.8 s
        busy = self.create(name="busy", auto_stop_minutes=0.03)
        deadline = time.time() + 3.5
        while time.time() < deadline:
            self.exec("busy", "true")
            time.sleep(0.3)
        self.wait_state(idle["id"], "stopped", timeout=5)
        self.assertEqual(self.ok("GET", "/v1/sandboxes/busy")["state"], "started")
        self.wait_state(busy["id"], "stopped", timeout=8)
        audit = self.ok("GET", "/v1/audit" + q(limit=20))["items"]
        self.assertTrue(any("auto-stop" in e["action"] and e["target"] == idle["id"]
                            for e in audit), audit)

    def test_auto_delete_after_stopping_and_ephemeral(self):
        sb = self.create(auto_delete_minutes=0.02)
        eph = self.create(ephemeral=True, auto_stop_minutes=0.02)
        self.ok("POST", "/v1/sandboxes/%s/stop" % sb["id"])
        self.wait_state(sb["id"], 404, timeout=8)
        self.wait_state(eph["id"], 404, timeout=8)

    def test_timers_survive_a_restart(self):
        sb = self.create(auto_stop_minutes=0.05)  # 3 s
        self.daemon.kill9()
        time.sleep(0.5)
        self.daemon.start()
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + sb["id"])["state"], "started")
        self.wait_state(sb["id"], "stopped", timeout=10)

    def test_bad_timer_values(self):
        for body in ({"auto_stop_minutes": -1}, {"auto_delete_minutes": "soon"},
                     {"ephemeral": "yes"}):
            r = self.api("POST", "/v1/sandboxes", body)
            self.assertEqual(r.status, 400, body)
            self.assertIn(list(body)[0], r.json()["error"]["message"])


if __name__ == "__main__":
    unittest.main()
