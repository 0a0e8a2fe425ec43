"""Bad input: a one-line error naming the problem, exit code 125, and nothing left behind
(the base class checks for cgroups, run directories, mounts and processes after every test)."""

import unittest

from pitbox_test import EXIT_PITBOX_ERROR, PitboxTestCase


class BadInputTest(PitboxTestCase):
    def assert_refused(self, args, *words):
        code, out, err = self.run_box(*args)
        self.assertEqual(code, EXIT_PITBOX_ERROR, err)
        self.assertEqual(out, "")
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith("pitbox: "), err)
        for w in words:
            self.assertIn(w, lines[0])

    def test_unknown_image(self):
        self.assert_refused(["--image", "ubuntu", "--", "true"], "ubuntu", "busybox", "host")

    def test_bad_sizes(self):
        self.assert_refused(["--memory", "12x", "--", "true"], '"12x"')
        self.assert_refused(["--memory", "lots", "--", "true"], '"lots"')
        self.assert_refused(["--memory", "1m", "--", "true"], "minimum")
        self.assert_refused(["--cpus", "abc", "--", "true"], '"abc"')
        self.assert_refused(["--cpus", "0", "--", "true"], '"0"')
        self.assert_refused(["--cpus", "99", "--", "true"], "99")
        self.assert_refused(["--pids", "1", "--", "true"], "--pids")
        self.assert_refused(["--pids", "many", "--", "true"], "many")

    def test_missing_command(self):
        self.assert_refused(["--image", "busybox"], "no command")
        self.assert_refused(["--image", "busybox", "--"], "no command")

    def test_command_not_in_the_box(self):
        self.assert_refused(["--image", "busybox", "--", "python3", "-c", "1"], "python3")
        self.assert_refused(["--image", "busybox", "--", "/no/such/program"], "/no/such/program")

    def test_command_that_is_not_executable(self):
        self.assert_refused(["--image", "busybox", "--", "/etc/passwd"], "/etc/passwd")

    def test_limit_the_kernel_refuses(self):
        # 0.001 CPU is 100 us per 100 ms period, below the kernel's 1 ms minimum quota.
        self.assert_refused(["--cpus", "0.001", "--", "true"], "cpu", "kernel")

    def test_bad_workdir_and_user(self):
        self.assert_refused(["--workdir", "relative/dir", "--", "true"], "relative/dir")
        self.assert_refused(["--image", "busybox", "--user", "nosuchuser", "--", "true"],
                            "nosuchuser")

    def test_unknown_option(self):
        code, _, err = self.run_box("--frobnicate", "--", "true")
        self.assertEqual(code, EXIT_PITBOX_ERROR, err)
        self.assertIn("frobnicate", err)


if __name__ == "__main__":
    unittest.main()
