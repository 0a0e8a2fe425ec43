"""A box's state: pause and resume, resize, snapshots and rollback, fork, archive. The same
suite runs on each storage driver (overlay here, btrfs in test_state_btrfs.py)."""

import glob
import os
import re
import subprocess
import time
import unittest

from daemon import Daemon, DaemonTestCase

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /counter; sleep 0.05; done"


def cgroup_file(box, controller, name):
    paths = glob.glob("/sys/fs/cgroup/%s/*/%s/%s" % (controller, box, name))
    return paths[0] if paths else None


def read(path):
    with open(path) as f:
        return f.read().strip()


class StateTestCase(DaemonTestCase):
    def boxes_dir(self):
        return os.path.join(self.env.state, self.storage_root, "boxes")

    def snapshots_dir(self):
        return os.path.join(self.env.state, self.storage_root, "snapshots")

    def upper(self, box):
        """The box's writable layer as the host sees it."""
        return os.path.join(self.boxes_dir(), box, "upper")

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

    def test_operations_are_measured(self):
        box = self.create()["id"]
        self.ok("POST", "/v1/sandboxes/%s/pause" % box)
        self.ok("POST", "/v1/sandboxes/%s/resume" % box)
        text = self.api("GET", "/metrics").body.decode()
        for op in ("pause", "resume"):
            count = re.search(r'^pitbox_sandbox_operation_seconds_count\{op="%s"\} (\d+)$' % op,
                              text, re.M)
            self.assertTrue(count and int(count.group(1)) >= 1, (op, text[-2000:]))
        self.assertIn('pitbox_sandboxes{state="paused"}', text)

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



