"""The sandboxes API: create, get, list, labels, stop, start, delete, and their bad input."""

import os
import re
import time
import unittest

from daemon import DaemonTestCase, q
from pitbox_test import CGROUP_PARENT, box_processes


class SandboxesTest(DaemonTestCase):
    def test_create_returns_a_started_sandbox_ready_to_exec(self):
        sb = self.create(name="demo", labels={"team": "search"}, env={"GREETING": "hi"},
                         cpus=0.5, memory="256m", pids=64, workdir="/work")
        self.assertRegex(sb["id"], r"^sb-[a-z2-7]{12}$")
        self.assertEqual(sb["state"], "started")
        self.assertEqual(sb["name"], "demo")
        self.assertEqual(sb["labels"], {"team": "search"})
        self.assertEqual(sb["memory"], 256 << 20)
        self.assertEqual(sb["cpus"], 0.5)
        self.assertEqual(sb["pids"], 64)
        for field in ("created_at", "started_at", "last_activity_at"):
            self.assertRegex(sb[field], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        # Ready at once: the first exec after create works, with the sandbox's env and workdir.
        r = self.sh("demo", "echo $GREETING; pwd; hostname")
        self.assertEqual(r["stdout"], "hi\n/work\ndemo\n")
        # The limits are those of the box's cgroup.
        r = self.sh(sb["id"], "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null ||"
                              " cat /proc/self/cgroup")
        self.assertEqual(r["exit_code"], 0)

    def test_get_by_id_or_name_and_list_with_filters_and_pages(self):
        made = [self.create(name="box-%d" % i, labels={"n": str(i), "kind": "odd" if i % 2 else
                                                       "even"}) for i in range(5)]
        self.assertEqual(self.ok("GET", "/v1/sandboxes/box-3")["id"], made[3]["id"])
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + made[3]["id"])["name"], "box-3")
        seen, cursor = [], None
        while True:
            page = self.ok("GET", "/v1/sandboxes" + q(limit=2, **({"cursor": cursor} if cursor
                                                                   else {})))
            self.assertLessEqual(len(page["items"]), 2)
            seen += [s["id"] for s in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        self.assertEqual(seen, [s["id"] for s in made])
        odd = self.ok("GET", "/v1/sandboxes" + q(label="kind=odd"))["items"]
        self.assertEqual([s["name"] for s in odd], ["box-1", "box-3"])
        both = self.ok("GET", "/v1/sandboxes" + q(label=["kind=odd", "n=3"]))["items"]
        self.assertEqual([s["name"] for s in both], ["box-3"])
        self.ok("POST", "/v1/sandboxes/box-0/stop")
        stopped = self.ok("GET", "/v1/sandboxes" + q(state="stopped"))["items"]
        self.assertEqual([s["name"] for s in stopped], ["box-0"])

    def test_stop_keeps_files_and_start_runs_again_on_them(self):
        sb = self.create(name="keeper")
        self.sh("keeper", "echo kept > /root/note; sleep 1000 &")
        stopped = self.ok("POST", "/v1/sandboxes/keeper/stop")
        self.assertEqual(stopped["state"], "stopped")
        self.assertIsNotNone(stopped["stopped_at"])
        r = self.api("POST", "/v1/sandboxes/keeper/exec", {"cmd": ["true"]})
        self.assertEqual((r.status, r.error_code), (409, "conflict"))
        started = self.ok("POST", "/v1/sandboxes/%s/start" % sb["id"])
        self.assertEqual(started["state"], "started")
        r = self.sh("keeper", "cat /root/note; ps -e -o comm= | grep -c sleep || true")
        self.assertEqual(r["stdout"], "kept\n0\n")
        # Starting a started sandbox and stopping a stopped one change nothing (safe to retry).
        self.assertEqual(self.ok("POST", "/v1/sandboxes/keeper/start")["state"], "started")
        self.assertEqual(self.sh("keeper", "cat /root/note")["stdout"], "kept\n")
        self.ok("POST", "/v1/sandboxes/keeper/stop")
        self.assertEqual(self.ok("POST", "/v1/sandboxes/keeper/stop")["state"], "stopped")

    def test_labels_are_replaced(self):
        self.create(name="lab", labels={"a": "1"})
        sb = self.ok("PUT", "/v1/sandboxes/lab/labels", {"labels": {"b": "2", "c": "3"}})
        self.assertEqual(sb["labels"], {"b": "2", "c": "3"})
        self.assertEqual(self.ok("GET", "/v1/sandboxes/lab")["labels"], {"b": "2", "c": "3"})
        r = self.api("PUT", "/v1/sandboxes/lab/labels", {"labels": {"b": 2}})
        self.assertEqual(r.status, 400)
        self.assertIn("b", r.json()["error"]["message"])

    def test_delete_removes_everything(self):
        sb = self.create(name="gone")
        self.sh("gone", "sleep 1000 & echo data > /root/f")
        self.assertEqual(self.api("DELETE", "/v1/sandboxes/gone").status, 204)
        self.assertEqual(self.api("GET", "/v1/sandboxes/" + sb["id"]).status, 404)
        self.assertFalse(os.path.exists(os.path.join(self.env.state, "boxes", sb["id"])))
        # The name is free again.
        self.create(name="gone")

    def test_ephemeral_sandbox_is_deleted_when_stopped(self):
        sb = self.create(ephemeral=True)
        self.ok("POST", "/v1/sandboxes/%s/stop" % sb["id"])
        self.assertEqual(self.api("GET", "/v1/sandboxes/" + sb["id"]).status, 404)

    def test_busybox_image(self):
        self.create(name="bb", image="busybox")
        r = self.exec("bb", "busybox", "echo", "tiny")
        self.assertEqual(r["stdout"], "tiny\n")


class PoolTest(DaemonTestCase):
    """Warm boxes: a create of the default image takes one, named and limited as asked."""

    def full_pool(self):
        """The ids of the pool's boxes, once it is full."""
        deadline = time.time() + 15
        boxes = os.path.join(self.env.state, "boxes")
        while time.time() < deadline:
            listed = {sb["id"] for sb in self.ok("GET", "/v1/sandboxes?limit=1000")["items"]}
            ids = set(os.listdir(boxes)) - listed
            if len(ids) == self.daemon.pool == self.pool_ready():
                return ids
            time.sleep(0.05)
        self.fail("the pool did not fill")

    def cgroup(self, box, controller, name):
        with open("/sys/fs/cgroup/%s/%s/%s/%s" % (controller, CGROUP_PARENT, box, name)) as f:
            return f.read().strip()

    def test_create_takes_a_warm_box_and_the_pool_refills(self):
        warm = self.full_pool()
        sb = self.create()
        self.assertIn(sb["id"], warm)
        self.assertEqual(self.sh(sb["id"], "hostname")["stdout"], sb["id"] + "\n")
        # Not listed while in the pool, and made again after a take (delete_all checks it too).
        self.assertNotIn(sb["id"], self.full_pool())

    def test_a_warm_box_gets_its_name_and_limits(self):
        warm = self.full_pool()
        sb = self.create(name="pooled", memory="128m", pids=40, cpus=0.5)
        self.assertIn(sb["id"], warm)
        r = self.sh("pooled", "hostname; grep pooled /etc/hosts")
        self.assertEqual(r["stdout"], "pooled\n127.0.1.1\tpooled\n")
        self.assertEqual(self.cgroup(sb["id"], "memory", "memory.limit_in_bytes"), str(128 << 20))
        self.assertEqual(self.cgroup(sb["id"], "pids", "pids.max"), "40")
        self.assertEqual(self.cgroup(sb["id"], "cpu", "cpu.cfs_quota_us"), "50000")
        # Kept when the box starts again.
        self.ok("POST", "/v1/sandboxes/pooled/stop")
        self.ok("POST", "/v1/sandboxes/pooled/start")
        self.assertEqual(self.sh("pooled", "hostname")["stdout"], "pooled\n")
        self.assertEqual(self.cgroup(sb["id"], "pids", "pids.max"), "40")

    def test_other_images_are_made_fresh(self):
        warm = self.full_pool()
        sb = self.create(image="busybox")
        self.assertNotIn(sb["id"], warm)

    def test_the_pool_goes_with_the_daemon(self):
        warm = self.full_pool()
        self.daemon.stop()
        self.assertEqual(box_processes(), [])
        self.assertEqual(os.listdir(os.path.join(self.env.state, "boxes")), [])
        # After kill -9 the pool's boxes run on; the next start removes them.
        self.daemon.start()
        warm = self.full_pool()
        self.daemon.kill9()
        self.assertEqual(len(box_processes()), self.daemon.pool)
        self.daemon.start()
        self.assertFalse(warm & self.full_pool())
        self.assertEqual(len(box_processes()), self.daemon.pool)


class SandboxBadInputTest(DaemonTestCase):
    def assert_error(self, r, status, code, mentions=None):
        self.assertEqual(r.status, status, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], code)
        self.assertTrue(err["message"])
        if mentions:
            self.assertIn(mentions, err["message"])

    def test_malformed_json_unknown_fields_and_wrong_types(self):
        r = self.api("POST", "/v1/sandboxes", raw=b"{not json")
        self.assert_error(r, 400, "invalid_argument", "JSON")
        self.assert_error(self.api("POST", "/v1/sandboxes", {"imagee": "host"}), 400,
                          "invalid_argument", "imagee")
        self.assert_error(self.api("POST", "/v1/sandboxes", {"memory": "lots"}), 400,
                          "invalid_argument", "memory")
        self.assert_error(self.api("POST", "/v1/sandboxes", {"cpus": "two"}), 400,
                          "invalid_argument", "cpus")
        self.assert_error(self.api("POST", "/v1/sandboxes", {"image": "nope"}), 404,
                          "not_found", "nope")
        self.assert_error(self.api("POST", "/v1/sandboxes", {"name": "bad name!"}), 400,
                          "invalid_argument", "name")
        self.assert_error(self.api("POST", "/v1/sandboxes", ["a list"]), 400, "invalid_argument")
        self.assert_error(self.api("GET", "/v1/sandboxes" + q(state="sleeping")), 400,
                          "invalid_argument", "sleeping")
        self.assert_error(self.api("GET", "/v1/sandboxes" + q(limit=0)), 400,
                          "invalid_argument", "limit")
        self.assert_error(self.api("GET", "/v1/sandboxes" + q(label="novalue")), 400,
                          "invalid_argument")
        # None of it made a sandbox.
        self.assertEqual(self.ok("GET", "/v1/sandboxes")["items"], [])

    def test_name_clash_is_409_and_unknown_ids_404(self):
        self.create(name="twin")
        self.assert_error(self.api("POST", "/v1/sandboxes", {"name": "twin"}), 409, "conflict",
                          "twin")
        for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/stop"), ("POST", "/start"),
                             ("POST", "/exec")]:
            r = self.api(method, "/v1/sandboxes/sb-aaaaaaaaaaaa" + path,
                         {"cmd": ["true"]} if path == "/exec" else None)
            self.assert_error(r, 404, "not_found", "sb-aaaaaaaaaaaa")

    def test_oversized_body_is_413_and_the_daemon_keeps_serving(self):
        r = self.api("POST", "/v1/sandboxes", raw=b"{" + b" " * (17 << 20) + b"}")
        self.assertEqual(r.status, 413)
        self.assertEqual(r.error_code, "invalid_argument")
        self.assertEqual(self.ok("GET", "/v1/health", key=None)["status"], "ok")

    def test_unknown_route_and_method(self):
        self.assert_error(self.api("GET", "/v1/nothing"), 404, "not_found")
        self.assertEqual(self.api("PATCH", "/v1/sandboxes").status, 405)

    def test_a_bad_request_leaves_other_sandboxes_alone(self):
        self.create(name="bystander")
        self.sh("bystander", "echo safe > /root/f")
        for body in ({"cmd": []}, {"cmd": "notalist"}, {"shell": ""}, {"cmd": ["x"], "shell": "y"},
                     {"cmd": ["true"], "timeout_ms": -1}, {"cmd": ["true"], "env": {"A": 1}}):
            self.assertEqual(self.api("POST", "/v1/sandboxes/bystander/exec", body).status, 400,
                             body)
        self.assertEqual(self.sh("bystander", "cat /root/f")["stdout"], "safe\n")


if __name__ == "__main__":
    unittest.main()
