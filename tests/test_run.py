"""pitbox run: commands, exit codes, stdio and terminals."""

import os
import unittest

from pitbox_test import PITBOX, PitboxTestCase, Pty


class RunTest(PitboxTestCase):
    def test_python_in_the_host_image(self):
        code, out, err = self.run_box("--image", "host", "--", "python3", "-c", "print(1)")
        self.assertEqual((code, out), (0, "1\n"), err)

    def test_exit_code_propagates(self):
        code, _, err = self.run_box("--image", "busybox", "--", "sh", "-c", "exit 3")
        self.assertEqual(code, 3, err)

    def test_killed_by_a_signal_is_128_plus_the_signal(self):
        code, _, _ = self.run_box("--image", "busybox", "--", "sh", "-c", "kill -9 $$")
        self.assertEqual(code, 137)
        code, _, _ = self.run_box("--image", "busybox", "--", "sh", "-c", "kill -TERM $$")
        self.assertEqual(code, 143)

    def test_stdout_and_stderr_stay_apart(self):
        code, out, err = self.run_box("--image", "busybox", "--", "sh", "-c",
                                      "echo to-out; echo to-err >&2")
        self.assertEqual((code, out, err), (0, "to-out\n", "to-err\n"))

    def test_stdin_from_a_pipe(self):
        code, out, _ = self.run_box("--image", "busybox", "--", "sh", "-c", "tr a-z A-Z",
                                    input="hello box\n")
        self.assertEqual((code, out), (0, "HELLO BOX\n"))

    def test_large_output_arrives_whole(self):
        code, out, _ = self.run_box("--image", "busybox", "--", "sh", "-c",
                                    "head -c 3000000 /dev/zero | tr '\\0' x")
        self.assertEqual(code, 0)
        self.assertEqual(len(out), 3000000)

    def test_large_input_arrives_whole(self):
        data = os.urandom(2_000_000)
        r = self.pitbox("run", "--image", "busybox", "--", "md5sum", input=data)
        import hashlib
        self.assertEqual(r.stdout.decode().split()[0], hashlib.md5(data).hexdigest())

    def test_env_workdir_and_user(self):
        code, out, err = self.run_box(
            "--image", "busybox", "--env", "GREETING=hi there", "--workdir", "/work/deep",
            "--user", "nobody", "--", "sh", "-c", 'echo "$GREETING|$(pwd)|$(id -u)|$HOME"')
        self.assertEqual((code, out), (0, "hi there|/work/deep|65534|/nonexistent\n"), err)

    def test_env_passes_a_host_variable_through(self):
        env = dict(self.env.env, PITBOX_TEST_VALUE="from the host")
        import subprocess
        r = subprocess.run([PITBOX, "run", "--image", "busybox", "-e", "PITBOX_TEST_VALUE", "--",
                            "sh", "-c", "echo $PITBOX_TEST_VALUE"], capture_output=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=60)
        self.assertEqual(r.stdout, b"from the host\n")

    def test_command_without_double_dash(self):
        code, out, _ = self.run_box("--image", "busybox", "echo", "-n", "no dashes")
        self.assertEqual((code, out), (0, "no dashes"))

    def test_interactive_shell_on_a_terminal(self):
        t = Pty([PITBOX, "run", "-t", "--image", "host", "--", "bash"], self.env.env)
        self.addCleanup(t.close)
        self.assertTrue(t.expect("#"), t.out)
        t.write("echo $((6*7)); tty; stty size\n")
        self.assertTrue(t.expect("42"), t.out)
        self.assertTrue(t.expect("/dev/pts/"), t.out)
        t.write("exit 5\n")
        self.assertEqual(t.wait(), 5, t.out)

    def test_terminal_keys_reach_the_program(self):
        # ^C on the terminal interrupts the program in the box, not pitbox. (The shell waits in
        # its builtin read: with a child, a ^C during its fork could be lost in the child.)
        t = Pty([PITBOX, "run", "-t", "--image", "busybox", "--", "sh", "-c",
                 "trap 'echo got-interrupt; exit 9' INT; echo ready; read line"], self.env.env)
        self.addCleanup(t.close)
        self.assertTrue(t.expect("ready"), t.out)
        t.write("\x03")
        self.assertTrue(t.expect("got-interrupt"), t.out)
        self.assertEqual(t.wait(), 9, t.out)


if __name__ == "__main__":
    unittest.main()