class SnapshotForkTest(StateTestCase):
    def snapshot(self, box, name=None, status=201):
        return self.ok("POST", "/v1/sandboxes/%s/snapshots" % box,
                       {"name": name} if name else {}, status=status)

    def test_snapshot_new_box_and_rollback(self):
        box = self.create(name="snapper")["id"]
        self.sh(box, "mkdir -p /work && echo before > /work/a && ln -s a /work/link && "
                     "chmod 0741 /work/a && chown 1234:5678 /work/a && rm -f /etc/motd")
        snap = self.snapshot(box, "snap-one")
        self.assertEqual((snap["name"], snap["sandbox_id"]), ("snap-one", box))
        self.sh(box, "echo after > /work/b && echo changed > /work/a")

        # A box made from the snapshot has the files of before, not those of after.
        new = self.create(snapshot="snap-one")
        self.assertEqual(new["snapshot"], snap["id"])
        r = self.sh(new["id"], "cat /work/a; ls /work; stat -c '%a %u %g' /work/a; "
                               "readlink /work/link; test -e /etc/motd || echo gone")
        self.assertEqual(r["stdout"], "before\na\nlink\n741 1234 5678\na\ngone\n")

        # Listed, by sandbox and in all; found by name and id.
        ids = [s["id"] for s in self.ok("GET", "/v1/sandboxes/%s/snapshots" % box)["items"]]
        self.assertEqual(ids, [snap["id"]])
        self.assertEqual(self.ok("GET", "/v1/snapshots/snap-one")["id"], snap["id"])
        self.assertIn(snap["id"], [s["id"] for s in self.ok("GET", "/v1/snapshots")["items"]])

        # Rollback: exactly the files of the snapshot, the box running again.
        restored = self.ok("POST", "/v1/sandboxes/%s/restore" % box, {"snapshot": "snap-one"})
        self.assertEqual(restored["state"], "started")
        r = self.sh(box, "cat /work/a; ls /work; test -e /etc/motd || echo gone")
        self.assertEqual(r["stdout"], "before\na\nlink\ngone\n")

        # A name that exists; a snapshot of another box; a deleted one.
        r = self.api("POST", "/v1/sandboxes/%s/snapshots" % box, {"name": "snap-one"})
        self.assertEqual((r.status, r.error_code), (409, "conflict"), r)
        r = self.api("POST", "/v1/sandboxes/%s/restore" % new["id"], {"snapshot": "snap-one"})
        self.assertEqual((r.status, r.error_code), (409, "conflict"), r)
        self.assertEqual(self.api("DELETE", "/v1/snapshots/snap-one").status, 204)
        self.assertEqual(self.api("GET", "/v1/snapshots/snap-one").status, 404)
        r = self.api("POST", "/v1/sandboxes", {"snapshot": "snap-one"})
        self.assertEqual((r.status, r.error_code), (404, "not_found"), r)
        self.assertEqual(os.listdir(self.snapshots_dir()), [])

    def test_a_snapshot_keeps_its_image(self):
        box = self.create(image="busybox")["id"]
        snap = self.snapshot(box)
        self.addCleanup(self.api, "DELETE", "/v1/snapshots/" + snap["id"])
        self.assertEqual(self.api("DELETE", "/v1/sandboxes/" + box).status, 204)
        r = self.api("DELETE", "/v1/images/busybox")
        self.assertEqual((r.status, r.error_code), (409, "conflict"), r)
        self.assertIn(snap["id"], r.json()["error"]["message"])

    def test_fork_into_independent_boxes(self):
        parent = self.create(labels={"team": "a"})["id"]
        self.ok("POST", "/v1/sandboxes/%s/sessions" % parent, {"shell": COUNTER}, status=201)
        self.sh(parent, "echo shared > /shared")
        r = self.ok("POST", "/v1/sandboxes/%s/fork" % parent,
                    {"count": 3, "labels": {"team": "b"}}, status=201)
        kids = [k["id"] for k in r["items"]]
        self.assertEqual(len(set(kids)), 3)
        for k in r["items"]:
            self.assertEqual((k["state"], k["forked_from"], k["labels"]),
                             ("started", parent, {"team": "b"}))
        self.assertEqual(sorted(self.ok("GET", "/v1/sandboxes/" + parent)["children"]),
                         sorted(kids))
        # The parent kept running; each box writes only into itself.
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + parent)["state"], "started")
        self.wait_counter(parent, self.counter(parent))
        for i, k in enumerate(kids):
            self.assertEqual(self.exec(k, "cat", "/shared")["stdout"], "shared\n")
            self.sh(k, "echo %d > /mine" % i)
        self.sh(parent, "echo parent > /mine")
        for i, k in enumerate(kids):
            self.assertEqual(self.exec(k, "cat", "/mine")["stdout"], "%d\n" % i)
        self.assertEqual(self.exec(parent, "cat", "/mine")["stdout"], "parent\n")
        # Named children; no fork snapshot is left behind.
        r = self.ok("POST", "/v1/sandboxes/%s/fork" % parent, {"names": ["left", "right"]},
                    status=201)
        self.assertEqual([k["name"] for k in r["items"]], ["left", "right"])
        self.assertEqual(os.listdir(self.snapshots_dir()), [])

    def test_bad_forks_harm_nothing(self):
        parent = self.create(name="forkee")["id"]
        ids = lambda: [b["id"] for b in self.ok("GET", "/v1/sandboxes?limit=1000")["items"]]
        before = ids()
        for body, status in (({"count": 0}, 400), ({"count": 101}, 400), ({"count": "2"}, 400),
                             ({"names": ["forkee"]}, 409), ({"names": ["x", "x"]}, 409),
                             ({"names": ["Bad Name"]}, 400), ({"count": 2, "names": ["a"]}, 400),
                             ({"colour": 1}, 400)):
            r = self.api("POST", "/v1/sandboxes/%s/fork" % parent, body)
            self.assertEqual(r.status, status, (body, r))
        self.assertEqual(ids(), before)
        self.assertEqual(self.exec(parent, "true")["exit_code"], 0)
        # An archived box cannot be forked or snapshotted.
        self.ok("POST", "/v1/sandboxes/%s/stop" % parent)
        self.ok("POST", "/v1/sandboxes/%s/archive" % parent)
        r = self.api("POST", "/v1/sandboxes/%s/fork" % parent, {"count": 2})
        self.assertEqual((r.status, r.error_code), (409, "conflict"), r)
        self.assertEqual(self.api("POST", "/v1/sandboxes/%s/snapshots" % parent, {}).status, 409)
        self.assertEqual(ids(), before)

    def test_archive_and_bring_back(self):
        box = self.create()["id"]
        self.sh(box, "mkdir -p /data/sub && echo hello > /data/f && chmod 0604 /data/f && "
                     "chown 42:43 /data/f && ln -s f /data/link && ln /data/f /data/hard && "
                     "mkfifo /data/fifo && rm -f /etc/motd && mkdir -p /etc/opaque")
        self.ok("POST", "/v1/sandboxes/%s/stop" % box)
        archived = self.ok("POST", "/v1/sandboxes/%s/archive" % box)
        self.assertEqual(archived["state"], "archived")
        self.assertFalse(os.path.exists(os.path.join(self.boxes_dir(), box, "upper")))
        self.assertTrue(os.path.exists(os.path.join(self.env.state, "archives",
                                                    box + ".tar.zst")))
        r = self.api("POST", "/v1/sandboxes/%s/exec" % box, {"cmd": ["true"]})
        self.assertEqual(r.status, 409, r)
        started = self.ok("POST", "/v1/sandboxes/%s/start" % box)
        self.assertEqual(started["state"], "started")
        r = self.sh(box, "cat /data/f; stat -c '%a %u %g %h' /data/f; readlink /data/link; "
                         "test -p /data/fifo && echo fifo; test -e /etc/motd || echo gone")
        self.assertEqual(r["stdout"], "hello\n604 42 43 2\nf\nfifo\ngone\n")
        self.assertFalse(os.path.exists(os.path.join(self.env.state, "archives",
                                                     box + ".tar.zst")))
        # Only a stopped box is archived.
        r = self.api("POST", "/v1/sandboxes/%s/archive" % box)
        self.assertEqual((r.status, r.error_code), (409, "conflict"), r)

    def test_auto_archive(self):
        box = self.create(auto_archive_minutes=0.01)["id"]  # 0.6 s after it stops
        self.sh(box, "echo later > /later")
        self.ok("POST", "/v1/sandboxes/%s/stop" % box)
        deadline = time.time() + 15
        while self.ok("GET", "/v1/sandboxes/" + box)["state"] != "archived":
            self.assertLess(time.time(), deadline, "not archived")
            time.sleep(0.1)
        self.ok("POST", "/v1/sandboxes/%s/start" % box)
        self.assertEqual(self.exec(box, "cat", "/later")["stdout"], "later\n")

    def test_snapshots_survive_a_restart(self):
        box = self.create()["id"]
        self.sh(box, "echo kept > /kept")
        snap = self.snapshot(box, "kept-snap")
        archived = self.create()["id"]
        self.sh(archived, "echo packed > /packed")
        self.ok("POST", "/v1/sandboxes/%s/stop" % archived)
        self.ok("POST", "/v1/sandboxes/%s/archive" % archived)
        self.daemon.stop()
        self.daemon.start()
        self.assertEqual(self.ok("GET", "/v1/snapshots/kept-snap")["id"], snap["id"])
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + archived)["state"], "archived")
        self.ok("POST", "/v1/sandboxes/%s/start" % archived)
        self.assertEqual(self.exec(archived, "cat", "/packed")["stdout"], "packed\n")
        new = self.create(snapshot=snap["id"])["id"]
        self.assertEqual(self.exec(new, "cat", "/kept")["stdout"], "kept\n")
        self.api("DELETE", "/v1/snapshots/" + snap["id"])



