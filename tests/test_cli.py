"""The CLI against a real daemon: create, ls, inspect, exec, shell, cp, rm, stop, start, label,
logs and keys, as a person or a script would use them."""

import json
import os
import subprocess
import tempfile
import unittest

from daemon import DaemonTestCase
from pitbox_test import PITBOX, Pty


class CliTest(DaemonTestCase):
    def cli(self, *args, input=None):
        return self.pitbox(*args, input=input)

    def setUp(self):
        super().setUp()
        # The CLI finds the daemon through PITBOX_API_URL and the key through the state dir.
        self.env.env["PITBOX_API_URL"] = self.daemon.url

    def test_the_demo_from_the_issue(self):
        r = self.cli("create", "--name", "demo")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.decode(), r"^sb-[a-z2-7]{12}\n$")
        r = self.cli("exec", "demo", "--", "uname", "-a")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"Linux demo", r.stdout)
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "f")
            with open(src, "wb") as f:
                f.write(b"file contents\x00\xff")
            self.assertEqual(self.cli("cp", src, "demo:/tmp/f").returncode, 0)
            r = self.cli("exec", "demo", "--", "cat", "/tmp/f")
            self.assertEqual(r.stdout, b"file contents\x00\xff")
            back = os.path.join(tmp, "back")
            self.assertEqual(self.cli("cp", "demo:/tmp/f", back).returncode, 0)
            with open(back, "rb") as f:
                self.assertEqual(f.read(), b"file contents\x00\xff")
        shell = Pty([PITBOX, "shell", "demo"], dict(self.env.env, TERM="xterm"))
        self.addCleanup(shell.close)
        self.assertTrue(shell.expect("#"), shell.out)
        shell.write("echo in-$((2*21))-shell\n")
        self.assertTrue(shell.expect("in-42-shell"), shell.out)
        shell.write("exit 4\n")
        self.assertEqual(shell.wait(), 4)
        r = self.cli("rm", "demo")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.api("GET", "/v1/sandboxes/demo").status, 404)

    def test_exec_exit_codes_stdio_and_errors(self):
        self.cli("create", "--name", "ex")
        r = self.cli("exec", "ex", "sh", "-c", "echo out; echo err >&2; exit 9")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (9, b"out\n", b"err\n"))
        r = self.cli("exec", "-i", "ex", "--", "tr", "a-z", "A-Z", input="shout\n")
        self.assertEqual(r.stdout, b"SHOUT\n")
        r = self.cli("exec", "-e", "A=b", "-w", "/tmp", "ex", "--", "sh", "-c", "echo $A; pwd")
        self.assertEqual(r.stdout, b"b\n/tmp\n")
        r = self.cli("exec", "ex", "--", "/no/such/thing")
        self.assertEqual(r.returncode, 125)
        self.assertIn(b"/no/such/thing", r.stderr)
        r = self.cli("exec", "nosuchbox", "--", "true")
        self.assertEqual(r.returncode, 125)
        self.assertIn(b"nosuchbox", r.stderr)
        r = self.cli("exec", "--timeout", "0.3", "ex", "--", "sleep", "10")
        self.assertEqual(r.returncode, 137)

    def test_ls_inspect_label_stop_start_json(self):
        self.cli("create", "--name", "one", "--label", "team=a")
        self.cli("create", "--name", "two", "--label", "team=b", "--memory", "128m")
        r = self.cli("ls")
        lines = r.stdout.decode().splitlines()
        self.assertEqual(lines[0].split(), ["ID", "NAME", "STATE", "IMAGE", "CREATED", "LABELS"])
        self.assertEqual([l.split()[1] for l in lines[1:]], ["one", "two"])
        r = self.cli("ls", "--json", "--label", "team=b")
        items = json.loads(r.stdout)
        self.assertEqual([(s["name"], s["memory"]) for s in items], [("two", 128 << 20)])
        self.assertEqual(json.loads(self.cli("inspect", "one").stdout)["labels"], {"team": "a"})
        r = self.cli("label", "one", "x=y", "team-")
        self.assertEqual(r.stdout, b"x=y\n")
        self.assertEqual(self.cli("stop", "one", "two").returncode, 0)
        r = self.cli("ls", "-q", "--state", "stopped")
        self.assertEqual(len(r.stdout.decode().split()), 2)
        self.assertEqual(self.cli("start", "one").returncode, 0)
        r = self.cli("rm", "one", "nosuch", "two")
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"nosuch", r.stderr)
        self.assertEqual(self.ok("GET", "/v1/sandboxes")["items"], [])

    def test_bad_input_gives_one_line_and_exit_1(self):
        for args, mentions in [(["create", "--memory", "lots"], b"memory"),
                               (["create", "--image", "nope"], b"nope"),
                               (["create", "--label", "novalue"], b"novalue"),
                               (["inspect", "nosuch"], b"nosuch"),
                               (["cp", "a", "b"], b"BOX:PATH")]:
            r = self.cli(*args)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn(mentions, r.stderr, args)
            self.assertEqual(len(r.stderr.decode().strip().splitlines()), 1, r.stderr)

    def test_cp_directories_both_ways(self):
        self.cli("create", "--name", "cpd")
        with tempfile.TemporaryDirectory() as tmp:
            tree = os.path.join(tmp, "tree")
            os.makedirs(os.path.join(tree, "sub"))
            with open(os.path.join(tree, "sub", "deep.txt"), "w") as f:
                f.write("deep\n")
            os.symlink("sub/deep.txt", os.path.join(tree, "link"))
            self.assertEqual(self.cli("cp", tree, "cpd:/root/").returncode, 0)
            r = self.cli("exec", "cpd", "--", "cat", "/root/tree/link")
            self.assertEqual(r.stdout, b"deep\n")
            out = os.path.join(tmp, "out")
            r = self.cli("cp", "cpd:/root/tree", out)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(os.path.join(out, "sub", "deep.txt")) as f:
                self.assertEqual(f.read(), "deep\n")
            self.assertEqual(os.readlink(os.path.join(out, "link")), "sub/deep.txt")

    def test_background_sessions_and_logs(self):
        self.cli("create", "--name", "bg")
        r = self.cli("exec", "-d", "bg", "--", "sh", "-c", "echo first; sleep 0.5; echo last")
        sid = r.stdout.decode().strip()
        self.assertRegex(sid, r"^se-")
        r = self.cli("logs", "-f", "bg", sid)
        self.assertEqual(r.stdout, b"first\nlast\n")

    def test_keys(self):
        r = self.cli("keys", "create", "robot")
        key = r.stdout.decode().strip()
        self.assertRegex(key, r"^pb_")
        r = self.cli("keys", "ls", "--json")
        robot = [k for k in json.loads(r.stdout) if k["name"] == "robot"][0]
        env = dict(self.env.env, PITBOX_API_KEY=key)
        r = subprocess.run([PITBOX, "ls"], capture_output=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.cli("keys", "rm", robot["id"]).returncode, 0)
        r = subprocess.run([PITBOX, "ls"], capture_output=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"not valid", r.stderr)

    def test_no_daemon_is_a_clear_error(self):
        env = dict(self.env.env, PITBOX_API_URL="http://127.0.0.1:1")
        r = subprocess.run([PITBOX, "ls"], capture_output=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"pitbox serve", r.stderr)


if __name__ == "__main__":
    unittest.main()
