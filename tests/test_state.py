"""A box's state: pause and resume, resize, snapshots and rollback, fork, archive. The same
suite runs on each storage driver (overlay here, btrfs in test_state_btrfs.py)."""

import glob
import os
import time
import unittest

from daemon import DaemonTestCase

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /counter; sleep 0.05; done"


def cgroup_file(box, controller, name):
    paths = glob.glob("/sys/fs/cgroup/%s/*/%s/%s" % (controller, box, name))
    return paths[0] if paths else None


def read(path):
    with open(path) as f:
        return f.read().strip()


class StateTestCase(DaemonTestCase):
    def upper(self, box):
        """The box's writable layer as the host sees it."""
        return os.path.join(self.env.state, "boxes", box, "upper")

    def counter(self, box):
        try:
            return int(read(os.path.join(self.upper(box), "counter")))
        except (FileNotFoundError, ValueError):
            return 0

    def wait_counter(self, box, above, timeout=10):
        deadline = time.time() + timeout
        while self.counter(box) <= above:
            self.assertLess(time.time(), deadline, "the counter did not move")
            time.sleep(0.02)
        return self.counter(box)


class PauseTest(StateTestCase):
    def test_a_paused_box_keeps_its_processes_and_their_memory(self):
        box = self.create()["id"]
        self.ok("POST", "/v1/sandboxes/%s/sessions" % box, {"shell": COUNTER}, status=201)
        self.wait_counter(box, 3)

        paused = self.ok("POST", "/v1/sandboxes/%s/pause" % box)
        self.assertEqual(paused["state"], "paused")
        self.assertEqual(read(cgroup_file(box, "freezer", "freezer.state")), "FROZEN")
        at_pause = self.counter(box)
        time.sleep(0.4)
        self.assertEqual(self.counter(box), at_pause, "a paused box went on running")
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + box)["state"], "paused")
        # Pausing again is no error.
        self.assertEqual(self.ok("POST", "/v1/sandboxes/%s/pause" % box)["state"], "paused")

        # Exec and file calls are refused, naming the state, unless they ask to resume.
        for method, path, body in (("POST", "/v1/sandboxes/%s/exec" % box, {"cmd": ["true"]}),
                                   ("GET", "/v1/sandboxes/%s/files?path=/etc/hostname" % box,
                                    None)):
            r = self.api(method, path, body)
            self.assertEqual((r.status, r.error_code), (409, "conflict"), r)
            self.assertIn("paused", r.json()["error"]["message"])
        self.assertEqual(self.counter(box), at_pause)

        resumed = self.ok("POST", "/v1/sandboxes/%s/resume" % box)
        self.assertEqual(resumed["state"], "started")
        self.assertEqual(read(cgroup_file(box, "freezer", "freezer.state")), "THAWED")
        # The shell's variable went on from where it was: not started again from 1.
        after = self.wait_counter(box, at_pause)
        self.assertGreater(after, at_pause)
        self.assertLess(after, at_pause + 10)

        # auto_resume: the call resumes the box and runs.
        self.ok("POST", "/v1/sandboxes/%s/pause" % box)
        r = self.ok("POST", "/v1/sandboxes/%s/exec?auto_resume=true" % box,
                    {"shell": "cat /counter"})
        self.assertGreaterEqual(int(r["stdout"]), at_pause)
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + box)["state"], "started")

    def test_a_paused_box_stops_and_is_deleted(self):
        box = self.create()["id"]
        self.ok("POST", "/v1/sandboxes/%s/sessions" % box, {"shell": COUNTER}, status=201)
        self.ok("POST", "/v1/sandboxes/%s/pause" % box)
        self.assertEqual(self.ok("POST", "/v1/sandboxes/%s/stop" % box)["state"], "stopped")
        self.assertEqual(self.ok("POST", "/v1/sandboxes/%s/start" % box)["state"], "started")
        self.ok("POST", "/v1/sandboxes/%s/pause" % box)
        self.assertEqual(self.api("DELETE", "/v1/sandboxes/" + box).status, 204)

    def test_wrong_states(self):
        box = self.create()["id"]
        # Resuming a started box is no error (nor is pausing a paused one, above).
        self.assertEqual(self.ok("POST", "/v1/sandboxes/%s/resume" % box)["state"], "started")
        self.ok("POST", "/v1/sandboxes/%s/stop" % box)
        r = self.api("POST", "/v1/sandboxes/%s/pause" % box)
        self.assertEqual((r.status, r.error_code), (409, "conflict"), r)
        self.assertIn("stopped", r.json()["error"]["message"])
        r = self.api("POST", "/v1/sandboxes/%s/resume" % box)
        self.assertEqual((r.status, r.error_code), (409, "conflict"), r)
        self.assertIn("not paused", r.json()["error"]["message"])
        self.assertEqual(self.api("POST", "/v1/sandboxes/sb-nosuchbox00/pause").status, 404)

    def test_a_paused_box_stays_paused_across_a_daemon_restart(self):
        box = self.create()["id"]
        self.ok("POST", "/v1/sandboxes/%s/sessions" % box, {"shell": COUNTER}, status=201)
        self.wait_counter(box, 2)
        self.ok("POST", "/v1/sandboxes/%s/pause" % box)
        self.daemon.stop()
        self.daemon.start()
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + box)["state"], "paused")
        self.assertEqual(read(cgroup_file(box, "freezer", "freezer.state")), "FROZEN")
        at = self.counter(box)
        self.ok("POST", "/v1/sandboxes/%s/resume" % box)
        self.assertGreater(self.wait_counter(box, at), at)