class CliStateTest(StateTestCase):
    """The issue's agent, from the CLI: create, install something, snapshot, fork into 10, a
    different command in each, roll one back, pause and resume one, archive one and bring it
    back, resize one."""

    def cli(self, *args):
        r = self.pitbox(*args)
        self.assertEqual(r.returncode, 0, (args, r.stderr))
        return r.stdout.decode()

    def test_the_agent_of_the_issue(self):
        self.env.env["PITBOX_API_URL"] = self.daemon.url
        box = self.cli("create", "--name", "agent").strip()
        self.cli("exec", "agent", "--", "sh", "-c", "mkdir -p /opt/tool && echo v1 > /opt/tool/v")
        snap_id, snap_name = self.cli("snapshot", "agent", "--name", "installed").split()
        self.assertEqual(snap_name, "installed")
        self.assertIn(snap_id, self.cli("snapshot", "ls", "agent"))
        kids = self.cli("fork", "agent", "-n", "10").split()
        self.assertEqual(len(kids), 10)
        for i, k in enumerate(kids):
            self.cli("exec", k, "--", "sh", "-c", "echo %d > /opt/tool/mine" % i)
        for i, k in enumerate(kids):
            self.assertEqual(self.cli("exec", k, "--", "cat", "/opt/tool/v", "/opt/tool/mine"),
                             "v1\n%d\n" % i)
        # Roll the parent back after a change.
        self.cli("exec", "agent", "--", "sh", "-c", "rm -rf /opt/tool")
        self.cli("restore", "agent", "installed")
        self.assertEqual(self.cli("exec", "agent", "--", "cat", "/opt/tool/v"), "v1\n")
        # Pause and resume one.
        self.cli("pause", kids[0])
        r = self.pitbox("exec", kids[0], "--", "true")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"paused", r.stderr)
        self.cli("resume", kids[0])
        self.cli("exec", kids[0], "--", "true")
        # Archive one and bring it back.
        self.cli("stop", kids[1])
        self.cli("archive", kids[1])
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + kids[1])["state"], "archived")
        self.cli("start", kids[1])
        self.assertEqual(self.cli("exec", kids[1], "--", "cat", "/opt/tool/mine"), "1\n")
        # Resize one.
        self.cli("resize", kids[2], "--memory", "300m", "--pids", "99")
        sb = self.ok("GET", "/v1/sandboxes/" + kids[2])
        self.assertEqual((sb["memory"], sb["pids"]), (300 << 20, 99))
        # Bad input names what is wrong.
        r = self.pitbox("fork", "agent", "-n", "0")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"count", r.stderr)
        self.cli("snapshot", "rm", "installed")
        self.assertEqual(self.cli("snapshot", "ls", "-q"), "")



