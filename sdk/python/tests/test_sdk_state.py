"""A sandbox's state in the Python SDK: pause and resume, resize, snapshots and rollback, fork,
archive — the agent of issue 5, all through the SDK, against a real daemon."""

from __future__ import annotations

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sdk import SdkTestCase  # noqa: E402  (also puts the SDK on sys.path)

from pitbox import Conflict, InvalidArgument, NotFound, Sandbox, Snapshot  # noqa: E402


class StateTest(SdkTestCase):
    def track(self, box: Sandbox) -> Sandbox:
        """Deleted when the test ends."""
        return self.enterContext(box)

    def test_the_agent_of_the_issue(self) -> None:
        box = self.box(name="sdk-agent")
        box.exec("mkdir -p /opt/tool && echo v1 > /opt/tool/v")

        snap = box.snapshot("sdk-installed")
        self.addCleanup(self.pb.snapshots.delete, snap)
        self.assertIsInstance(snap, Snapshot)
        self.assertEqual((snap.name, snap.sandbox_id), ("sdk-installed", box.id))
        self.assertEqual([s.id for s in box.snapshots()], [snap.id])
        self.assertEqual(self.pb.snapshots.get("sdk-installed").id, snap.id)

        kids = [self.track(k) for k in box.fork(10)]
        self.assertEqual(len({k.id for k in kids}), 10)
        self.assertEqual(sorted(box.children), sorted(k.id for k in kids))
        for i, k in enumerate(kids):
            self.assertEqual((k.state, k.forked_from), ("started", box.id))
            k.exec("echo %d > /opt/tool/mine" % i)
        for i, k in enumerate(kids):
            self.assertEqual(k.exec("cat /opt/tool/v /opt/tool/mine").stdout, "v1\n%d\n" % i)

        # Roll one back: the fork's own file goes, the snapshot's stays. A fork is not the
        # snapshot's sandbox, so it is rolled back through a snapshot of its own.
        own = kids[0].snapshot()
        self.addCleanup(self.pb.snapshots.delete, own)
        kids[0].exec("rm -rf /opt/tool")
        self.assertEqual(kids[0].restore(own).state, "started")
        self.assertEqual(kids[0].exec("cat /opt/tool/mine").stdout, "0\n")
        box.exec("rm -rf /opt/tool")
        box.restore("sdk-installed")
        self.assertEqual(box.exec("cat /opt/tool/v; ls /opt/tool").stdout, "v1\nv\n")

        # Pause one: a command waits for resume (or asks for it).
        kids[1].pause()
        self.assertEqual(kids[1].refresh().state, "paused")
        with self.assertRaises(Conflict):
            kids[1].exec("true")
        self.assertEqual(kids[1].resume().state, "started")
        kids[1].pause()
        self.assertEqual(kids[1].exec("cat /opt/tool/mine", auto_resume=True).stdout, "1\n")
        self.assertEqual(kids[1].refresh().state, "started")

        # Archive one and bring it back.
        kids[2].stop()
        self.assertEqual(kids[2].archive().state, "archived")
        self.assertEqual(kids[2].start().state, "started")
        self.assertEqual(kids[2].exec("cat /opt/tool/mine").stdout, "2\n")

        # Resize one.
        kids[3].resize(memory="300m", pids=99)
        self.assertEqual((kids[3].memory, kids[3].pids), (300 << 20, 99))

        # A new sandbox from the snapshot.
        fresh = self.box(snapshot=snap)
        self.assertEqual(fresh.snapshot_id, snap.id)
        self.assertEqual(fresh.exec("cat /opt/tool/v").stdout, "v1\n")

    def test_bad_input(self) -> None:
        box = self.box()
        with self.assertRaises(InvalidArgument):
            box.fork(0)
        with self.assertRaises(InvalidArgument):
            box.resize()
        with self.assertRaises(NotFound):
            self.pb.snapshots.get("no-such-snapshot")
        with self.assertRaises(NotFound):
            self.pb.create(snapshot="no-such-snapshot")
        with self.assertRaises(Conflict):
            box.resume().archive()  # only a stopped sandbox is archived
        snap = box.snapshot()
        self.assertIn(snap.id, [s.id for s in self.pb.snapshots.list(box.id)])
        self.pb.snapshots.delete(snap.id)
        self.assertNotIn(snap.id, [s.id for s in self.pb.snapshots.list()])


if __name__ == "__main__":
    unittest.main()
