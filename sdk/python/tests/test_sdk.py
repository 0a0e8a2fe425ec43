"""The Python SDK against a real `pitbox serve` (started once for the module, as root).

Run: PITBOX_BIN=out/bin/pitbox python3 -m unittest discover -s sdk/python/tests -v
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest
from collections.abc import Iterator
from typing import Any
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(SDK))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, SDK)

from daemon import DaemonTestCase  # noqa: E402  (the repo's tests/daemon.py)

import pitbox  # noqa: E402
from pitbox import (  # noqa: E402
    CommandError,
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Pitbox,
    PitboxConnectionError,
    PitboxError,
    Sandbox,
    Unauthenticated,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SdkTestCase(DaemonTestCase):
    """A daemon for the class (DaemonTestCase); after each test, every sandbox it made must
    have been deleted by the test itself, and nothing of any box may be left on the host."""

    pb: Pitbox

    def setUp(self) -> None:
        super().setUp()
        # Cleanups run last-registered first: this check runs after the test's own cleanups
        # (which delete its boxes) and before DaemonTestCase's sweep.
        self.addCleanup(self.assert_boxes_deleted)
        self.pb = Pitbox(self.daemon.url, self.daemon.admin_key, timeout=30)
        self.addCleanup(self.pb.close)

    def assert_boxes_deleted(self) -> None:
        left = self.api("GET", "/v1/sandboxes?limit=1000").json()["items"]
        self.assertEqual([b["id"] for b in left], [], "sandboxes the test did not delete")

    def box(self, **kwargs: Any) -> Sandbox:
        """A new sandbox, deleted (by its context manager) when the test ends."""
        return self.enterContext(self.pb.create(**kwargs))


class ClientTest(SdkTestCase):
    def test_health_needs_no_key(self) -> None:
        h = Pitbox(self.daemon.url, api_key="").health()
        self.assertEqual(h.status, "ok")
        self.assertTrue(h.version)

    def test_configuration_from_the_environment(self) -> None:
        clean = {k: v for k, v in os.environ.items()
                 if k not in ("PITBOX_API_URL", "PITBOX_API_KEY", "PITBOX_STATE")}
        with mock.patch.dict(os.environ, clean, clear=True):
            pb = Pitbox()
            self.assertEqual(pb.url, "http://127.0.0.1:7070")
            self.assertEqual(pb.timeout, 60.0)
            os.environ["PITBOX_STATE"] = "/nonexistent"
            os.environ["PITBOX_API_URL"] = self.daemon.url
            with self.assertRaises(Unauthenticated):  # no key at all
                list(Pitbox().list())
            os.environ["PITBOX_API_KEY"] = self.daemon.admin_key
            self.assertEqual(list(Pitbox().list()), [])
            # Like the CLI: the admin key file of $PITBOX_STATE when there is no key.
            del os.environ["PITBOX_API_KEY"]
            os.environ["PITBOX_STATE"] = self.env.state
            with Pitbox() as pb:
                self.assertEqual(pb.url, self.daemon.url)
                self.assertEqual(len(list(pb.keys.list())), 1)
            # Explicit arguments win over the environment.
            os.environ["PITBOX_API_URL"] = "http://127.0.0.1:1"
            self.assertEqual(list(Pitbox(self.daemon.url + "/", self.daemon.admin_key).list()),
                             [])

    def test_connections_are_kept_and_reused(self) -> None:
        self.pb.health()
        conn = self.pb._transport._idle[0]
        for _ in range(5):
            self.pb.health()
            list(self.pb.list())
        self.assertEqual(self.pb._transport._idle, [conn])
        # An error answer does not cost the connection either.
        with self.assertRaises(NotFound):
            self.pb.get("nope")
        self.assertEqual(self.pb._transport._idle, [conn])

    def test_a_kept_connection_closed_by_the_server_is_replaced(self) -> None:
        self.pb.health()
        conn = self.pb._transport._idle[0]
        # Swap its socket for one whose peer has hung up, as a server that timed it out would.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            dead = socket.create_connection(listener.getsockname())
            peer, _ = listener.accept()
            peer.close()
        assert conn.sock is not None
        conn.sock.close()
        conn.sock = dead
        time.sleep(0.05)
        self.assertEqual(self.pb.health().status, "ok")
        self.assertEqual(len(list(self.pb.list())), 0)

    def test_unreachable_daemon(self) -> None:
        with self.assertRaises(PitboxConnectionError) as cm:
            Pitbox("http://127.0.0.1:%d" % free_port(), "k").health()
        self.assertIsInstance(cm.exception, pitbox.Unavailable)
        self.assertEqual(cm.exception.status, 0)
        with self.assertRaises(ValueError):
            Pitbox("ftp://example.com")

    def test_timeout(self) -> None:
        with socket.socket() as silent:  # accepts connections, never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen(5)
            pb = Pitbox("http://127.0.0.1:%d" % silent.getsockname()[1], "k", timeout=0.3)
            started = time.monotonic()
            with self.assertRaises(TimeoutError):
                pb.health()
            self.assertLess(time.monotonic() - started, 5)

    def test_errors(self) -> None:
        with self.assertRaises(NotFound) as cm:
            self.pb.get("no-such-box")
        e = cm.exception
        self.assertEqual((e.status, e.code), (404, "not_found"))
        self.assertIn("no-such-box", e.message)
        self.assertIn("no-such-box", str(e))
        self.assertIsInstance(e, PitboxError)

        self.box(name="taken")
        with self.assertRaises(Conflict) as cm2:
            self.pb.create(name="taken")
        self.assertEqual((cm2.exception.status, cm2.exception.code), (409, "conflict"))
        self.assertEqual(cm2.exception.details, {"field": "name"})

        with self.assertRaises(InvalidArgument) as cm3:
            self.pb.request("POST", "/v1/sandboxes", json={"image": "host", "colour": "red"})
        self.assertEqual((cm3.exception.status, cm3.exception.code), (400, "invalid_argument"))
        self.assertEqual(cm3.exception.details, {"field": "colour"})
        self.assertIn("colour", cm3.exception.message)

        with self.assertRaises(Unauthenticated) as cm4:
            list(Pitbox(self.daemon.url, "pb_" + "a" * 43).list())
        self.assertEqual((cm4.exception.status, cm4.exception.code), (401, "unauthenticated"))

        with self.assertRaises(InvalidArgument):
            self.pb.create(memory="lots")
        with self.assertRaises(InvalidArgument):
            list(self.pb.list(state="sleeping"))

    def test_error_from_a_body_that_is_not_json(self) -> None:
        e = pitbox.errors.error_from_response(503, b"<html>proxy down</html>")
        self.assertIsInstance(e, pitbox.Unavailable)
        self.assertEqual((e.status, e.code, e.message), (503, "unavailable",
                                                          "<html>proxy down</html>"))
        e = pitbox.errors.error_from_response(413, b'{"error": {"code": "invalid_argument", '
                                                   b'"message": "too big", "details": null}}')
        self.assertIsInstance(e, InvalidArgument)
        self.assertEqual(e.status, 413)

    def test_keys(self) -> None:
        created = self.pb.keys.create("ci")
        self.assertTrue(re.fullmatch(r"pb_[a-z2-7]{43}", created.key))
        self.assertEqual(created.name, "ci")
        self.assertFalse(created.admin)
        self.assertNotIn(created.key, repr(created))
        listed = {k.id: k for k in self.pb.keys.list(page_size=1)}  # one key a page
        self.assertIn(created.id, listed)
        self.assertTrue(any(k.admin for k in listed.values()))

        user = Pitbox(self.daemon.url, created.key)
        self.assertEqual(list(user.list()), [])
        with self.assertRaises(PermissionDenied) as cm:
            list(user.keys.list())
        self.assertEqual((cm.exception.status, cm.exception.code), (403, "permission_denied"))

        self.pb.keys.delete(created)
        self.assertNotIn(created.id, [k.id for k in self.pb.keys.list()])
        with self.assertRaises(Unauthenticated):
            list(user.list())
        with self.assertRaises(NotFound):
            self.pb.keys.delete(created.id)

    def test_audit(self) -> None:
        with self.box(name="audited") as box:  # seven audited calls
            box.set_labels({"a": "b"})
            box.exec("true")
            box.exec("true")
            box.stop()
            box.start()
        entries = list(self.pb.audit(limit=5, page_size=2))
        self.assertEqual(len(entries), 5)
        ids = [e.id for e in entries]
        self.assertEqual(ids, sorted(ids, reverse=True))
        self.assertEqual(len(set(ids)), 5)
        self.assertEqual(entries[0].action, "DELETE /v1/sandboxes/{id}")
        self.assertEqual(entries[0].status, 204)
        self.assertIsNone(entries[0].error)
        everything = list(self.pb.audit())
        self.assertGreaterEqual(len(everything), 7)
        self.assertEqual([e.id for e in everything[:5]], ids)

    def test_openapi_and_metrics(self) -> None:
        self.assertIn("/v1/sandboxes", self.pb.openapi()["paths"])
        self.assertIn("pitbox_sandboxes", self.pb.metrics())

    def test_readme_quick_start(self) -> None:
        """The README's example, run as written (the key comes from the admin key file)."""
        with open(os.path.join(SDK, "README.md")) as f:
            readme = f.read()
        match = re.search(r"## Quick start.*?```python\n(.*?)```", readme, re.S)
        assert match, "no quick start in the README"
        env = dict(self.env.env, PITBOX_API_URL=self.daemon.url, PYTHONPATH=SDK)
        env.pop("PITBOX_API_KEY", None)
        r = subprocess.run([sys.executable, "-c", match.group(1)], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "0 hello, pitbox")
        self.assertIn("type='stdout', data='1\\n'", lines[1])
        self.assertIn("type='exit'", lines[-1])
        self.assertIn("exit_code=0", lines[-1])
        # The errors example, after a client like the quick start's.
        match = re.search(r"## Errors.*?```python\n(.*?)```", readme, re.S)
        assert match
        r = subprocess.run(
            [sys.executable, "-c", "from pitbox import Pitbox\npb = Pitbox()\n" + match.group(1)],
            env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, '404 not_found sandbox "no-such-box" not found\n')