class ResizeTest(StateTestCase):
    def test_a_running_box_gets_new_limits(self):
        box = self.create(memory="256M", cpus=0.5, pids=100)["id"]
        r = self.ok("POST", "/v1/sandboxes/%s/resize" % box,
                    {"memory": "128M", "cpus": 1, "pids": 200})
        self.assertEqual((r["memory"], r["cpus"], r["pids"]), (128 << 20, 1.0, 200))
        self.assertEqual(int(read(cgroup_file(box, "memory", "memory.limit_in_bytes"))),
                         128 << 20)
        self.assertEqual(int(read(cgroup_file(box, "pids", "pids.max"))), 200)
        self.assertEqual(int(read(cgroup_file(box, "cpu", "cpu.cfs_quota_us"))),
                         int(read(cgroup_file(box, "cpu", "cpu.cfs_period_us"))))
        # Only what is named changes.
        r = self.ok("POST", "/v1/sandboxes/%s/resize" % box, {"pids": 50})
        self.assertEqual((r["memory"], r["pids"]), (128 << 20, 50))
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + box)["pids"], 50)

    def test_memory_below_what_the_box_uses_is_refused(self):
        box = self.create(memory="256M")["id"]
        self.ok("POST", "/v1/sandboxes/%s/sessions" % box,
                {"shell": "head -c 60000000 /dev/zero > /dev/shm/fill; sleep 600"}, status=201)
        deadline = time.time() + 10
        while int(read(cgroup_file(box, "memory", "memory.usage_in_bytes"))) < 50 << 20:
            self.assertLess(time.time(), deadline)
            time.sleep(0.05)
        r = self.api("POST", "/v1/sandboxes/%s/resize" % box, {"memory": "20M"})
        self.assertEqual((r.status, r.error_code), (409, "conflict"), r)
        self.assertIn("uses", r.json()["error"]["message"])
        self.assertEqual(r.json()["error"]["details"]["field"], "memory")
        # Nothing changed.
        self.assertEqual(int(read(cgroup_file(box, "memory", "memory.limit_in_bytes"))),
                         256 << 20)
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + box)["memory"], 256 << 20)
        self.assertEqual(self.exec(box, "true")["exit_code"], 0)

    def test_a_stopped_box_takes_its_new_limits_at_start(self):
        box = self.create(memory="256M")["id"]
        self.ok("POST", "/v1/sandboxes/%s/stop" % box)
        r = self.ok("POST", "/v1/sandboxes/%s/resize" % box, {"memory": "64M", "pids": 64})
        self.assertEqual(r["state"], "stopped")
        self.ok("POST", "/v1/sandboxes/%s/start" % box)
        self.assertEqual(int(read(cgroup_file(box, "memory", "memory.limit_in_bytes"))),
                         64 << 20)
        self.assertEqual(int(read(cgroup_file(box, "pids", "pids.max"))), 64)

    def test_bad_resizes(self):
        box = self.create()["id"]
        for body, field in (({"memory": "lots"}, "memory"), ({"cpus": 0}, "cpus"),
                            ({"cpus": 1000}, "cpus"), ({"pids": 1}, "pids"),
                            ({"colour": "red"}, "colour"), ({}, None)):
            r = self.api("POST", "/v1/sandboxes/%s/resize" % box, body)
            self.assertEqual((r.status, r.error_code), (400, "invalid_argument"), (body, r))
            if field:
                self.assertIn(field, r.json()["error"]["message"])
        if not self.disk_quotas:
            r = self.api("POST", "/v1/sandboxes/%s/resize" % box, {"disk": "1G"})
            self.assertEqual((r.status, r.error_code), (400, "invalid_argument"), r)
            self.assertIn("overlay", r.json()["error"]["message"])

    disk_quotas = False


if __name__ == "__main__":
    unittest.main()
