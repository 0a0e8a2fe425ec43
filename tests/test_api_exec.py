"""Exec (one-shot and streamed), background sessions and the terminal WebSocket."""

import base64
import json
import os
import socket
import struct
import time
import unittest

from daemon import DaemonTestCase, q


class ExecTest(DaemonTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.box = self.create(name="ex")["id"]

    def test_argv_and_shell_with_env_cwd_user_and_stdin(self):
        r = self.exec("ex", "printf", "%s|", "a b", "c")
        self.assertEqual((r["exit_code"], r["stdout"], r["encoding"]), (0, "a b|c|", "utf-8"))
        r = self.sh("ex", "echo $X; pwd; id -u; cat", env={"X": "y"}, cwd="/tmp", user="65534",
                    stdin="from stdin")
        self.assertEqual(r["stdout"], "y\n/tmp\n65534\nfrom stdin")
        r = self.sh("ex", "echo out; echo err >&2; exit 3")
        self.assertEqual((r["exit_code"], r["stdout"], r["stderr"]), (3, "out\n", "err\n"))
        self.assertIsNone(r["signal"])
        self.assertGreaterEqual(r["duration_ms"], 0)

    def test_binary_output_comes_as_base64(self):
        r = self.sh("ex", "printf '\\377\\000\\001'")
        self.assertEqual(r["encoding"], "base64")
        self.assertEqual(base64.b64decode(r["stdout"]), b"\xff\x00\x01")
        r = self.exec("ex", "cat", stdin_base64=base64.b64encode(b"\x00\xfe").decode())
        self.assertEqual(base64.b64decode(r["stdout"]), b"\x00\xfe")

    def test_output_cap_sets_truncated(self):
        r = self.sh("ex", "head -c 100000 /dev/zero | tr '\\0' a", max_output=1000)
        self.assertEqual(len(r["stdout"]), 1000)
        self.assertTrue(r["truncated"])

    def test_timeout_kills_the_process_group(self):
        r = self.sh("ex", "sleep 100 & sleep 100", timeout_ms=300)
        self.assertTrue(r["timed_out"])
        self.assertEqual((r["exit_code"], r["signal"]), (137, 9))
        r = self.sh("ex", "ps -e -o comm= | grep -c sleep || true")
        self.assertEqual(r["stdout"], "0\n")

    def test_commands_that_cannot_start_are_errors(self):
        r = self.api("POST", "/v1/sandboxes/ex/exec", {"cmd": ["/no/such/program"]})
        self.assertEqual((r.status, r.error_code), (404, "not_found"), r)
        self.assertIn("/no/such/program", r.json()["error"]["message"])
        r = self.api("POST", "/v1/sandboxes/ex/exec", {"cmd": ["true"], "user": "nobody-here"})
        self.assertEqual(r.status // 100, 4, r)
        r = self.api("POST", "/v1/sandboxes/ex/exec", {"cmd": ["true"], "cwd": "relative"})
        self.assertEqual(r.status, 400)

    def test_stream_gives_ndjson_events_as_they_come(self):
        conn = self.daemon.connection()
        conn.request("POST", "/v1/sandboxes/ex/exec?stream=true",
                     body=json.dumps({"shell": "echo one; sleep 0.3; echo two >&2; exit 4"}),
                     headers={"Authorization": "Bearer " + self.daemon.admin_key})
        r = conn.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("Content-Type"), "application/x-ndjson")
        first = json.loads(r.readline())
        t_first = time.time()
        self.assertEqual(first, {"type": "stdout", "data": "one\n"})
        events = [json.loads(line) for line in r.read().splitlines()]
        self.assertGreater(time.time() - t_first, 0.2)  # it came before the rest existed
        self.assertEqual(events[0], {"type": "stderr", "data": "two\n"})
        self.assertEqual(events[-1]["type"], "exit")
        self.assertEqual(events[-1]["exit_code"], 4)
        conn.close()

    def test_stream_client_going_away_kills_the_command(self):
        conn = self.daemon.connection()
        conn.request("POST", "/v1/sandboxes/ex/exec?stream=true",
                     body=json.dumps({"shell": "while true; do echo tick; sleep 0.05; done"}),
                     headers={"Authorization": "Bearer " + self.daemon.admin_key})
        r = conn.getresponse()
        r.readline()
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            out = self.sh("ex", "ps -e -o args= | grep -c '^sh -c while' || true")["stdout"]
            if out == "0\n":
                break
            time.sleep(0.1)
        self.assertEqual(out, "0\n")

    def test_sessions_run_in_the_background(self):
        s = self.ok("POST", "/v1/sandboxes/ex/sessions",
                    {"shell": "echo started; read line; echo got $line; exit 5"}, status=201)
        self.assertRegex(s["id"], r"^se-[a-z2-7]{12}$")
        self.assertEqual(s["state"], "running")
        listed = self.ok("GET", "/v1/sandboxes/ex/sessions")["items"]
        self.assertEqual([x["id"] for x in listed], [s["id"]])
        base = "/v1/sandboxes/ex/sessions/" + s["id"]
        deadline = time.time() + 10
        while b"started" not in self.api("GET", base + "/logs").body and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.api("POST", base + "/input", {"data": "hello\n"}).status, 204)
        # follow=true streams until the session ends.
        r = self.api("GET", base + "/logs" + q(follow="true"))
        self.assertEqual(r.body, b"started\ngot hello\n")
        got = self.ok("GET", base)
        self.assertEqual((got["state"], got["exit_code"]), ("exited", 5))
        r = self.api("GET", base + "/logs" + q(offset=8))
        self.assertEqual(r.body, b"got hello\n")
        self.assertEqual(r.headers["X-Pitbox-Next-Offset"], "18")
        self.assertEqual(self.api("POST", base + "/input", {"data": "x"}).status, 409)
        self.assertEqual(self.api("DELETE", base).status, 204)
        self.assertEqual(self.api("GET", base).status, 404)

    def test_session_kill_and_bad_input(self):
        s = self.ok("POST", "/v1/sandboxes/ex/sessions", {"cmd": ["sleep", "100"]}, status=201)
        base = "/v1/sandboxes/ex/sessions/" + s["id"]
        self.assertEqual(self.api("POST", base + "/kill", {"signal": "nope"}).status, 400)
        self.assertEqual(self.api("POST", base + "/input", {"data": 1}).status, 400)
        self.assertEqual(self.api("POST", base + "/kill", {"signal": "TERM"}).status, 204)
        self.api("GET", base + "/logs?follow=true")
        got = self.ok("GET", base)
        self.assertEqual((got["state"], got["signal"]), ("exited", 15))
        self.assertEqual(self.api("GET", "/v1/sandboxes/ex/sessions/se-aaaaaaaaaaaa").status, 404)

    def test_terminal_websocket(self):
        ws = WebSocket(self.daemon.port, "/v1/sandboxes/ex/terminal?rows=30&cols=100&cmd=sh",
                       self.daemon.admin_key)
        ws.send_binary(b"stty size; echo mark-$((40+2))\n")
        out = ws.read_until(b"mark-42")
        self.assertIn(b"30 100", out)
        ws.send_text(json.dumps({"type": "resize", "rows": 50, "cols": 120}))
        time.sleep(0.2)
        ws.send_binary(b"stty size; exit 6\n")
        out = ws.read_until(None)
        ws.sock.close()
        self.assertIn(b"50 120", out)
        self.assertEqual(ws.exit["exit_code"], 6)

    def test_terminal_without_upgrade_is_an_error(self):
        r = self.api("GET", "/v1/sandboxes/ex/terminal")
        self.assertEqual(r.status, 400)


class WebSocket:
    """Just enough of a WebSocket client (RFC 6455) for the tests."""

    def __init__(self, port, path, key):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.sock.sendall((
            "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            "Authorization: Bearer %s\r\n\r\n" % (path, base64.b64encode(os.urandom(16)).decode(),
                                                  key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.exit = None

    def _send(self, opcode, data):
        mask = os.urandom(4)
        n = len(data)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        else:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def send_binary(self, data):
        self._send(2, data)

    def send_text(self, text):
        self._send(1, text.encode())

    def _recv_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def read_message(self):
        b1, b2 = self._recv_exact(2)
        n = b2 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._recv_exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._recv_exact(8))[0]
        return b1 & 0x0F, self._recv_exact(n)

    def read_until(self, marker):
        """Terminal output until `marker` (None: until the server closes)."""
        out = b""
        while marker is None or marker not in out:
            try:
                opcode, data = self.read_message()
            except EOFError:
                break
            if opcode == 2:
                out += data
            elif opcode == 1:
                self.exit = json.loads(data)
            elif opcode == 8:
                self._send(8, data[:2])
                break
        return out


if __name__ == "__main__":
    unittest.main()
