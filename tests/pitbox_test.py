"""Helpers for the integration tests: run the real pitbox binary and check what it leaves behind.

Every test module gets its own state directory and cgroup parent, so a pitbox running on the same
machine is never touched, and the leftover checks see only what the tests made.
"""

import glob
import os
import pty
import select
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PITBOX = os.environ.get("PITBOX_BIN", os.path.join(REPO, "out", "bin", "pitbox"))
CGROUP_PARENT = "pitbox-it"
ID_BASE = 1 << 30  # host ids of boxes start here (node/ids.h)
EXIT_PITBOX_ERROR = 125


def fnv1a(text):
    h = 1469598103934665603
    for b in text.encode():
        h ^= b
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


class Env:
    """One state directory for a test module."""

    def __init__(self):
        self.state = tempfile.mkdtemp(prefix="pitbox-it-")
        self.run_dir = "/run/pitbox/" + fnv1a(self.state)
        self.env = dict(os.environ, PITBOX_STATE=self.state, PITBOX_CGROUP_PARENT=CGROUP_PARENT)

    def close(self):
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def cgroup_leftovers():
    found = []
    for path in glob.glob("/sys/fs/cgroup/*/%s/*" % CGROUP_PARENT):
        if os.path.isdir(path):
            found.append(path)
    return found


def box_processes():
    """Host pids of live processes (not zombies) running with a box's host ids."""
    pids = []
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            with open(status) as f:
                fields = dict(l.split(":", 1) for l in f if ":" in l)
            if fields["State"].split()[0] != "Z" and int(fields["Uid"].split()[0]) >= ID_BASE:
                pids.append(int(status.split("/")[2]))
        except (OSError, KeyError, ValueError):
            pass
    return pids


def in_boxes(pid, ids):
    """Whether process `pid` is in the cgroup of one of the boxes `ids`."""
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            return any(os.path.basename(line.strip()) in ids for line in f)
    except OSError:
        return False


def descendants(pid):
    """Host pids of every process descended from `pid` (a pitbox run: its box)."""
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            pass
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class PitboxTestCase(unittest.TestCase):
    """Runs pitbox; after every test, nothing of any box may be left on the machine."""

    env = None

    @classmethod
    def setUpClass(cls):
        cls.env = Env()

    @classmethod
    def tearDownClass(cls):
        cls.env.close()

    def setUp(self):
        # Cleanups run last-registered first: this one runs after a test's own (such as
        # stopping the boxes it started in the background).
        self.addCleanup(self.assert_nothing_left)

    def pitbox(self, *args, input=None, timeout=120, stdin=None):
        """Runs pitbox with the test's state directory; returns the CompletedProcess."""
        kwargs = dict(capture_output=True, timeout=timeout, env=self.env.env)
        if input is not None:
            kwargs["input"] = input.encode() if isinstance(input, str) else input
        else:
            kwargs["stdin"] = stdin if stdin is not None else subprocess.DEVNULL
        return subprocess.run([PITBOX] + list(args), **kwargs)

    def run_box(self, *args, **kwargs):
        """pitbox run ARGS; returns (exit code, stdout, stderr) as text."""
        r = self.pitbox("run", *args, **kwargs)
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def start_box(self, *args):
        """Starts pitbox run ARGS in the background with stdout piped; stopped after the test
        (SIGTERM, then SIGKILL) if it is still running."""
        p = subprocess.Popen([PITBOX, "run"] + list(args), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=self.env.env)
        self.addCleanup(self._stop, p)
        return p

    @staticmethod
    def _stop(p):
        if p.poll() is not None:
            return
        p.terminate()  # forwarded to the box's command; pitbox then removes the box
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def box_pids(self, p, count, timeout=10):
        """The host pids of the box of pitbox run `p`, once there are at least `count`."""
        deadline = time.time() + timeout
        pids = descendants(p.pid)
        while len(pids) < count and time.time() < deadline:
            time.sleep(0.05)
            pids = descendants(p.pid)
        return pids

    def kept_boxes(self):
        """Ids of boxes that may outlive a test (a daemon's pool)."""
        return set()

    def kept_mounts(self):
        """Mount points of the test's own making that may outlive a test."""
        return set()

    def assert_nothing_left(self):
        deadline = time.time() + 5
        while True:
            problems = []
            kept = self.kept_boxes()
            left = [c for c in cgroup_leftovers() if os.path.basename(c) not in kept]
            if left:
                problems.append("cgroups: %s" % left)
            one_shot = os.path.join(self.env.run_dir, "one-shot")
            if os.path.isdir(one_shot) and os.listdir(one_shot):
                problems.append("run directories: %s" % os.listdir(one_shot))
            with open("/proc/self/mountinfo") as f:
                mounts = [l for l in f if (self.env.state in l or self.env.run_dir in l) and
                          l.split()[4] not in self.kept_mounts()]
            if mounts:
                problems.append("mounts: %s" % mounts)
            procs = [p for p in box_processes() if not in_boxes(p, kept)]
            if procs:
                problems.append("box processes on the host: %s" % procs)
            if not problems or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(problems, [], "left behind")


class Pty:
    """A program on a pseudo-terminal, as a person at a terminal would run it."""

    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, env)
        self.out = b""

    def close(self):
        """Kills the program if it still runs (a test that failed half-way) and reaps it."""
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            # SIGTERM first: pitbox then removes its box.
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.time() + 10
            while pid == 0 and time.time() < deadline:
                time.sleep(0.05)
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        try:
            os.close(self.fd)
        except OSError:
            pass

    def write(self, data):
        os.write(self.fd, data.encode() if isinstance(data, str) else data)

    def expect(self, text, timeout=20):
        text = text.encode() if isinstance(text, str) else text
        deadline = time.time() + timeout
        while text not in self.out and time.time() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.out += os.read(self.fd, 4096)
                except OSError:
                    break
        return text in self.out

    def wait(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if ready:
                    self.out += os.read(self.fd, 4096)
            except OSError:
                time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("program on the terminal did not end")
