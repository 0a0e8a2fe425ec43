"""Authentication, keys, the audit log, metrics, health and the OpenAPI document."""

import json
import os
import stat
import time
import unittest

from daemon import DaemonTestCase, q


class AuthTest(DaemonTestCase):
    def test_admin_key_is_kept_0600_and_printed_once(self):
        path = os.path.join(self.env.state, "keys", "admin.key")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            key = f.read().strip()
        self.assertRegex(key, r"^pb_[a-z2-7]{43}$")
        self.daemon.stop()
        self.daemon.start()
        self.assertEqual(self.daemon.admin_key, key)
        with open(self.daemon.out_path) as f:
            self.assertEqual(f.read().count(key), 1)
        # The key is stored only as a hash.
        for name in os.listdir(self.env.state):
            if name.startswith("pitbox.db"):
                with open(os.path.join(self.env.state, name), "rb") as f:
                    self.assertNotIn(key.encode(), f.read())

    def test_missing_bad_and_revoked_keys_are_401(self):
        for key, headers in [(None, {}), ("pb_" + "a" * 43, {}), (None, {"Authorization": "Basic x"}),
                             (None, {"Authorization": "Bearer"})]:
            r = self.api("GET", "/v1/sandboxes", key=key, headers=headers)
            self.assertEqual((r.status, r.error_code), (401, "unauthenticated"), (key, headers))
        self.assertEqual(self.api("GET", "/v1/health", key=None).status, 200)
        made = self.ok("POST", "/v1/keys", {"name": "ci"}, status=201)
        self.assertRegex(made["key"], r"^pb_[a-z2-7]{43}$")
        self.assertEqual(self.api("GET", "/v1/sandboxes", key=made["key"]).status, 200)
        listed = self.ok("GET", "/v1/keys")["items"]
        self.assertIn(made["id"], [k["id"] for k in listed])
        self.assertNotIn("key", json.dumps(listed).replace('"key-', ""))
        self.assertEqual(self.api("DELETE", "/v1/keys/" + made["id"]).status, 204)
        r = self.api("GET", "/v1/sandboxes", key=made["key"])
        self.assertEqual(r.status, 401)
        self.assertEqual(self.api("DELETE", "/v1/keys/" + made["id"]).status, 404)

    def test_only_the_admin_key_manages_keys_and_reads_the_audit_log(self):
        user = self.ok("POST", "/v1/keys", {"name": "agent"}, status=201)["key"]
        for method, path in [("GET", "/v1/keys"), ("POST", "/v1/keys"), ("GET", "/v1/audit")]:
            r = self.api(method, path, {"name": "x"} if method == "POST" else None, key=user)
            self.assertEqual((r.status, r.error_code), (403, "permission_denied"), path)
        # An ordinary key works the sandboxes.
        sb = self.create(name="mine")
        self.assertEqual(self.api("GET", "/v1/sandboxes/mine", key=user).status, 200)
        self.assertEqual(sb["name"], "mine")

    def test_key_bad_input(self):
        for body in ({}, {"name": ""}, {"name": 5}, {"name": "x", "admin": True}):
            self.assertEqual(self.api("POST", "/v1/keys", body).status, 400, body)


class AuditTest(DaemonTestCase):
    def test_every_mutating_call_is_recorded(self):
        user = self.ok("POST", "/v1/keys", {"name": "auditor"}, status=201)
        sb = self.create(name="audited")
        self.exec("audited", "true")
        self.api("POST", "/v1/sandboxes", {"name": "audited"})  # a clash: recorded with its error
        self.api("DELETE", "/v1/sandboxes/audited", key=user["key"])
        self.api("GET", "/v1/sandboxes")  # reads are not recorded
        entries = self.ok("GET", "/v1/audit" + q(limit=4))["items"]
        self.assertEqual([e["action"] for e in entries], [
            "DELETE /v1/sandboxes/{id}", "POST /v1/sandboxes", "POST /v1/sandboxes/{id}/exec",
            "POST /v1/sandboxes"])
        delete, clash, exe, create = entries
        self.assertEqual((delete["key_id"], delete["target"], delete["status"]),
                         (user["id"], sb["id"], 204))
        self.assertEqual((clash["status"], clash["error"]), (409, "conflict"))
        self.assertEqual((exe["target"], exe["status"]), (sb["id"], 200))
        self.assertEqual((create["target"], create["status"], create["error"]),
                         (sb["id"], 201, None))
        for e in entries:
            self.assertRegex(e["time"], r"Z$")
        # Pages, newest first.
        page = self.ok("GET", "/v1/audit" + q(limit=2))
        older = self.ok("GET", "/v1/audit" + q(limit=2, cursor=page["next_cursor"]))
        self.assertEqual([e["id"] for e in page["items"] + older["items"]],
                         [e["id"] for e in entries])


class ObservabilityTest(DaemonTestCase):
    def test_metrics(self):
        self.create(name="m1")
        self.create(name="m2")
        self.ok("POST", "/v1/sandboxes/m2/stop")
        self.exec("m1", "true")
        r = self.api("GET", "/metrics")
        self.assertEqual(r.status, 200)
        text = r.body.decode()
        self.assertIn('pitbox_sandboxes{state="started"} 1', text)
        self.assertIn('pitbox_sandboxes{state="stopped"} 1', text)
        self.assertIn("pitbox_sandbox_create_seconds_count 2", text)
        self.assertIn("pitbox_exec_seconds_count 1", text)
        self.assertRegex(text, r'pitbox_sandbox_memory_bytes\{id="sb-[a-z2-7]+",name="m1"\} \d+')
        self.assertRegex(text, r'pitbox_sandbox_cpu_seconds_total\{id="sb-[a-z2-7]+",name="m1"\}')
        self.assertRegex(text, r'pitbox_http_responses_total\{code="201"\} \d+')
        self.assertNotIn('name="m2"', text)  # stopped boxes use nothing
        self.assertEqual(self.api("GET", "/metrics", key=None).status, 401)

    def test_health_and_openapi(self):
        h = self.ok("GET", "/v1/health", key=None)
        self.assertEqual(h["status"], "ok")
        spec = self.ok("GET", "/v1/openapi.json")
        self.assertTrue(spec["openapi"].startswith("3."))
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        with open(os.path.join(root, "api", "openapi.json")) as f:
            self.assertEqual(spec, json.load(f))
        # docs/api.md carries the same document (make api-docs).
        with open(os.path.join(root, "docs", "api.md")) as f:
            doc = f.read()
        self.assertEqual(json.loads(doc.rsplit("```json\n", 1)[1].split("\n```", 1)[0]), spec)

    def test_structured_logs(self):
        self.api("GET", "/v1/sandboxes/nope")
        deadline = time.time() + 5
        while time.time() < deadline:  # written just after the answer
            lines = [l for l in self.daemon.log_lines() if l.get("path") == "/v1/sandboxes/nope"]
            if lines:
                break
            time.sleep(0.02)
        last = lines[-1]
        self.assertEqual((last["method"], last["status"], last["error"], last["level"]),
                         ("GET", 404, "not_found", "info"))
        self.assertIn("time", last)


if __name__ == "__main__":
    unittest.main()
