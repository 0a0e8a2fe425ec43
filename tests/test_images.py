"""Images: import (docker save, OCI layouts; tar or directory), boxes from them, export, tags,
removal and prune, Dockerfile builds with their cache, and every kind of bad archive."""

import json
import os
import subprocess
import tarfile
import tempfile
import time
import unittest

from daemon import Daemon, DaemonTestCase, q
from oci_util import Layer, compress, docker_save, oci_layout, sha256


class ImageTestCase(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="pitbox-images-test-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        self.addCleanup(self.check_store_clean)
        self.env.env["PITBOX_API_URL"] = self.daemon.url

    def check_store_clean(self):
        # Nothing half-made is left in the store's work directory after any call.
        work = os.path.join(self.env.state, "images", "tmp")
        deadline = time.time() + 5
        while os.listdir(work) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(os.listdir(work), [])

    def import_file(self, path, tag=None, status=201):
        with open(path, "rb") as f:
            r = self.api("POST", "/v1/images/import" + (q(tag=tag) if tag else ""), raw=f.read())
        self.assertEqual(r.status, status, r)
        return r.json()

    def image_ids(self):
        return sorted(i["id"] for i in self.ok("GET", "/v1/images")["items"])

    def layer_dirs(self):
        return sorted(os.listdir(os.path.join(self.env.state, "images", "layers", "sha256")))


class ImportTest(ImageTestCase):
    def test_docker_save_archive_imports_and_runs(self):
        base = Layer().busybox().file("hello", "from the archive\n").tar_bytes()
        top = Layer().file("etc/greeting", "hi\n").dir("work").tar_bytes()
        archive, info = docker_save([base, top], ["pitbox-test/app:1"],
                                    env=["PATH=/bin", "GREETING=hello"], workdir="/work",
                                    cmd=["/bin/sh"], labels={"team": "images"})
        made = self.import_file(archive.tar(os.path.join(self.tmp, "save.tar")))["images"]
        self.assertEqual(len(made), 1)
        img = made[0]
        self.assertEqual(img["tags"], ["pitbox-test/app:1"])
        self.assertEqual([l["diff_id"] for l in img["layers"]], info["diff_ids"])
        self.assertEqual(img["config"]["env"], ["PATH=/bin", "GREETING=hello"])
        self.assertEqual(img["config"]["labels"], {"team": "images"})
        # By tag (with a "/" escaped in the path), by id and by a short id.
        for ref in ("pitbox-test%2Fapp:1", img["id"], img["id"][7:19]):
            self.assertEqual(self.ok("GET", "/v1/images/" + ref)["id"], img["id"])
        sb = self.create(image="pitbox-test/app:1")
        self.assertEqual(sb["image_id"], img["id"])
        r = self.sh(sb["id"], "cat /hello /etc/greeting; echo $GREETING; pwd")
        self.assertEqual(r["stdout"], "from the archive\nhi\nhello\n/work\n", r)
        # The CLI too: pitbox create --image, then exec.
        r = self.pitbox("create", "--name", "from-cli", "--image", "pitbox-test/app:1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.sh("from-cli", "cat /hello")["stdout"], "from the archive\n")

    def test_oci_layout_as_a_directory_with_gzip_and_zstd_layers(self):
        a, info = oci_layout([Layer().busybox().tar_bytes(),
                              Layer().file("z/file", "zstd layer\n").tar_bytes()],
                             tag="ocidir:latest", compressions=["gzip", "zstd"])
        d = a.directory(os.path.join(self.tmp, "layout"))
        r = self.pitbox("image", "import", d)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(info["id"].encode(), r.stdout)
        img = self.ok("GET", "/v1/images/ocidir")
        self.assertEqual(img["id"], info["id"])  # the manifest is kept byte for byte
        self.assertEqual([l["digest"] for l in img["layers"]], info["layers"])
        self.assertEqual([l["media_type"] for l in img["layers"]],
                         ["application/vnd.oci.image.layer.v1.tar+gzip",
                          "application/vnd.oci.image.layer.v1.tar+zstd"])
        sb = self.create(image="ocidir")
        self.assertEqual(self.sh(sb["id"], "cat /z/file")["stdout"], "zstd layer\n")

    def test_whiteouts_and_opaque_dirs_hide_lower_files(self):
        lower = (Layer().busybox().file("data/a", "a").file("data/b", "b")
                 .file("dir/old1", "1").file("dir/sub/old2", "2").tar_bytes())
        upper = (Layer().whiteout("data/a").dir("dir").opaque("dir").file("dir/new", "n")
                 .tar_bytes())
        a, _ = oci_layout([lower, upper], tag="wh:1")
        self.import_file(a.tar(os.path.join(self.tmp, "wh.tar")))
        sb = self.create(image="wh:1")
        r = self.sh(sb["id"], "ls /data; echo --; ls -R /dir")
        self.assertEqual(r["stdout"], "b\n--\n/dir:\nnew\n", r)

    def test_export_then_import_gives_the_same_digests(self):
        a, info = oci_layout([Layer().busybox().tar_bytes(),
                              Layer().file("f", "x").tar_bytes()], tag="trip:1")
        first = self.import_file(a.tar(os.path.join(self.tmp, "in.tar")))["images"][0]
        sb = self.create(image="trip:1")  # import -> box -> export
        self.assertEqual(self.sh(sb["id"], "cat /f")["stdout"], "x")
        out = os.path.join(self.tmp, "out.tar")
        r = self.pitbox("image", "export", "trip:1", "-o", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with tarfile.open(out) as t:
            names = set(t.getnames())
            docker = json.load(t.extractfile("manifest.json"))
        self.assertTrue({"oci-layout", "index.json", "manifest.json"} <= names)
        self.assertEqual(docker[0]["RepoTags"], ["trip:1"])
        self.api("DELETE", "/v1/sandboxes/" + sb["id"])
        self.ok("DELETE", "/v1/images/trip:1")
        self.assertEqual(self.api("GET", "/v1/images/trip:1").status, 404)
        again = self.import_file(out)["images"][0]
        self.assertEqual(again["id"], first["id"])
        self.assertEqual(again["tags"], ["trip:1"])
        self.assertEqual(again["layers"], first["layers"])
        self.assertEqual(first["id"], info["id"])

    def test_import_with_a_tag_and_images_listed_with_pages(self):
        a, info = oci_layout([Layer().busybox().tar_bytes()])
        self.import_file(a.tar(os.path.join(self.tmp, "p.tar")), tag="paged:2")
        ids, cursor = [], None
        while True:
            page = self.ok("GET", "/v1/images" + q(limit=1, **({"cursor": cursor} if cursor
                                                                else {})))
            ids += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        self.assertIn(info["id"], ids)
        self.assertIn("host", ids)
        self.assertEqual(len(ids), len(set(ids)))


class ManageTest(ImageTestCase):
    def test_tag_rm_in_use_and_prune(self):
        a, info = oci_layout([Layer().busybox().tar_bytes(), Layer().file("v", "1").tar_bytes()],
                             tag="keep:1")
        self.import_file(a.tar(os.path.join(self.tmp, "k.tar")))
        self.ok("POST", "/v1/images/keep:1/tag", {"tag": "keep:2"})
        self.assertEqual(self.ok("GET", "/v1/images/keep:2")["tags"], ["keep:1", "keep:2"])
        # Removing one of two tags only untags.
        out = self.ok("DELETE", "/v1/images/keep:1")
        self.assertEqual((out["untagged"], out["deleted"]), (["keep:1"], []))
        sb = self.create(image="keep:2")
        r = self.api("DELETE", "/v1/images/keep:2")
        self.assertEqual((r.status, r.error_code), (409, "conflict"), r)
        self.assertIn(sb["id"], r.json()["error"]["message"])
        # A box keeps its image even when the tag moves on.
        b, info2 = oci_layout([Layer().busybox().tar_bytes(), Layer().file("v", "2").tar_bytes()],
                              tag="keep:2")
        self.import_file(b.tar(os.path.join(self.tmp, "k2.tar")))
        self.ok("POST", "/v1/sandboxes/%s/stop" % sb["id"])
        self.ok("POST", "/v1/sandboxes/%s/start" % sb["id"])
        self.assertEqual(self.sh(sb["id"], "cat /v")["stdout"], "1")
        # The first image has no tag now, but a box: prune leaves it.
        self.ok("POST", "/v1/images/prune")
        self.assertIn(info["id"], self.image_ids())
        self.api("DELETE", "/v1/sandboxes/" + sb["id"])
        layers_before = len(self.layer_dirs())
        pruned = self.ok("POST", "/v1/images/prune")
        self.assertEqual(pruned["deleted"], [info["id"]])
        self.assertNotIn(info["id"], self.image_ids())
        # Its own layer went; the busybox layer both share stayed.
        self.assertEqual(len(self.layer_dirs()), layers_before - 1)
        self.assertEqual(self.ok("GET", "/v1/images/keep:2")["id"], info2["id"])

    def test_pitbox_run_beside_the_daemon_loses_no_tag(self):
        a, info = oci_layout([Layer().busybox().tar_bytes()], tag="beside:1")
        self.import_file(a.tar(os.path.join(self.tmp, "b.tar")))
        self.ok("DELETE", "/v1/images/busybox")
        # A one-shot box of the same state directory makes busybox again, in its own process.
        code, out, err = self.run_box("--image", "busybox", "--", "echo", "made")
        self.assertEqual((code, out), (0, "made\n"), err)
        # The daemon changes the index after that: both its image and busybox stay.
        self.ok("POST", "/v1/images/beside:1/tag", {"tag": "beside:2"})
        with open(os.path.join(self.env.state, "images", "index.json")) as f:
            tags = json.load(f)["tags"]
        self.assertEqual(tags["beside:2"], info["id"])
        self.assertIn("busybox:latest", tags)
        self.assertEqual(self.ok("GET", "/v1/images/busybox")["id"], tags["busybox:latest"])

    def test_bad_names_and_refs(self):
        self.assertEqual(self.api("GET", "/v1/images/nope:1").status, 404)
        r = self.api("POST", "/v1/images/busybox/tag", {"tag": "Bad Name"})
        self.assertEqual((r.status, r.error_code), (400, "invalid_argument"), r)
        r = self.api("POST", "/v1/images/busybox/tag", {"tag": "host"})
        self.assertEqual(r.status, 400, r)
        r = self.api("DELETE", "/v1/images/host")
        self.assertEqual(r.status, 400, r)
        r = self.api("POST", "/v1/sandboxes", {"image": "nope:1"})
        self.assertEqual((r.status, r.json()["error"]["details"]), (404, {"field": "image"}), r)


class BadArchiveTest(ImageTestCase):
    """Every archive here is refused with a clear error, registers nothing, leaves no layer and
    writes nothing outside the store."""

    def assert_refused(self, path, *words):
        before_images, before_layers = self.image_ids(), self.layer_dirs()
        with open(path, "rb") as f:
            r = self.api("POST", "/v1/images/import", raw=f.read())
        self.assertEqual((r.status, r.error_code), (400, "invalid_argument"), r)
        message = r.json()["error"]["message"]
        for w in words:
            self.assertIn(w, message)
        self.assertEqual(self.image_ids(), before_images)
        self.assertEqual(self.layer_dirs(), before_layers)
        self.assertFalse(os.path.exists("/tmp/pitbox-escaped"), "written outside the store")
        return message

    def layer_archive(self, layer):
        a, _ = oci_layout([layer.tar_bytes()], tag="bad:1")
        return a.tar(os.path.join(self.tmp, "bad-%d.tar" % time.monotonic_ns()))

    def test_dot_dot_and_absolute_entries(self):
        self.assert_refused(self.layer_archive(Layer().file("../../tmp/pitbox-escaped", "x",
                                                            parents=False)), "..")
        self.assert_refused(self.layer_archive(Layer().file("/tmp/pitbox-escaped", "x",
                                                            parents=False)))
        outer = Layer().file("../pitbox-escaped", "x", parents=False)
        path = os.path.join(self.tmp, "outer.tar")
        with open(path, "wb") as f:
            f.write(outer.tar_bytes())
        self.assert_refused(path, "..")

    def test_symlink_escapes_and_hard_links_out(self):
        self.assert_refused(self.layer_archive(
            Layer().symlink("lnk", "/tmp").file("lnk/pitbox-escaped", "x", parents=False)),
            "lnk")
        self.assert_refused(self.layer_archive(
            Layer().symlink("up", "../../../tmp").file("up/pitbox-escaped", "x", parents=False)))
        self.assert_refused(self.layer_archive(Layer().hardlink("h", "/etc/passwd")))
        self.assert_refused(self.layer_archive(Layer().hardlink("h", "../../etc/passwd")))

    def test_device_nodes(self):
        self.assert_refused(self.layer_archive(Layer().busybox().device("dev/mem", 1, 1)),
                            "dev/mem")

    def test_digests_that_do_not_match(self):
        a, info = oci_layout([Layer().busybox().tar_bytes()], tag="bad:1")
        blob = "blobs/sha256/" + info["layers"][0][7:]
        # Another valid layer under the first one's name.
        a.files[blob] = compress(Layer().file("other", "x").tar_bytes(), "gzip")
        self.assert_refused(a.tar(os.path.join(self.tmp, "digest.tar")), info["layers"][0])
        # A docker save archive whose config names other diff ids than its layers have.
        d, _ = docker_save([Layer().busybox().tar_bytes()], ["bad:1"])
        cfg_name = [n for n in d.files if n.endswith(".json") and n != "manifest.json"][0]
        cfg = json.loads(d.files[cfg_name])
        cfg["rootfs"]["diff_ids"] = [sha256(b"something else")]
        raw = json.dumps(cfg).encode()
        del d.files[cfg_name]
        d.files[sha256(raw)[7:] + ".json"] = raw
        manifest = json.loads(d.files["manifest.json"])
        manifest[0]["Config"] = sha256(raw)[7:] + ".json"
        d.files["manifest.json"] = json.dumps(manifest).encode()
        self.assert_refused(d.tar(os.path.join(self.tmp, "diffid.tar")), "the image config says")

    def test_truncated_and_not_an_archive(self):
        a, _ = oci_layout([Layer().busybox().tar_bytes()], compressions=["none"], tag="bad:1")
        path = a.tar(os.path.join(self.tmp, "whole.tar"))
        with open(path, "rb") as f:
            data = f.read()
        cut = os.path.join(self.tmp, "cut.tar")
        with open(cut, "wb") as f:
            f.write(data[:len(data) // 2])
        self.assert_refused(cut)
        junk = os.path.join(self.tmp, "junk")
        with open(junk, "wb") as f:
            f.write(b"this is not a tar archive at all" * 100)
        self.assert_refused(junk)
        empty = tarfile.open(os.path.join(self.tmp, "empty.tar"), "w")
        empty.close()
        self.assert_refused(os.path.join(self.tmp, "empty.tar"), "not an image archive")


class BuildTest(ImageTestCase):
    DOCKERFILE = """\
# a comment
ARG BASE=busybox
FROM ${BASE}
ARG WHO=world
ENV GREETING="hello ${WHO}" \\
    OTHER=x
LABEL org.example.name="demo image"
WORKDIR /app
COPY app/ ./
COPY ["notes.txt", "/notes/"]
RUN echo "$GREETING from $(pwd)" > built.txt && cat built.txt
EXPOSE 8000
CMD ["sh", "-c", "cat built.txt"]
"""

    def context(self, dockerfile=None):
        ctx = os.path.join(self.tmp, "ctx")
        os.makedirs(os.path.join(ctx, "app", "sub"), exist_ok=True)
        files = {"Dockerfile": dockerfile or self.DOCKERFILE, "app/main.sh": "echo main\n",
                 "app/sub/data": "data\n", "notes.txt": "notes\n", "app/secret.key": "s3cr3t",
                 ".dockerignore": "app/*.key\n"}
        for name, text in files.items():
            with open(os.path.join(ctx, name), "w") as f:
                f.write(text)
        return ctx

    def build(self, ctx, *args):
        return self.pitbox("image", "build", ctx, *args)

    def last_build(self):
        return self.ok("GET", "/v1/builds" + q(limit=1))["items"][0]

    def test_build_then_create_and_the_cache(self):
        ctx = self.context()
        r = self.build(ctx, "-t", "myimg", "--build-arg", "WHO=pitbox")
        self.assertEqual(r.returncode, 0, r.stderr)
        image_id = r.stdout.decode().strip()
        self.assertIn(b"hello pitbox from /app", r.stderr)  # the log streamed
        r = self.pitbox("create", "--name", "built", "--image", "myimg")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = self.sh("built", "pwd; cat built.txt main.sh sub/data /notes/notes.txt; "
                               "ls /app; echo $GREETING $OTHER")["stdout"]
        self.assertEqual(out, "/app\nhello pitbox from /app\necho main\ndata\nnotes\n"
                              "built.txt\nmain.sh\nsub\nhello pitbox x\n")
        img = self.ok("GET", "/v1/images/myimg")
        self.assertEqual(img["id"], image_id)
        self.assertEqual(img["config"]["cmd"], ["sh", "-c", "cat built.txt"])
        self.assertEqual(img["config"]["exposed_ports"], ["8000/tcp"])
        self.assertEqual(img["config"]["labels"]["org.example.name"], "demo image")
        self.api("DELETE", "/v1/sandboxes/built")
        # Unchanged: every step from the cache, the same image.
        r = self.build(ctx, "-t", "myimg", "--build-arg", "WHO=pitbox")
        self.assertEqual(r.stdout.decode().strip(), image_id)
        b = self.last_build()
        self.assertEqual((b["status"], b["cached_steps"]), ("succeeded", b["steps"]))
        # A file .dockerignore leaves out changes nothing.
        with open(os.path.join(ctx, "app", "secret.key"), "w") as f:
            f.write("other")
        r = self.build(ctx, "-t", "myimg", "--build-arg", "WHO=pitbox")
        self.assertEqual(r.stdout.decode().strip(), image_id)
        # A changed source: the steps before its COPY come from the cache, it and after not.
        with open(os.path.join(ctx, "app", "sub", "data"), "w") as f:
            f.write("new data\n")
        r = self.build(ctx, "-t", "myimg", "--build-arg", "WHO=pitbox")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotEqual(r.stdout.decode().strip(), image_id)
        b = self.last_build()
        self.assertEqual(b["cached_steps"], 3)  # ENV, LABEL, WORKDIR
        # Another build argument: the RUN step runs again.
        r = self.build(ctx, "-t", "myimg", "--build-arg", "WHO=you")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"hello you from /app", r.stderr)
        # The ignored file never reached the image.
        sb = self.create(image="myimg")
        self.assertEqual(self.sh(sb["id"], "test -e /app/secret.key")["exit_code"], 1)

    def test_failures_name_the_line_and_keep_the_log(self):
        ctx = self.context("FROM busybox\nRUN echo before-failing\nRUN echo output-kept; exit 3\n")
        r = self.build(ctx, "-t", "broken")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"line 3", r.stderr)
        b = self.last_build()
        self.assertEqual(b["status"], "failed")
        self.assertEqual(b["error"]["details"]["line"], 3)
        log = self.api("GET", "/v1/builds/%s/logs" % b["id"]).body.decode()
        self.assertIn("output-kept", log)
        self.assertEqual(self.api("GET", "/v1/images/broken").status, 404)
        cases = [("FROM busybox\nFROBNICATE x\n", "line 2"),
                 ("FROM no-such-image:1\n", "no-such-image"),
                 ("FROM busybox\nCOPY ../outside /x\n", "outside the build context"),
                 ("FROM busybox\nCOPY missing.txt /x\n", "missing.txt"),
                 ("FROM busybox\nCOPY app/secret.key /x\n", "secret.key"),
                 ("FROM busybox\nRUN [\"sh\", \n", "line 2"),
                 ("RUN true\n", "line 1")]
        for text, words in cases:
            r = self.api("POST", "/v1/builds", {"dockerfile": text})
            if r.status == 202:
                bid = r.json()["id"]
                self.api("GET", "/v1/builds/%s/logs?follow=1" % bid)
                b = self.ok("GET", "/v1/builds/" + bid)
                self.assertEqual(b["status"], "failed", text)
                message = b["error"]["message"]
            else:
                self.assertEqual(r.status, 400, r)
                message = r.json()["error"]["message"]
            self.assertIn(words, message, text)

    def test_bad_build_requests(self):
        r = self.api("POST", "/v1/builds", {"dockerfile": "FROM busybox\n", "context": "sha256:" +
                                            "0" * 64})
        self.assertEqual((r.status, r.error_code), (404, "not_found"), r)
        r = self.api("POST", "/v1/builds", {"dockerfile": "FROM busybox\n", "tags": ["UPPER"]})
        self.assertEqual(r.status, 400, r)
        r = self.api("POST", "/v1/builds", {"context": "x"})
        self.assertEqual(r.status, 400, r)
        # A context archive that escapes is refused when uploaded.
        bad = Layer().file("../x", "x", parents=False).tar_bytes()
        r = self.api("POST", "/v1/build-contexts", raw=bad)
        self.assertEqual(r.status, 400, r)


class FullDiskTest(ImageTestCase):
    """The store on a small filesystem (a 24 MiB tmpfs over <state>/images, mounted before the
    daemon starts): an upload or an import that does not fit is refused as resource_exhausted,
    registers nothing, and leaves no file behind; what fits still imports afterwards."""

    @classmethod
    def setUpClass(cls):
        super(DaemonTestCase, cls).setUpClass()  # an Env; the daemon comes below
        cls.images_dir = os.path.join(cls.env.state, "images")
        os.makedirs(cls.images_dir, mode=0o700)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "pitbox-test-full",
                        cls.images_dir], check=True)
        try:
            cls.daemon = Daemon(cls.env).start()
        except BaseException:
            subprocess.run(["umount", cls.images_dir])
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.daemon:
                cls.daemon.stop()
        finally:
            subprocess.run(["umount", cls.images_dir], check=True)
            super(DaemonTestCase, cls).tearDownClass()

    def kept_mounts(self):
        return {self.images_dir}

    def used(self):
        st = os.statvfs(self.images_dir)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def random_image(self, size, name):
        layer = Layer().busybox().file("blob", os.urandom(size))
        a, _ = oci_layout([layer.tar_bytes()], compressions=["none"], tag=name + ":1")
        return a.tar(os.path.join(self.tmp, name + ".tar"))

    def test_an_image_that_does_not_fit(self):
        before_images, before_layers, before_used = self.image_ids(), self.layer_dirs(), self.used()
        # The upload fits (8 MiB), its blob too, its unpacked layer no longer does.
        for size, name in ((8 << 20, "unpacks-too-big"), (30 << 20, "upload-too-big")):
            with open(self.random_image(size, name), "rb") as f:
                data = f.read()
            try:
                r = self.api("POST", "/v1/images/import", raw=data)
            except (BrokenPipeError, ConnectionResetError):
                r = None  # the daemon answered before it read everything, and closed
            if r is not None:
                self.assertEqual((r.status, r.error_code), (429, "resource_exhausted"), r)
                self.assertIn("No space left", r.json()["error"]["message"])
            self.assertEqual(self.image_ids(), before_images)
            self.assertEqual(self.layer_dirs(), before_layers)
            self.assertLessEqual(self.used(), before_used + (64 << 10))
        # Space is back: a small image imports.
        self.import_file(self.random_image(1 << 20, "fits"), status=201)


if __name__ == "__main__":
    unittest.main()