class SandboxTest(SdkTestCase):
    def test_create_with_every_option(self) -> None:
        box = self.box(image="host", name="full", labels={"team": "search", "tier": "1"},
                       env={"GREETING": "hi"}, cpus=0.5, memory="256m", pids=128,
                       workdir="/srv/work", user="nobody", auto_stop_minutes=30,
                       auto_delete_minutes=2.5)
        self.assertTrue(box.id.startswith("sb-"))
        self.assertEqual(box.name, "full")
        self.assertEqual(box.state, "started")
        self.assertEqual(box.labels, {"team": "search", "tier": "1"})
        self.assertEqual(box.image, "host")
        self.assertEqual(box.env, {"GREETING": "hi"})
        self.assertEqual(box.cpus, 0.5)
        self.assertEqual(box.memory, 256 << 20)
        self.assertEqual(box.pids, 128)
        self.assertEqual(box.workdir, "/srv/work")
        self.assertEqual(box.user, "nobody")
        self.assertEqual(box.auto_stop_minutes, 30)
        self.assertEqual(box.auto_delete_minutes, 2.5)
        self.assertFalse(box.ephemeral)
        self.assertIsNone(box.error)
        self.assertIsNone(box.disk)
        self.assertTrue(box.created_at and box.started_at and box.last_activity_at)
        self.assertIsNone(box.stopped_at)
        self.assertEqual(box.raw["id"], box.id)
        self.assertIn(box.id, repr(box))
        r = box.exec("id -un; pwd; echo $GREETING")
        self.assertEqual(r.stdout, "nobody\n/srv/work\nhi\n")

        eph = self.box(ephemeral=True)
        self.assertTrue(eph.ephemeral)
        self.assertTrue(self.pb.get(eph.id).ephemeral)

    def test_get_list_and_labels(self) -> None:
        a = self.box(name="alpha", labels={"team": "a", "env": "ci"})
        b = self.box(labels={"team": "b", "env": "ci"})
        c = self.box(labels={"team": "a"})
        self.assertEqual(self.pb.get("alpha"), a)
        self.assertEqual(self.pb.get(b.id).labels, {"team": "b", "env": "ci"})
        self.assertIsNone(self.pb.get(b.id).name)

        every = list(self.pb.list(page_size=1))  # three pages
        self.assertEqual({x.id for x in every}, {a.id, b.id, c.id})
        self.assertEqual(len(every), 3)
        self.assertEqual({x.id for x in self.pb.list(labels={"team": "a"})}, {a.id, c.id})
        self.assertEqual([x.id for x in self.pb.list(labels={"team": "a", "env": "ci"})], [a.id])
        self.assertEqual(list(self.pb.list(labels={"team": "z"})), [])

        self.assertIs(c.set_labels({"team": "c", "new": "yes"}), c)
        self.assertEqual(c.labels, {"team": "c", "new": "yes"})
        self.assertEqual(self.pb.get(c.id).labels, {"team": "c", "new": "yes"})
        c.set_labels({})
        self.assertEqual(c.labels, {})

    def test_life_cycle(self) -> None:
        box = self.box()
        box.files.write("/root/kept", "still here")
        self.assertIs(box.stop(), box)
        self.assertEqual(box.state, "stopped")
        self.assertIsNotNone(box.stopped_at)
        with self.assertRaises(Conflict):
            box.exec("true")
        self.assertEqual([x.id for x in self.pb.list(state="stopped")], [box.id])
        self.assertEqual(list(self.pb.list(state="started")), [])
        self.assertIs(box.start(), box)
        self.assertEqual(box.state, "started")
        self.assertEqual(box.files.read_text("/root/kept"), "still here")
        other = self.pb.get(box.id)
        other.stop()
        self.assertEqual(box.state, "started")  # as of its last answer
        self.assertEqual(box.refresh().state, "stopped")
        box.delete()
        with self.assertRaises(NotFound):
            box.refresh()
        with self.assertRaises(NotFound):
            box.delete()

    def test_context_manager_deletes(self) -> None:
        with self.pb.create(name="short-lived") as box:
            self.assertEqual(box.exec("echo in").stdout, "in\n")
        with self.assertRaises(NotFound):
            self.pb.get("short-lived")
        # Deleted already inside the block: the exit does not mind.
        with self.pb.create() as box:
            box.delete()
        # An error in the block still deletes the box, and goes on.
        with self.assertRaises(ZeroDivisionError):
            with self.pb.create(name="failing"):
                1 / 0
        with self.assertRaises(NotFound):
            self.pb.get("failing")