class ForkOutOfDiskTest(StateTestCase):
    """A fork that runs out of disk midway (box directories on a 64 MiB tmpfs): a clear error,
    no half-made child, no snapshot left, and the parent unharmed."""

    @classmethod
    def setUpClass(cls):
        super(DaemonTestCase, cls).setUpClass()  # an Env; the daemon comes below
        cls.mounts = []
        try:
            for d, size in (("boxes", "64m"), ("snapshots", "64m")):
                path = os.path.join(cls.env.state, d)
                os.makedirs(path, mode=0o700)
                subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size,
                                "pitbox-test-disk", path], check=True)
                cls.mounts.append(path)
            cls.daemon = Daemon(cls.env, pool=0).start()
        except BaseException:
            cls.unmount()
            raise

    @classmethod
    def unmount(cls):
        for m in cls.mounts:
            subprocess.run(["umount", m])

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.daemon:
                cls.daemon.stop()
        finally:
            cls.unmount()
            super(DaemonTestCase, cls).tearDownClass()

    def kept_mounts(self):
        return set(self.mounts)

    def test_a_fork_that_does_not_fit(self):
        parent = self.create()["id"]
        self.sh(parent, "head -c 20000000 /dev/urandom > /data && echo kept > /small")
        before = [b["id"] for b in self.ok("GET", "/v1/sandboxes")["items"]]
        r = self.api("POST", "/v1/sandboxes/%s/fork" % parent, {"count": 4})
        self.assertEqual((r.status, r.error_code), (429, "resource_exhausted"), r)
        self.assertIn("No space left", r.json()["error"]["message"])
        self.assertEqual([b["id"] for b in self.ok("GET", "/v1/sandboxes")["items"]], before)
        self.assertEqual(sorted(os.listdir(self.boxes_dir())), [parent])
        self.assertEqual(os.listdir(self.snapshots_dir()), [])
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + parent)["state"], "started")
        self.assertEqual(self.exec(parent, "cat", "/small")["stdout"], "kept\n")
        # One that fits still works.
        r = self.ok("POST", "/v1/sandboxes/%s/fork" % parent, {"count": 1}, status=201)
        self.assertEqual(self.exec(r["items"][0]["id"], "cat", "/small")["stdout"], "kept\n")


if __name__ == "__main__":
    unittest.main()
