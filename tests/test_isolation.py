"""Isolation: what a process in a box can see and do. Each test would fail if the property it
checks were broken (the comments say what would happen without it)."""

import json
import os
import tempfile
import time
import unittest

from pitbox_test import ID_BASE, PitboxTestCase

# Syscalls the seccomp filter denies, called with arguments that would not fail with EPERM
# without the filter (most would succeed or fail with EFAULT/EINVAL/ENOKEY).
SECCOMP_PROBE = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return 0 if r >= 0 else ctypes.get_errno()
params = ctypes.create_string_buffer(120)
print(json.dumps({
    "unshare(CLONE_NEWUSER)": call(272, 0x10000000),
    "setns": call(308, 0, 0),
    "add_key": call(248, b"user", b"k", b"v", 1, -2),
    "keyctl": call(250, 0, -2, 0),
    "bpf": call(321, 0, 0, 0),
    "perf_event_open": call(298, 0, 0, -1, -1, 0),
    "io_uring_setup": call(425, 1, params),
    "userfaultfd": call(323, 0),
    "kexec_load": call(246, 0, 0, 0, 0),
    "init_module": call(175, 0, 0, b""),
    "finit_module": call(313, 0, b"", 0),
    "delete_module": call(176, b"nothing", 0),
    "reboot": call(169, 0xfee1dead, 672274793, 0, 0),
    "swapon": call(167, b"/nonexistent", 0),
    "open_by_handle_at": call(304, 0, 0, 0),
    "mount": call(165, b"none", b"/mnt", b"tmpfs", 0, 0),
    "umount2": call(166, b"/proc", 2),
    "pivot_root": call(155, b"/", b"/"),
    "fsopen": call(430, b"tmpfs", 0),
    "open_tree": call(428, -100, b"/", 1),
    "settimeofday": call(164, 0, 0),
    "clone(CLONE_NEWNS)": call(56, 0x20000 | 17, 0, 0, 0, 0),
}))
"""


class IsolationTest(PitboxTestCase):
    def box(self, script, image="busybox", *extra):
        code, out, err = self.run_box("--image", image, *extra, "--", "sh", "-c", script)
        self.assertEqual(code, 0, err)
        return out

    def test_sees_only_its_own_processes(self):
        # Without a pid namespace, /proc would list every process of the host.
        out = self.box("ls /proc | grep -c '^[0-9][0-9]*$'; cat /proc/1/comm")
        count, init = out.split()
        self.assertLessEqual(int(count), 4)  # init, sh, ls, grep
        self.assertEqual(init, "pitbox-init")

    def test_cannot_see_host_files(self):
        with tempfile.NamedTemporaryFile(dir="/tmp", prefix="pitbox-secret-") as secret:
            name = os.path.basename(secret.name)
            out = self.box(
                "ls -A /root /home /tmp /var/tmp | grep -v ':$' | grep -v '^$' | wc -l;"
                "test -e /tmp/%s && echo SEEN; test -e /etc/shadow && echo SHADOW;"
                "test -e %s && echo STATE; test -e /work && echo WORK; echo done"
                % (name, self.env.state), image="host")
        self.assertEqual(out.split(), ["0", "done"])

    def test_host_etc_is_not_the_box_etc(self):
        out = self.box("cat /etc/passwd", image="host")
        with open("/etc/passwd") as f:
            host_users = {l.split(":")[0] for l in f}
        box_users = {l.split(":")[0] for l in out.splitlines()}
        self.assertEqual(box_users, {"root", "nobody"})
        self.assertTrue(host_users - box_users)

    def test_root_in_the_box_is_an_unprivileged_host_user(self):
        out = self.box("cat /proc/self/uid_map /proc/self/gid_map")
        for line in out.splitlines():
            inside, outside, count = map(int, line.split())
            self.assertEqual((inside, count), (0, 65536))
            self.assertGreaterEqual(outside, ID_BASE)
            self.assertEqual(outside % 65536, 0)

    def test_box_processes_run_as_their_host_range(self):
        p = self.start_box("--image", "busybox", "--", "sh", "-c", "hostname; exec sleep 30")
        p.stdout.readline()
        pids = self.box_pids(p, 2)
        self.assertGreaterEqual(len(pids), 2, "init and sleep")
        for pid in pids:
            try:
                with open("/proc/%d/status" % pid) as f:
                    uids = next(l for l in f if l.startswith("Uid:")).split()[1:]
            except FileNotFoundError:
                continue  # a short-lived process (hostname) that has ended
            self.assertTrue(all(int(u) >= ID_BASE for u in uids), (pid, uids))

    def test_host_owned_files_cannot_be_written(self):
        # The host image binds the host's /usr: owned by the host's root, which is nobody in the
        # box, and read-only. Both must hold: even a read-write view would not let box root in.
        out = self.box("stat -c %u /usr/bin; touch /usr/pitbox-test 2>&1;"
                       "sh -c 'echo x > /usr/bin/sh' 2>&1; echo end", image="host")
        lines = out.splitlines()
        self.assertEqual(lines[0], "65534")
        self.assertIn("Read-only file system", lines[1])
        self.assertIn("Read-only file system", lines[2])
        self.assertFalse(os.path.exists("/usr/pitbox-test"))

    def test_cannot_mount(self):
        out = self.box("mkdir -p /mnt/x; mount -t tmpfs none /mnt/x 2>&1; echo rc=$?;"
                       "mount --bind /etc /mnt/x 2>&1; echo rc=$?; umount /proc 2>&1; echo rc=$?")
        self.assertEqual([l for l in out.splitlines() if l.startswith("rc=")], ["rc=1"] * 3, out)

    def test_denied_syscalls(self):
        code, out, err = self.run_box("--image", "host", "--", "python3", "-c", SECCOMP_PROBE)
        self.assertEqual(code, 0, err)
        results = json.loads(out)
        eperm = 1
        self.assertEqual({k: v for k, v in results.items() if v != eperm}, {})

    def test_clone3_is_reported_as_not_implemented(self):
        # So that libc falls back to clone, whose flags the filter can check.
        probe = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True);"
                 "r = libc.syscall(435, None, 0); print(ctypes.get_errno())")
        code, out, _ = self.run_box("--image", "host", "--", "python3", "-c", probe)
        self.assertEqual(out.strip(), "38")  # ENOSYS

    def test_hardening_is_in_place(self):
        out = self.box("grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd|CapPrm|CapInh|CapAmb):' "
                       "/proc/self/status")
        status = dict(l.split(":\t") for l in out.splitlines())
        self.assertEqual(status["Seccomp"], "2")
        self.assertEqual(status["NoNewPrivs"], "1")
        # chown dac_override fowner fsetid kill setgid setuid setpcap net_bind_service
        # sys_chroot audit_write setfcap
        expected = "00000000a00405fb"
        self.assertEqual(status["CapBnd"], expected)
        self.assertEqual(status["CapEff"], expected)
        self.assertEqual(status["CapInh"], "0000000000000000")
        self.assertEqual(status["CapAmb"], "0000000000000000")

    def test_kernel_settings_are_read_only(self):
        # The box owns its network namespace: without the read-only /proc/sys this would work.
        out = self.box("echo 1 > /proc/sys/net/ipv4/ip_forward 2>&1; echo rc=$?;"
                       "echo 1 > /proc/sys/kernel/hostname 2>&1; echo rc=$?;"
                       "touch /sys/kernel/pitbox 2>&1; echo rc=$?")
        self.assertEqual([l for l in out.splitlines() if l.startswith("rc=")], ["rc=1"] * 3, out)
        self.assertIn("Read-only", out)

    def test_sensitive_proc_files_are_masked(self):
        # /proc/keys and /proc/timer_list read as empty (/dev/null is bound over them).
        out = self.box("for f in /proc/keys /proc/timer_list /proc/kcore /proc/sched_debug; do"
                       "  test -e $f && echo $f $(wc -c < $f); done; ls /sys/firmware | wc -l")
        for line in out.splitlines()[:-1]:
            path, size = line.split()
            self.assertEqual(size, "0", path)
        self.assertEqual(out.splitlines()[-1], "0")

    def test_cannot_make_device_nodes(self):
        out = self.box("mknod /tmp/disk b 8 0 2>&1; echo rc=$?; mknod /tmp/mem c 1 1 2>&1; echo rc=$?")
        self.assertEqual([l for l in out.splitlines() if l.startswith("rc=")], ["rc=1", "rc=1"], out)

    def test_no_host_file_descriptors(self):
        # Only the pipes pitbox made for stdin, stdout and stderr (3 is ls's own directory).
        out = self.box("ls /proc/self/fd; for fd in 0 1 2; do readlink /proc/self/fd/$fd; done;"
                       "readlink /proc/1/fd/3 2>&1; cat /proc/1/fd/3 2>&1; cat /proc/1/environ 2>&1; true")
        lines = out.splitlines()
        self.assertEqual(lines[:4], ["0", "1", "2", "3"])
        self.assertTrue(all(l.startswith("pipe:") for l in lines[4:7]), lines)
        # init's channel is out of reach: init cannot be traced or read by the box's processes.
        for line in lines[7:10]:
            self.assertIn("Permission denied", line)

    def test_only_loopback_networking(self):
        out = self.box("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; hostname")
        lines = out.split()
        self.assertEqual(lines[0], "lo")
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[1].startswith("sb-"))

    def test_boxes_do_not_see_each_other(self):
        p = self.start_box("--image", "busybox", "--", "sh", "-c", "echo marker > /tmp/m; "
                           "hostname; exec sleep 30")
        other = p.stdout.readline().decode().strip()
        out = self.box("cat /tmp/m 2>&1; ps | grep -c '[s]leep 30'; hostname")
        lines = out.splitlines()
        self.assertIn("No such file", lines[0])
        self.assertEqual(lines[1], "0")
        self.assertNotEqual(lines[2], other)


if __name__ == "__main__":
    unittest.main()
