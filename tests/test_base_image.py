"""The Debian base image: built with mmdebstrap from Debian's archive (a minute or so), then the
default image of creates that name none, with python3 and git in it."""

import unittest

from daemon import DaemonTestCase


class BaseImageTest(DaemonTestCase):
    def test_build_base_then_default_creates_have_python_and_git(self):
        # Before it is built the default is the host image.
        self.assertEqual(self.create()["image"], "host")
        self.env.env["PITBOX_API_URL"] = self.daemon.url
        r = self.pitbox("image", "build-base", timeout=1800)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn(b"mmdebstrap", r.stderr)  # its progress was shown
        image_id = r.stdout.decode().strip()
        img = self.ok("GET", "/v1/images/base")
        self.assertEqual(img["id"], image_id)
        self.assertEqual(sorted(img["tags"]), ["base:bookworm", "base:latest"])
        # Asked again: it exists, nothing is built.
        again = self.ok("POST", "/v1/images/base", {})
        self.assertEqual(again["status"], "exists")
        # pitbox create with no image: the base, with python3 and git.
        r = self.pitbox("create", "--name", "dflt")
        self.assertEqual(r.returncode, 0, r.stderr)
        sb = self.ok("GET", "/v1/sandboxes/dflt")
        self.assertEqual((sb["image"], sb["image_id"]), ("base", image_id))
        out = self.sh("dflt", "python3 -c 'print(6*7)'; git --version; cat /etc/debian_version; pwd")
        self.assertEqual(out["exit_code"], 0, out)
        lines = out["stdout"].splitlines()
        self.assertEqual(lines[0], "42")
        self.assertTrue(lines[1].startswith("git version"), lines)
        self.assertTrue(lines[2].startswith("12."), lines)
        self.assertEqual(lines[3], "/root")
        # The base cannot go while a sandbox uses it.
        r = self.api("DELETE", "/v1/images/" + image_id)
        self.assertEqual(r.status, 409, r)


if __name__ == "__main__":
    unittest.main()
