"""The state suite (test_state.py) again on the btrfs storage driver: the daemon makes a btrfs
pool in a loop file under its state directory (pitbox serve --storage btrfs:SIZE), and box
writable layers and snapshots are subvolumes. Plus what only btrfs has: disk quotas."""

import os
import subprocess
import unittest

import test_state


class BtrfsMixin:
    serve_args = ("--storage", "btrfs:1G")
    storage_root = "pool"
    disk_quotas = True

    def kept_mounts(self):
        return {os.path.join(self.env.state, "pool")}


def btrfs_class(base):
    class Btrfs(BtrfsMixin, base):
        @classmethod
        def tearDownClass(cls):
            pool = os.path.join(cls.env.state, "pool")
            try:
                if cls.daemon:
                    cls.daemon.stop()
                    cls.daemon = None
            finally:
                subprocess.run(["umount", "-l", pool], stderr=subprocess.DEVNULL)
                base.tearDownClass.__func__(cls)

    Btrfs.__name__ = Btrfs.__qualname__ = "Btrfs" + base.__name__
    return Btrfs


BtrfsPauseTest = btrfs_class(test_state.PauseTest)
BtrfsResizeTest = btrfs_class(test_state.ResizeTest)
BtrfsSnapshotForkTest = btrfs_class(test_state.SnapshotForkTest)


class BtrfsQuotaTest(btrfs_class(test_state.StateTestCase)):
    def test_a_disk_limit_holds_and_moves(self):
        box = self.create(disk="32M")["id"]
        self.assertEqual(self.ok("GET", "/v1/sandboxes/" + box)["disk"], 32 << 20)
        r = self.sh(box, "head -c 64000000 /dev/zero > /big; echo $?; sync")
        self.assertNotEqual(r["stdout"].splitlines()[0], "0", r)
        self.assertIn("quota", r["stderr"].lower())
        self.sh(box, "rm -f /big; sync")
        self.ok("POST", "/v1/sandboxes/%s/resize" % box, {"disk": "128M"})
        r = self.sh(box, "head -c 64000000 /dev/zero > /big && echo ok")
        self.assertEqual(r["stdout"], "ok\n", r)


if __name__ == "__main__":
    unittest.main()