class ExecTest(SdkTestCase):
    box_: Sandbox

    def setUp(self) -> None:
        super().setUp()
        self.box_ = self.box(env={"FROM_BOX": "box"})

    def test_argv_and_shell(self) -> None:
        r = self.box_.exec(["echo", "a b", "$HOME"])
        self.assertEqual(r.stdout, "a b $HOME\n")
        self.assertEqual((r.exit_code, r.signal, r.timed_out, r.truncated), (0, None, False, False))
        self.assertTrue(r.ok)
        self.assertIs(r.check(), r)
        self.assertGreaterEqual(r.duration_ms, 0)
        r = self.box_.exec("echo out; echo err >&2; exit 3")
        self.assertEqual((r.stdout, r.stderr, r.exit_code), ("out\n", "err\n", 3))
        self.assertFalse(r.ok)
        with self.assertRaises(CommandError) as cm:
            r.check()
        self.assertIs(cm.exception.result, r)
        self.assertIn("exited with status 3", str(cm.exception))
        self.assertIn("err", str(cm.exception))

    def test_options(self) -> None:
        r = self.box_.exec("echo $FROM_BOX $MINE; pwd; id -un",
                           env={"MINE": "mine"}, cwd="/tmp", user="nobody")
        self.assertEqual(r.stdout, "box mine\n/tmp\nnobody\n")
        self.assertEqual(self.box_.exec(["cat"], stdin="text in").stdout, "text in")
        r = self.box_.exec(["od", "-An", "-tx1"], stdin=b"\x00\xff")
        self.assertEqual(r.stdout.split(), ["00", "ff"])
        r = self.box_.exec("head -c 100 /dev/zero", max_output=10)
        self.assertTrue(r.truncated)
        self.assertEqual(r.stdout, "\0" * 10)

    def test_binary_output(self) -> None:
        r = self.box_.exec(["printf", "\\377\\000ok"])
        self.assertEqual(r.stdout, b"\xff\x00ok")
        self.assertEqual(r.stderr, b"")

    def test_timeout(self) -> None:
        started = time.monotonic()
        r = self.box_.exec(["sleep", "30"], timeout=0.3)
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual((r.timed_out, r.signal, r.exit_code), (True, 9, 137))
        with self.assertRaises(CommandError) as cm:
            r.check()
        self.assertIn("timed out", str(cm.exception))

    def test_commands_that_cannot_start(self) -> None:
        with self.assertRaises(NotFound):
            self.box_.exec(["no-such-command"])
        with self.assertRaises(InvalidArgument):
            self.box_.exec("true", cwd="relative")
        with self.assertRaises(InvalidArgument):
            self.box_.exec([])
        with self.assertRaises(NotFound):
            self.box_.exec_stream(["no-such-command"])

    def test_exec_stream(self) -> None:
        events = list(self.box_.exec_stream(
            "echo one; sleep 0.1; echo two >&2; printf '\\377'; exit 4", stdin="x"))
        self.assertEqual([e.type for e in events], ["stdout", "stderr", "stdout", "exit"])
        self.assertEqual(events[0].data, "one\n")
        self.assertEqual(events[1].data, "two\n")
        self.assertEqual(events[2].data, b"\xff")
        last = events[-1]
        self.assertEqual((last.exit_code, last.signal, last.timed_out), (4, None, False))
        self.assertIsNotNone(last.duration_ms)

    def test_exec_stream_as_it_runs(self) -> None:
        started = time.monotonic()
        stream = self.box_.exec_stream("echo ready; sleep 1; echo done", timeout=10)
        first = next(stream)
        self.assertEqual((first.type, first.data), ("stdout", "ready\n"))
        self.assertLess(time.monotonic() - started, 0.9)
        events = list(stream)
        self.assertEqual([e.type for e in events], ["stdout", "exit"])
        self.assertGreaterEqual(time.monotonic() - started, 1)

    def test_leaving_a_stream_early(self) -> None:
        self.box_.files.write("/tmp/loop.sh", "while true; do echo tick; sleep 0.05; done\n")
        stream = self.box_.exec_stream(["sh", "/tmp/loop.sh"])
        self.assertEqual(next(stream).data, "tick\n")
        stream.close()  # the daemon kills the command at its next output; the client goes on
        self.assertEqual(self.box_.exec("echo after").stdout, "after\n")
        running = "pgrep -f '[l]oop.sh' || true"
        deadline = time.monotonic() + 10
        while self.box_.exec(running).stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.box_.exec(running).stdout, "")

    def test_stream_timeout(self) -> None:
        events = list(self.box_.exec_stream(["sleep", "30"], timeout=0.2))
        self.assertEqual(len(events), 1)
        self.assertEqual((events[0].timed_out, events[0].signal), (True, 9))


