"""Limits: memory, processes and CPU, each shown to bite (and, for CPU, not to bite without it)."""

import subprocess
import time
import unittest

from pitbox_test import CGROUP_PARENT, PitboxTestCase

# Spins for one second of wall time and prints the CPU time it got.
SPIN = ("import os, time\n"
        "t = time.time()\n"
        "while time.time() - t < 1.0: pass\n"
        "c = os.times()\n"
        "print(c.user + c.system)\n")


class LimitsTest(PitboxTestCase):
    def test_memory_hog_is_oom_killed_and_reported(self):
        code, out, err = self.run_box("--memory", "64m", "--image", "host", "--", "python3", "-c",
                                      "x = b'x' * (400 << 20); print('survived')")
        self.assertEqual(code, 137, err)
        self.assertNotIn("survived", out)
        self.assertIn("out of memory", err)
        self.assertIn("64 MiB", err)

    def test_the_same_program_runs_without_the_limit(self):
        code, out, err = self.run_box("--image", "host", "--", "python3", "-c",
                                      "x = b'x' * (400 << 20); print('survived')")
        self.assertEqual((code, out), (0, "survived\n"), err)

    def test_tmp_counts_against_memory(self):
        # /tmp is memory: filling it past the limit fails instead of eating the host's RAM.
        code, out, err = self.run_box("--memory", "32m", "--image", "busybox", "--", "sh", "-c",
                                      "dd if=/dev/zero of=/tmp/big bs=1M count=64 2>&1; echo rc=$?")
        self.assertNotIn("rc=0", out)

    def test_pids_limit_stops_a_fork_bomb(self):
        limit = 64
        p = self.start_box("--image", "busybox", "--pids", str(limit), "--cpus", "1", "--", "sh",
                           "-c", "hostname; bomb() { bomb | bomb & }; bomb 2>/dev/null; sleep 60")
        box_id = p.stdout.readline().decode().strip()
        current = "/sys/fs/cgroup/pids/%s/%s/pids.current" % (CGROUP_PARENT, box_id)
        peak = 0
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                with open(current) as f:
                    peak = max(peak, int(f.read()))
            except OSError:
                pass
            time.sleep(0.05)
        self.assertGreater(peak, limit // 2, "the bomb never got going")
        self.assertLessEqual(peak, limit)
        # The host keeps working meanwhile.
        subprocess.run(["/bin/true"], check=True, timeout=30)

    def test_pids_limit_counts_every_process(self):
        # With 10 pids, init and python leave room for 8 children.
        forks = ("import os, time\n"
                 "n = 0\n"
                 "for i in range(50):\n"
                 "    try:\n"
                 "        pid = os.fork()\n"
                 "    except OSError:\n"
                 "        break\n"
                 "    if pid == 0:\n"
                 "        time.sleep(30)\n"
                 "        os._exit(0)\n"
                 "    n += 1\n"
                 "print(n)\n")
        code, out, err = self.run_box("--image", "host", "--pids", "10", "--", "python3", "-c", forks)
        self.assertEqual((code, out), (0, "8\n"), err)

    def test_cpu_quota_is_applied(self):
        code, out, err = self.run_box("--cpus", "0.2", "--image", "host", "--", "python3", "-c", SPIN)
        self.assertEqual(code, 0, err)
        limited = float(out)
        code, out, err = self.run_box("--image", "host", "--", "python3", "-c", SPIN)
        unlimited = float(out)
        self.assertLess(limited, 0.45, "with --cpus 0.2 it got %.2f s of CPU in 1 s" % limited)
        self.assertGreater(unlimited, limited * 1.5, (unlimited, limited))


if __name__ == "__main__":
    unittest.main()
