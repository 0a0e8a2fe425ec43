"""The files API: raw reads and writes, listing, stat, mkdir, remove, move, chmod, chown, find,
grep and tar, always inside the box."""

import hashlib
import io
import os
import tarfile
import unittest

from daemon import DaemonTestCase, q

F = "/v1/sandboxes/fs/files"


class FilesTest(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.create(name="fs")

    def put(self, path, data, **params):
        return self.api("PUT", F + q(path=path, **params), raw=data)

    def get(self, path):
        return self.api("GET", F + q(path=path))

    def test_write_and_read_bytes_of_any_size(self):
        data = os.urandom(5 << 20) + b"\x00end"
        r = self.put("/data/blob.bin", data)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"path": "/data/blob.bin", "size": len(data)})
        got = self.get("/data/blob.bin")
        self.assertEqual(got.status, 200)
        self.assertEqual(hashlib.sha256(got.body).hexdigest(), hashlib.sha256(data).hexdigest())
        self.assertEqual(self.sh("fs", "wc -c < /data/blob.bin")["stdout"].strip(),
                         str(len(data)))
        # Replacing keeps no temporary files around, and an empty file is a file.
        self.assertEqual(self.put("/data/blob.bin", b"").json()["size"], 0)
        self.assertEqual(self.sh("fs", "ls -A /data")["stdout"], "blob.bin\n")
        self.assertEqual(self.get("/data/blob.bin").body, b"")

    def test_mode_on_write_and_chmod_chown(self):
        self.assertEqual(self.put("/tmp/run.sh", b"#!/bin/sh\necho ran\n", mode="755").status, 200)
        self.assertEqual(self.exec("fs", "/tmp/run.sh")["stdout"], "ran\n")
        e = self.ok("POST", F + "/chmod", {"path": "/tmp/run.sh", "mode": "600"})
        self.assertEqual(e["mode"], 0o600)
        e = self.ok("POST", F + "/chown", {"path": "/tmp/run.sh", "uid": 1000, "gid": 1000})
        self.assertEqual((e["uid"], e["gid"]), (1000, 1000))
        self.assertEqual(self.sh("fs", "stat -c %u:%g:%a /tmp/run.sh")["stdout"], "1000:1000:600\n")

    def test_list_stat_mkdir_move_remove(self):
        e = self.ok("POST", F + "/mkdir", {"path": "/w/a/b"}, status=201)
        self.assertEqual((e["type"], e["path"]), ("dir", "/w/a/b"))
        for i in range(5):
            self.put("/w/f%d" % i, b"x" * i)
        names, cursor = [], None
        while True:
            page = self.ok("GET", F + "/list" + q(path="/w", limit=2,
                                                  **({"cursor": cursor} if cursor else {})))
            names += [x["name"] for x in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        self.assertEqual(names, ["a", "f0", "f1", "f2", "f3", "f4"])
        st = self.ok("GET", F + "/stat" + q(path="/w/f3"))
        self.assertEqual((st["type"], st["size"], st["name"], st["path"]), ("file", 3, "f3", "/w/f3"))
        self.assertRegex(st["mtime"], r"Z$")
        e = self.ok("POST", F + "/move", {"from": "/w/f3", "to": "/w/a/moved"})
        self.assertEqual(e["path"], "/w/a/moved")
        r = self.api("POST", F + "/move", {"from": "/w/f4", "to": "/w/a/moved"})
        self.assertEqual((r.status, r.error_code), (409, "conflict"))
        self.ok("POST", F + "/move", {"from": "/w/f4", "to": "/w/a/moved", "overwrite": True})
        self.assertEqual(self.get("/w/a/moved").body, b"xxxx")
        r = self.api("DELETE", F + q(path="/w/a"))
        self.assertEqual(r.status // 100, 4, r)  # not empty
        self.assertEqual(self.api("DELETE", F + q(path="/w/a", recursive="true")).status, 204)
        self.assertEqual(self.api("GET", F + "/stat" + q(path="/w/a")).status, 404)

    def test_find_and_grep(self):
        self.ok("POST", F + "/mkdir", {"path": "/src/pkg"}, status=201)
        self.put("/src/main.py", b"import os\nprint('hello')\n")
        self.put("/src/pkg/util.py", b"def hello():\n    return 1\n")
        self.put("/src/README", b"Hello world\n")
        found = self.ok("GET", F + "/find" + q(path="/src", name="*.py"))
        self.assertEqual(sorted(x["path"] for x in found["items"]),
                         ["/src/main.py", "/src/pkg/util.py"])
        self.assertFalse(found["truncated"])
        dirs = self.ok("GET", F + "/find" + q(path="/src", type="dir"))["items"]
        self.assertEqual([x["path"] for x in dirs], ["/src/pkg"])
        hits = self.ok("GET", F + "/grep" + q(path="/src", pattern="hello"))["items"]
        self.assertEqual(sorted((h["path"], h["line"]) for h in hits),
                         [("/src/main.py", 2), ("/src/pkg/util.py", 1)])
        hits = self.ok("GET", F + "/grep" + q(path="/src", pattern="hello", ignore_case="true",
                                              glob="README"))["items"]
        self.assertEqual([(h["path"], h["text"]) for h in hits], [("/src/README", "Hello world")])
        hits = self.ok("GET", F + "/grep" + q(path="/src", pattern="^def [a-z]+\\(", regex="true"))
        self.assertEqual(len(hits["items"]), 1)
        r = self.api("GET", F + "/grep" + q(path="/src", pattern="(", regex="true"))
        self.assertEqual(r.status, 400)

    def test_tar_round_trip(self):
        buf = io.BytesIO()
        binary = os.urandom(70000)
        with tarfile.open(fileobj=buf, mode="w") as t:
            for name, data in [("proj/a.txt", b"alpha\n"), ("proj/sub/b.bin", binary),
                               ("proj/" + "long" * 40 + ".txt", b"long name\n")]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o640
                t.addfile(info, io.BytesIO(data))
            link = tarfile.TarInfo("proj/link")
            link.type = tarfile.SYMTYPE
            link.linkname = "a.txt"
            t.addfile(link)
        r = self.api("PUT", F + "/tar" + q(path="/dst"), raw=buf.getvalue())
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json()["files"], r.json()["links"]), (3, 1))
        self.assertEqual(self.sh("fs", "cat /dst/proj/link; stat -c %a /dst/proj/a.txt")["stdout"],
                         "alpha\n640\n")
        got = self.api("GET", F + "/tar" + q(path="/dst/proj"))
        self.assertEqual(got.status, 200)
        self.assertEqual(got.headers["Content-Type"], "application/x-tar")
        with tarfile.open(fileobj=io.BytesIO(got.body)) as t:
            members = {m.name: m for m in t.getmembers()}
            self.assertEqual(t.extractfile("sub/b.bin").read(), binary)
            self.assertEqual(t.extractfile("long" * 40 + ".txt").read(), b"long name\n")
            self.assertEqual(members["link"].linkname, "a.txt")
            self.assertTrue(members["sub"].isdir())

    def test_tar_upload_refuses_names_that_climb_out(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo("../../escape.txt")
            info.size = 3
            t.addfile(info, io.BytesIO(b"bad"))
        r = self.api("PUT", F + "/tar" + q(path="/dst"), raw=buf.getvalue())
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.api("GET", F + "/stat" + q(path="/escape.txt")).status, 404)
        r = self.api("PUT", F + "/tar" + q(path="/dst"), raw=b"not a tar archive at all" * 100)
        self.assertEqual(r.status, 400, r)