class SessionTest(SdkTestCase):
    box_: Sandbox

    def setUp(self) -> None:
        super().setUp()
        self.box_ = self.box()

    def test_input_logs_and_wait(self) -> None:
        s = self.box_.sessions.start(["cat"])
        self.assertTrue(s.id.startswith("se-"))
        self.assertEqual((s.command, s.tty, s.state), (["cat"], False, "running"))
        self.assertTrue(s.running)
        self.assertIsNone(s.exit_code)
        s.send("hello\n")
        s.send(b"\x00\xff\n")
        deadline = time.monotonic() + 10
        while s.logs().data != b"hello\n\x00\xff\n" and time.monotonic() < deadline:
            time.sleep(0.02)
        logs = s.logs()
        self.assertEqual(logs.data, b"hello\n\x00\xff\n")
        self.assertEqual(logs.next_offset, 9)
        self.assertFalse(logs.ended)
        self.assertEqual(s.logs(offset=6).data, b"\x00\xff\n")
        self.assertEqual(s.logs(offset=6).text, "\x00\ufffd\n")
        s.eof()
        self.assertIs(s.wait(timeout=10), s)
        self.assertEqual((s.state, s.exit_code, s.signal), ("exited", 0, None))
        self.assertIsNotNone(s.ended_at)
        self.assertTrue(s.logs(offset=9).ended)
        self.assertEqual(s.logs(offset=9).data, b"")
        with self.assertRaises(Conflict):
            s.send("too late")
        s.delete()
        with self.assertRaises(NotFound):
            s.refresh()

    def test_follow(self) -> None:
        s = self.box_.sessions.start(
            "for i in 1 2 3; do echo line $i; sleep 0.1; done; echo err >&2; exit 5")
        chunks = list(s.follow())
        self.assertEqual(b"".join(chunks), b"line 1\nline 2\nline 3\nerr\n")
        self.assertGreater(len(chunks), 1)  # as it came, not at the end
        self.assertEqual(b"".join(s.follow(offset=7)), b"line 2\nline 3\nerr\n")
        self.assertEqual(s.wait().exit_code, 5)

    def test_follow_while_sending(self) -> None:
        s = self.box_.sessions.start("while read x; do echo got $x; done", stdin="first\n")
        got: list[bytes] = []
        follower = threading.Thread(target=lambda: got.extend(s.follow()))
        follower.start()
        s.send("second\n")  # the same client, while the follow holds its own connection
        s.eof()
        follower.join(10)
        self.assertFalse(follower.is_alive())
        self.assertEqual(b"".join(got), b"got first\ngot second\n")

    def test_tty(self) -> None:
        s = self.box_.sessions.start("tty; read x; echo got $x", tty=True)
        self.assertTrue(s.tty)
        s.send("abc\n")
        out = b"".join(s.follow())
        self.assertIn(b"/dev/pts/", out)
        self.assertIn(b"got abc\r\n", out)

    def test_kill_list_get_and_delete(self) -> None:
        a = self.box_.sessions.start(["sleep", "60"])
        b = self.box_.sessions.start("sleep 60", env={"X": "1"}, cwd="/tmp", user="nobody")
        c = self.box_.sessions.start(["sleep", "60"])
        listed = list(self.box_.sessions.list(page_size=2))
        self.assertEqual(sorted(x.id for x in listed), sorted([a.id, b.id, c.id]))
        self.assertEqual(self.box_.sessions.get(b.id).command, ["/bin/sh", "-c", "sleep 60"])
        a.kill()
        self.assertEqual(a.wait(10).signal, 15)
        b.kill("KILL")
        self.assertEqual((b.wait(10).signal, b.exit_code), (9, 137))
        with self.assertRaises(Conflict):
            a.kill()
        with self.assertRaises(InvalidArgument):
            c.kill("NOSUCHSIG")
        with self.assertRaises(TimeoutError):
            c.wait(timeout=0.3)
        with c:
            pass  # deleted (and so killed) on exit
        with self.assertRaises(NotFound):
            self.box_.sessions.get(c.id)
        self.assertEqual(sorted(x.id for x in self.box_.sessions.list()), sorted([a.id, b.id]))
        with self.assertRaises(NotFound):
            self.box_.sessions.get("se-nope")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FilesTest(SdkTestCase):
    box_: Sandbox

    def setUp(self) -> None:
        super().setUp()
        self.box_ = self.box()

    def test_write_and_read(self) -> None:
        files = self.box_.files
        self.assertEqual(files.write("/work/a/b/text.txt", "héllo\n"), 7)  # parents made
        self.assertEqual(files.read("/work/a/b/text.txt"), "héllo\n".encode())
        self.assertEqual(files.read_text("/work/a/b/text.txt"), "héllo\n")
        binary = bytes(range(256)) * 4
        self.assertEqual(files.write("/work/bin", binary, mode=0o600), 1024)
        self.assertEqual(files.read("/work/bin"), binary)
        self.assertEqual(files.stat("/work/bin").mode, 0o600)
        files.write("/work/bin", b"", mode="640")
        self.assertEqual(files.read("/work/bin"), b"")
        self.assertEqual(files.stat("/work/bin").mode, 0o640)
        files.write("/work/chunks", iter([b"a", b"", b"bc"]))
        self.assertEqual(files.read("/work/chunks"), b"abc")
        files.write("/work/memory", memoryview(b"view"))
        self.assertEqual(files.read("/work/memory"), b"view")
        with tempfile.TemporaryFile("w+") as text_file:
            text_file.write("from a text file ✓")
            text_file.seek(0)
            files.write("/work/from-text", text_file)
        self.assertEqual(files.read_text("/work/from-text"), "from a text file ✓")
        self.assertEqual(self.box_.exec(["cat", "/work/a/b/text.txt"]).stdout, "héllo\n")
        with self.assertRaises(NotFound):
            files.read("/work/missing")
        with self.assertRaises(InvalidArgument):
            files.read("relative")
        with self.assertRaises(Conflict):
            files.write("/work/a", b"a directory")
        with self.assertRaises(InvalidArgument):
            files.write("/work/x", b"", mode="999")

    def test_large_streamed_round_trip(self) -> None:
        data = os.urandom(5 << 20)
        files = self.box_.files
        self.assertEqual(files.write("/big/file", io.BytesIO(data)), len(data))
        self.assertEqual(self.box_.exec("sha256sum /big/file | cut -d' ' -f1").stdout.strip(),
                         sha(data))
        out = io.BytesIO()
        self.assertEqual(files.download("/big/file", out), len(data))
        self.assertEqual(sha(out.getvalue()), sha(data))
        pieces = list(files.read_stream("/big/file"))
        self.assertGreater(len(pieces), 1)
        self.assertEqual(sha(b"".join(pieces)), sha(data))
        self.assertEqual(sha(files.read("/big/file")), sha(data))

        def generate() -> Iterator[bytes]:
            for i in range(0, len(data), 100_000):
                yield data[i:i + 100_000]

        self.assertEqual(files.write("/big/generated", generate()), len(data))
        self.assertEqual(files.stat("/big/generated").size, len(data))
        # An error answered before the body was read is reported as such.
        with self.assertRaises(Conflict):
            files.write("/big", io.BytesIO(data))
        with self.assertRaises(Conflict):
            files.write("/big", data)
        self.assertTrue(files.exists("/big/file"))

    def test_entries(self) -> None:
        files = self.box_.files
        d = files.mkdir("/work/d/e", mode=0o700)
        self.assertEqual((d.path, d.name, d.type, d.mode), ("/work/d/e", "e", "dir", 0o700))
        self.assertTrue(d.is_dir)
        self.assertEqual(files.mkdir("/work/d/e").type, "dir")  # there already: fine
        with self.assertRaises(NotFound):
            files.mkdir("/work/x/y", parents=False)
        for name in ["c", "a", "b", "d2", "e2"]:
            files.write("/work/list/" + name, name)
        self.box_.exec(["ln", "-s", "a", "/work/list/link"]).check()
        entries = list(files.list("/work/list", page_size=2))  # three pages
        self.assertEqual([e.name for e in entries], sorted(["a", "b", "c", "d2", "e2", "link"]))
        link = [e for e in entries if e.name == "link"][0]
        self.assertEqual((link.type, link.target, link.path), ("symlink", "a", "/work/list/link"))
        self.assertTrue(link.is_symlink)
        st = files.stat("/work/list/a")
        self.assertEqual((st.type, st.size, st.uid, st.gid, st.target), ("file", 1, 0, 0, None))
        self.assertTrue(st.is_file)
        self.assertRegex(st.mtime, r"^\d{4}-\d\d-\d\dT")
        self.assertEqual(files.chmod("/work/list/a", "600").mode, 0o600)
        self.assertEqual(files.chmod("/work/list/a", 0o755).mode, 0o755)
        owned = files.chown("/work/list/a", uid=1000, gid=1001)
        self.assertEqual((owned.uid, owned.gid), (1000, 1001))
        self.assertEqual(files.chown("/work/list/a", gid=0).gid, 0)
        with self.assertRaises(InvalidArgument):
            files.chown("/work/list/a")

        moved = files.move("/work/list/a", "/work/list/moved")
        self.assertEqual((moved.path, moved.name), ("/work/list/moved", "moved"))
        self.assertFalse(files.exists("/work/list/a"))
        with self.assertRaises(Conflict):
            files.move("/work/list/b", "/work/list/c")
        files.move("/work/list/b", "/work/list/c", overwrite=True)
        self.assertEqual(files.read("/work/list/c"), b"b")

        files.remove("/work/list/c")
        self.assertFalse(files.exists("/work/list/c"))
        with self.assertRaises(Conflict):
            files.remove("/work/list")
        files.remove("/work/list", recursive=True)
        self.assertFalse(files.exists("/work/list"))
        with self.assertRaises(NotFound):
            files.remove("/work/list")
        with self.assertRaises(NotFound):
            list(files.list("/work/list"))

    def test_find_and_grep(self) -> None:
        files = self.box_.files
        files.write("/src/app/main.py", "import os\nprint('Hello')\n")
        files.write("/src/app/util.py", "def hello():\n    return 1\n")
        files.write("/src/README.md", "hello readme\n")
        files.mkdir("/src/app/pkg")
        found = files.find("/src", name="*.py")
        self.assertEqual(sorted(m.path for m in found), ["/src/app/main.py", "/src/app/util.py"])
        self.assertFalse(found.truncated)
        self.assertEqual(found[0].type, "file")
        dirs = files.find("/src", type="dir")
        self.assertIn("/src/app/pkg", [m.path for m in dirs])
        self.assertTrue(files.find("/src", limit=1).truncated)
        with self.assertRaises(InvalidArgument):
            files.find("/src", type="banana")

        hits = files.grep("/src", "hello")
        self.assertEqual(sorted((m.path, m.line) for m in hits),
                         [("/src/README.md", 1), ("/src/app/util.py", 1)])
        self.assertEqual([m.text for m in files.grep("/src", "hello", glob="*.md")],
                         ["hello readme"])
        self.assertEqual(len(files.grep("/src", "hello", ignore_case=True)), 3)
        hits = files.grep("/src", r"^ +return [0-9]$", regex=True)  # POSIX extended
        self.assertEqual([(m.path, m.line) for m in hits], [("/src/app/util.py", 2)])
        self.assertEqual(len(files.grep("/src", "hello", ignore_case=True, limit=1)), 1)

    def test_tar_round_trip(self) -> None:
        files = self.box_.files
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in [("top.txt", b"top"), ("sub/deep/bin.dat", bytes(range(256)))]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o640
                tar.addfile(info, io.BytesIO(data))
        result = files.upload_tar("/unpacked", buf.getvalue())
        self.assertEqual((result.path, result.files), ("/unpacked", 2))
        self.assertEqual(files.read("/unpacked/sub/deep/bin.dat"), bytes(range(256)))
        self.assertEqual(files.stat("/unpacked/top.txt").mode, 0o640)
        buf.seek(0)
        self.assertEqual(files.upload_tar("/again", buf).files, 2)  # a file object, streamed

        archive = files.download_tar("/unpacked")
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            names = sorted(m.name.rstrip("/") for m in tar.getmembers())
            self.assertEqual(names, ["sub", "sub/deep", "sub/deep/bin.dat", "top.txt"])
            member = tar.extractfile("sub/deep/bin.dat")
            assert member is not None
            self.assertEqual(member.read(), bytes(range(256)))
        with self.assertRaises(NotFound):
            files.download_tar("/nowhere")

    def test_dir_round_trip(self) -> None:
        files = self.box_.files
        with tempfile.TemporaryDirectory() as src, tempfile.TemporaryDirectory() as dst:
            tree = {"a.txt": b"alpha\n", "nested/b.bin": os.urandom(300_000),
                    "nested/deeper/c": b"", "x y/ü.txt": "unicode ✓".encode()}
            for rel, data in tree.items():
                os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
                with open(os.path.join(src, rel), "wb") as f:
                    f.write(data)
            os.makedirs(os.path.join(src, "empty"))
            os.chmod(os.path.join(src, "a.txt"), 0o755)
            result = files.upload_dir(src, "/copy")
            self.assertEqual(result.files, 4)
            self.assertEqual(files.read("/copy/nested/b.bin"), tree["nested/b.bin"])
            self.assertEqual(files.stat("/copy/a.txt").mode, 0o755)
            self.assertTrue(files.stat("/copy/empty").is_dir)

            files.download_dir("/copy", os.path.join(dst, "made"))
            got = {}
            for root, _dirs, names in os.walk(os.path.join(dst, "made")):
                for name in names:
                    path = os.path.join(root, name)
                    with open(path, "rb") as f:
                        got[os.path.relpath(path, os.path.join(dst, "made"))] = f.read()
            self.assertEqual(got, tree)
            self.assertTrue(os.path.isdir(os.path.join(dst, "made", "empty")))
            self.assertTrue(os.stat(os.path.join(dst, "made", "a.txt")).st_mode & 0o100)
            # The client still works on its kept connection.
            self.assertEqual(self.box_.exec("echo ok").stdout, "ok\n")

    def test_download_dir_extracts_safely(self) -> None:
        """A box's tree may hold links that lead out of the target directory: the "data"
        filter refuses them rather than writing outside local_dir."""
        self.box_.exec("mkdir -p /evil && echo x > /evil/ok && ln -s /etc/passwd /evil/link"
                       ).check()
        with tempfile.TemporaryDirectory() as dst:
            with self.assertRaises(tarfile.FilterError):
                self.box_.files.download_dir("/evil", dst)
            self.assertFalse(os.path.lexists(os.path.join(dst, "link")))
        self.assertEqual(self.box_.exec("echo fine").stdout, "fine\n")
        with self.assertRaises(NotADirectoryError):
            self.box_.files.upload_dir("/nonexistent-local-dir", "/x")


if __name__ == "__main__":
    unittest.main()
