"""Lifecycle: a box ends with its command, takes every process with it, and leaves nothing on
the machine: not after a normal end, a killed command, a failed start, or a killed pitbox."""

import os
import signal
import subprocess
import time
import unittest

from pitbox_test import PitboxTestCase


class LifecycleTest(PitboxTestCase):
    def assert_gone(self, pids):
        deadline = time.time() + 10
        alive = pids
        while alive and time.time() < deadline:
            alive = [p for p in pids if os.path.exists("/proc/%d" % p)]
            time.sleep(0.05)
        self.assertEqual(alive, [])

    def test_background_processes_die_with_the_command(self):
        # The command leaves a daemon behind; it must not outlive the box.
        code, out, _ = self.run_box("--image", "busybox", "--", "sh", "-c",
                                    "nohup sleep 1000 >/dev/null 2>&1 & echo started")
        self.assertEqual((code, out), (0, "started\n"))

    def test_terminating_pitbox_ends_the_box(self):
        p = self.start_box("--image", "busybox", "--", "sh", "-c",
                           "hostname; sleep 1000 & sleep 1000 & wait")
        p.stdout.readline()
        pids = self.box_pids(p, 4)  # init, sh, two sleeps
        self.assertGreaterEqual(len(pids), 4)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=30), 128 + signal.SIGTERM)
        self.assert_gone(pids)

    def test_killing_pitbox_kills_the_box_and_the_next_run_sweeps_it(self):
        p = self.start_box("--image", "busybox", "--", "sh", "-c", "hostname; exec sleep 1000")
        p.stdout.readline()
        pids = self.box_pids(p, 2)
        self.assertGreaterEqual(len(pids), 2)
        p.kill()  # no chance to clean up
        p.wait()
        self.assert_gone(pids)
        # What it could not remove (its cgroup, its run directory) goes with the next run.
        code, _, _ = self.run_box("--image", "busybox", "--", "true")
        self.assertEqual(code, 0)

    def test_command_killed_from_inside(self):
        code, _, _ = self.run_box("--image", "busybox", "--", "sh", "-c", "sleep 100 & kill -9 $$")
        self.assertEqual(code, 137)

    def test_failed_start_leaves_nothing(self):
        for args in (["--cpus", "0.001", "--", "true"],
                     ["--image", "busybox", "--", "no-such-command"],
                     ["--image", "busybox", "--user", "ghost", "--", "true"]):
            code, _, err = self.run_box(*args)
            self.assertEqual(code, 125, err)
            self.assert_nothing_left()

    def test_interrupted_while_starting(self):
        # ^C while the box is being made: pitbox still cleans up.
        for delay in (0.0005, 0.002, 0.005):
            p = self.start_box("--image", "busybox", "--", "sleep", "5")
            time.sleep(delay)
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                self.fail("pitbox did not end after SIGINT")
            self.assert_nothing_left()

    def test_many_boxes_at_once(self):
        procs = [self.start_box("--image", "busybox", "--", "sh", "-c", "echo $(hostname)")
                 for _ in range(10)]
        ids = set()
        for p in procs:
            out, _ = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0)
            ids.add(out.decode().strip())
        self.assertEqual(len(ids), 10)


if __name__ == "__main__":
    unittest.main()