class FilesConfinementTest(DaemonTestCase):
    """Paths are resolved inside the box: `..` and symlinks never reach the host."""

    def setUp(self):
        super().setUp()
        self.create(name="fs")
        self.marker = os.path.join(self.env.state, "host-secret")
        with open(self.marker, "w") as f:
            f.write("host only\n")

    def test_dotdot_and_symlinks_stay_in_the_box(self):
        self.sh("fs", "ln -s / /tmp/root-link; ln -s ../../../../../../../ /tmp/up;"
                      " ln -s %s /tmp/direct" % self.marker)
        for path in ["/../../../../" + self.marker, "/tmp/up" + self.marker,
                     "/tmp/root-link" + self.marker, "/tmp/direct"]:
            r = self.api("GET", F + q(path=path))
            self.assertEqual(r.status, 404, (path, r))
        # Writes through links land in the box, never on the host.
        r = self.api("PUT", F + q(path="/tmp/up/tmp/written-through-link"), raw=b"in box")
        self.assertEqual(r.status, 200, r)
        self.assertFalse(os.path.exists("/tmp/written-through-link"))
        self.assertEqual(self.sh("fs", "cat /tmp/written-through-link")["stdout"], "in box")
        with open(self.marker) as f:
            self.assertEqual(f.read(), "host only\n")

    def test_bad_paths_are_named(self):
        for path in ["", "relative/path"]:
            r = self.api("GET", F + q(path=path))
            self.assertEqual(r.status, 400, r)
            self.assertIn("path", r.json()["error"]["message"])
        r = self.api("GET", F + q(path="/no/such/file"))
        self.assertEqual((r.status, r.error_code), (404, "not_found"))
        self.assertIn("/no/such/file", r.json()["error"]["message"])
        r = self.api("POST", F + "/mkdir", {"path": "/x", "mode": "999"})
        self.assertEqual(r.status, 400)
        r = self.api("POST", F + "/mkdir", {"path": "/x", "colour": "red"})
        self.assertEqual(r.status, 400)
        self.assertIn("colour", r.json()["error"]["message"])
        r = self.api("PUT", F + q(path="/tmp"), raw=b"x")
        self.assertEqual(r.status, 409)


if __name__ == "__main__":
    unittest.main()
