"""Images in the Python SDK: the Dockerfile builder and .dockerignore rules (no daemon), then
builds, sandboxes of built images, tags, removal, export and import against a real
`pitbox serve` (as root).

Run: PITBOX_BIN=out/bin/pitbox python3 -m unittest discover -s sdk/python/tests -v
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from test_sdk import SDK, SdkTestCase  # noqa: E402  (also puts the SDK on sys.path)

from pitbox import (  # noqa: E402
    Build,
    BuildError,
    Conflict,
    Image,
    ImageBuilder,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Pitbox,
)
from pitbox._context import IgnoreRules, write_context  # noqa: E402


def write_tree(root: str, files: dict[str, str]) -> str:
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return root


def tar_names(sources: list[tuple[str, str]]) -> list[str]:
    buf = io.BytesIO()
    write_context(buf, sources)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        return [m.name for m in tar.getmembers()]


class BuilderTest(unittest.TestCase):
    """The Dockerfile text the builder writes (no daemon needed)."""

    def test_a_realistic_chain(self) -> None:
        with tempfile.TemporaryDirectory() as src:
            app = os.path.join(src, "app")
            write_tree(app, {"main.py": "print('hi')\n"})
            conf = os.path.join(src, "my [1].conf")
            write_tree(src, {"my [1].conf": "x=1\n"})
            image = (ImageBuilder.debian()
                     .apt_install(["python3-pip", "git", "curl", "git"])
                     .pip_install(["requests>=2.31", "numpy"])
                     .env({"APP_ENV": "prod", "GREETING": 'say "hi" to $USER \\o/'})
                     .env(PYTHONUNBUFFERED=1)
                     .workdir("/srv/my app")
                     .copy(app, "/srv/my app/")
                     .copy(conf, "/etc/app.conf", chown="app:app", chmod=0o640)
                     .run("python3 -m compileall -q . && echo done")
                     .run(["useradd", "--system", "app"])
                     .run("set -e\ncd /tmp\ntouch multi-line")
                     .user("app")
                     .label({"org.opencontainers.image.title": "demo app", "tier": "1"})
                     .expose(8000, "9000/udp")
                     .entrypoint(["python3", "-m", "app"])
                     .cmd(["--port", "8000"]))
            self.assertEqual(image.dockerfile(), """\
FROM base:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends curl git python3-pip && rm -rf /var/lib/apt/lists/*
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir numpy 'requests>=2.31'
ENV APP_ENV="prod" \\
    GREETING="say \\"hi\\" to \\$USER \\\\o/"
ENV PYTHONUNBUFFERED="1"
WORKDIR "/srv/my app"
COPY copy-0 "/srv/my app/"
COPY --chown=app:app --chmod=640 "copy-1/my \\\\[1].conf" /etc/app.conf
RUN python3 -m compileall -q . && echo done
RUN ["useradd", "--system", "app"]
RUN ["/bin/sh", "-c", "set -e\\ncd /tmp\\ntouch multi-line"]
USER app
LABEL org.opencontainers.image.title="demo app" \\
    tier="1"
EXPOSE 8000 9000/udp
ENTRYPOINT ["python3", "-m", "app"]
CMD ["--port", "8000"]
""")
            self.assertEqual(image.context, ((app, "copy-0"), (conf, "copy-1/my [1].conf")))
            self.assertEqual(str(image), image.dockerfile())

    def test_builders_are_never_changed(self) -> None:
        base = ImageBuilder.from_("busybox").workdir("/w")
        a = base.run("echo a")
        b = base.run("echo b")
        self.assertEqual(base.dockerfile(), "FROM busybox\nWORKDIR /w\n")
        self.assertEqual(a.dockerfile(), "FROM busybox\nWORKDIR /w\nRUN echo a\n")
        self.assertEqual(b.steps, ("WORKDIR /w", "RUN echo b"))
        self.assertEqual(base.run("echo a"), a)  # plain values: equal when the same
        with self.assertRaises(AttributeError):
            base.base = "other"  # type: ignore[misc]

    def test_shell_strings_the_dockerfile_would_misread(self) -> None:
        def run(cmd: str) -> str:
            return ImageBuilder.from_("busybox").run(cmd).steps[0]

        self.assertEqual(run("  echo $HOME \\ x  "), "RUN echo $HOME \\ x")  # kept as it is
        self.assertEqual(run("[ -f /x ] && echo y"),
                         'RUN ["/bin/sh", "-c", "[ -f /x ] && echo y"]')
        self.assertEqual(run("echo a \\"), 'RUN ["/bin/sh", "-c", "echo a \\\\"]')
        self.assertEqual(run("cat <<EOF > f"), 'RUN ["/bin/sh", "-c", "cat <<EOF > f"]')
        self.assertEqual(ImageBuilder.from_("busybox").cmd("sleep infinity").steps[0],
                         "CMD sleep infinity")
        self.assertEqual(ImageBuilder.from_("x").run(["echo", "é", 'q"']).steps[0],
                         'RUN ["echo", "é", "q\\""]')

    def test_bad_values(self) -> None:
        b = ImageBuilder.from_("busybox")
        for bad in [lambda: b.env({"A": "two\nlines"}), lambda: b.env({"A B": "x"}),
                    lambda: b.env({"A=B": "x"}), lambda: b.env({}), lambda: b.label({"$x": "y"}),
                    lambda: b.workdir("/a\nRUN evil"), lambda: b.run(""), lambda: b.run([]),
                    lambda: b.apt_install([]), lambda: b.expose(), lambda: b.user(""),
                    lambda: ImageBuilder("busybox\nRUN evil")]:
            with self.assertRaises(ValueError):
                bad()
        with self.assertRaises(FileNotFoundError):
            b.copy("/nonexistent/file", "/x")
        self.assertEqual(b.apt_install("git").steps[0].split("recommends ")[1],
                         "git && rm -rf /var/lib/apt/lists/*")  # a string is one package
        image = Image(id="sha256:" + "a" * 64, name="x", tags=[])
        self.assertEqual(ImageBuilder.from_(image).base, image.id)


class DockerignoreTest(unittest.TestCase):
    """Docker's .dockerignore rules, as the daemon and the CLI apply them."""

    def test_rules(self) -> None:
        rules = IgnoreRules.parse(
            "# a comment\n"
            "*.key\n"
            "  build/  \n"
            "!build/keep.txt\n"
            "**/__pycache__\n"
            "docs/*.md\n"
            "!docs/README.md\n"
            " #not a comment\n"
            "/abs/./path/../dir\n"
            "[a-c]?.txt\n")
        cases = {
            "secret.key": True, "sub/secret.key": False,  # "*" never crosses a "/"
            "build": True, "build/out/x.o": True, "build/keep.txt": False,
            "__pycache__": True, "a/b/__pycache__/m.pyc": True,
            "docs/guide.md": True, "docs/README.md": False, "docs/sub/x.md": False,
            " #not a comment": False, "#not a comment": True,
            "abs/dir/file": True, "abs/path": False,
            "b1.txt": True, "d1.txt": False, "b12.txt": False,
            "src/main.py": False, "": False, ".": False,
        }
        for path, ignored in cases.items():
            self.assertEqual(rules.ignored(path), ignored, path)
        self.assertFalse(rules.can_skip_dir("build"))  # an exception follows
        self.assertTrue(IgnoreRules.parse("build\n").can_skip_dir("build"))
        # The last rule that matches decides.
        self.assertFalse(IgnoreRules.parse("*\n!*\n").ignored("x"))
        self.assertTrue(IgnoreRules.parse("!x\nx\n").ignored("x"))
        self.assertTrue(IgnoreRules.parse("**\n").ignored("a/b/c"))
        self.assertTrue(IgnoreRules.parse("**.pyc\n").ignored("a/b.pyc"))
        self.assertTrue(IgnoreRules.parse("a/**/z\n").ignored("a/z"))
        self.assertTrue(IgnoreRules.parse("a/**/z\n").ignored("a/b/c/z"))
        self.assertTrue(IgnoreRules.parse("[^a]x\n").ignored("bx"))
        self.assertTrue(IgnoreRules.parse("\\*x\n").ignored("*x"))
        self.assertFalse(IgnoreRules.parse("\\*x\n").ignored("ax"))
        for bad in ["[a\n", "x\\\n", "!\n", "ok\n[]\n"]:
            with self.assertRaises(ValueError):
                IgnoreRules.parse(bad)
        with self.assertRaises(ValueError) as cm:
            IgnoreRules.parse("ok\n[]\n")
        self.assertIn("line 2", str(cm.exception))

    def test_context_archive(self) -> None:
        with tempfile.TemporaryDirectory() as ctx:
            write_tree(ctx, {
                "Dockerfile": "FROM busybox\n", ".dockerignore": "*.key\nbuild\n!build/keep\n",
                "a.key": "s", "src/m.py": "", "src/b.key": "", "build/o": "", "build/keep": "",
                "node/x": ""})
            os.mkfifo(os.path.join(ctx, "fifo"))  # not a context's kind of file
            os.symlink("src/m.py", os.path.join(ctx, "link"))
            self.assertEqual(tar_names([(ctx, "")]), [
                ".dockerignore", "Dockerfile", "build/keep", "link", "node", "node/x", "src",
                "src/b.key", "src/m.py"])
            # A directory under a name, and a file under a name: parents are made.
            self.assertEqual(tar_names([(os.path.join(ctx, "src"), "copy-0"),
                                        (os.path.join(ctx, "a.key"), "copy-1/a.key")]),
                             ["copy-0", "copy-0/b.key", "copy-0/m.py", "copy-1",
                              "copy-1/a.key"])
            buf = io.BytesIO()
            write_context(buf, [(ctx, "")])
            buf.seek(0)
            with tarfile.open(fileobj=buf) as tar:
                link = tar.getmember("link")
                self.assertEqual((link.issym(), link.linkname), (True, "src/m.py"))
                self.assertEqual({(m.uid, m.gid, m.uname) for m in tar}, {(0, 0, "")})


class ImagesTest(SdkTestCase):
    tmp: str

    def setUp(self) -> None:
        super().setUp()
        self.tmp = self.enterContext(tempfile.TemporaryDirectory())

    def small_image(self, label: str, tags: list[str] | None = None) -> Image:
        """An image of its own (a label step on busybox), built fast."""
        return self.pb.images.build(ImageBuilder.from_("busybox").label({"test": label}),
                                    tags=tags)

    def test_build_with_the_builder_then_a_sandbox_of_it(self) -> None:
        app = write_tree(os.path.join(self.tmp, "app"), {
            "main.sh": "echo main\n", "lib/util.sh": "echo util\n", "secret.key": "s3cr3t",
            ".dockerignore": "*.key\n"})
        conf = write_tree(self.tmp, {"app.conf": "port=8000\n"}) + "/app.conf"
        tricky = 'it\'s "quoted" $HOME ${X:-y} \\ `id` ü'
        image = (ImageBuilder.from_("busybox")
                 .env({"A": "b c", "TRICKY": tricky})
                 .workdir("/w")
                 .run("echo hi > f")
                 .run(["sh", "-c", 'echo "$A" > a.txt'])
                 .copy(app, "/app/")
                 .copy(conf, "/etc/", chmod=0o600)
                 .label({"org.example.title": "sdk test"})
                 .expose(8000)
                 .cmd(["sh", "/app/main.sh"]))
        log: list[str] = []
        img = self.pb.images.build(image, tags=["sdk-test/app:1"], on_log=log.append)
        self.assertIsInstance(img, Image)
        self.assertTrue(img.id.startswith("sha256:"))
        self.assertEqual((img.tags, img.name), (["sdk-test/app:1"], "sdk-test/app:1"))
        self.assertEqual(img.config.env["A"], "b c")
        self.assertEqual(img.config.env["TRICKY"], tricky)  # every character as given
        self.assertEqual(img.config.workdir, "/w")
        self.assertEqual(img.config.labels["org.example.title"], "sdk test")
        self.assertEqual(img.config.exposed_ports, ["8000/tcp"])
        self.assertEqual(img.config.cmd, ["sh", "/app/main.sh"])
        self.assertGreater(img.size, 0)
        self.assertGreaterEqual(len(img.layers), 4)  # busybox's, RUN, RUN, COPY, COPY
        self.assertEqual(img.raw["id"], img.id)
        text = "".join(log)
        self.assertIn("RUN echo hi > f", text)
        self.assertIn("built " + img.id, text)

        box = self.box(image=img)  # the Image itself: its id
        self.assertEqual(box.image_id, img.id)
        files = box.files
        self.assertEqual(files.read_text("/w/f"), "hi\n")
        self.assertEqual(files.read_text("/w/a.txt"), "b c\n")
        self.assertEqual(files.read_text("/app/lib/util.sh"), "echo util\n")
        self.assertFalse(files.exists("/app/secret.key"))  # the .dockerignore of app/
        self.assertEqual(files.read_text("/etc/app.conf"), "port=8000\n")
        self.assertEqual(files.stat("/etc/app.conf").mode, 0o600)
        r = box.exec('pwd; echo "$A"; printf %s "$TRICKY"; sh /app/main.sh').check()
        self.assertEqual(r.stdout, "/w\nb c\n%smain\n" % tricky)
        self.assertEqual(self.box(image="sdk-test/app:1").files.read_text("/w/f"), "hi\n")

        # The same again: every step from the cache, the same image.
        started = self.pb.images.start_build(image, tags=["sdk-test/app:1"])
        self.assertIsInstance(started, Build)
        self.assertEqual((started.kind, started.tags), ("dockerfile", ["sdk-test/app:1"]))
        again = self.pb.images.wait_build(started)
        self.assertEqual(again.id, img.id)
        record = self.pb.images.get_build(started.id)
        self.assertTrue(record.succeeded)
        self.assertEqual(record.image_id, img.id)
        self.assertEqual(record.steps, 9)
        self.assertEqual(record.cached_steps, record.steps)
        self.assertIsNotNone(record.finished_at)
        self.assertIn("Using cache", self.pb.images.build_log(record))
        self.assertEqual(next(iter(self.pb.images.builds())).id, started.id)  # newest first
        # A changed copied file: the steps before its COPY only from the cache.
        with open(conf, "w") as f:
            f.write("port=9000\n")
        started = self.pb.images.start_build(image, no_cache=False)
        changed = self.pb.images.wait_build(started.id)
        self.assertNotEqual(changed.id, img.id)
        self.assertEqual(changed.tags, [])
        self.assertEqual(self.pb.images.get_build(started.id).cached_steps, 5)

    def test_a_failing_build_raises_build_error(self) -> None:
        log: list[str] = []
        image = (ImageBuilder.from_("busybox").env({"X": "1"})
                 .run("echo before-failing").run("echo output-kept; exit 3"))
        with self.assertRaises(BuildError) as cm:
            self.pb.images.build(image, tags=["sdk-test/broken"], on_log=log.append)
        e = cm.exception
        self.assertEqual(e.line, 4)
        self.assertIn("line 4", e.message)
        self.assertIn("exited with 3", e.message)
        self.assertIn("output-kept", e.log)
        self.assertEqual(e.log, "".join(log))
        self.assertIn("output-kept", str(e))  # the end of the log is in the message
        self.assertEqual(e.details["line"], 4)
        self.assertTrue(e.build.failed)
        self.assertEqual((e.build.error_line, e.build.image_id), (4, None))
        self.assertEqual(e.build.error_message, e.message)
        self.assertFalse(self.pb.images.exists("sdk-test/broken"))
        # A FROM that names no image fails in the build too.
        with self.assertRaises(BuildError) as cm:
            self.pb.images.build("FROM no-such-image:1\n")
        self.assertEqual(cm.exception.line, 1)
        self.assertIn("no-such-image", cm.exception.message)
        # A COPY of what the .dockerignore excludes.
        ctx = write_tree(os.path.join(self.tmp, "ctx"), {"a.key": "k", ".dockerignore": "*.key"})
        with self.assertRaises(BuildError) as cm:
            self.pb.images.build("FROM busybox\nCOPY a.key /\n", ctx)
        self.assertIn("a.key", cm.exception.message)
        # A Dockerfile that does not parse is refused before any build.
        with self.assertRaises(InvalidArgument) as cm2:
            self.pb.images.build("FROM busybox\nFROBNICATE x\n")
        self.assertEqual(cm2.exception.details, {"line": 2})
        with self.assertRaises(ValueError):
            self.pb.images.build(ImageBuilder.from_("busybox"), self.tmp)
        with self.assertRaises(ValueError):
            self.pb.images.build()

    def test_build_a_context_directory_with_a_dockerignore(self) -> None:
        ctx = write_tree(os.path.join(self.tmp, "ctx"), {
            "Dockerfile": "FROM busybox\nARG WHO=nobody\nCOPY . /ctx/\n"
                          "RUN echo \"hello $WHO\" > /hello\n",
            ".dockerignore": "*.key\nbuild\n**/__pycache__\ndocs/*.md\n!docs/README.md\n"
                             "Dockerfile\n",
            "main.py": "", "secret.key": "", "sub/other.key": "", "build/out.o": "",
            "pkg/__pycache__/m.pyc": "", "pkg/m.py": "", "docs/guide.md": "",
            "docs/README.md": "", "docs/img/x.md": ""})
        img = self.pb.images.build(context_dir=ctx, args={"WHO": "sdk"}, tags=["sdk-test/ctx"])
        box = self.box(image=img)
        found = box.exec("cd /ctx && find . -type f | sort").check().stdout.split()
        self.assertEqual(found, ["./.dockerignore", "./docs/README.md", "./docs/img/x.md",
                                 "./main.py", "./pkg/m.py", "./sub/other.key"])
        self.assertEqual(box.files.read_text("/hello"), "hello sdk\n")
        # The Dockerfile given as text, with the same context.
        with open(os.path.join(ctx, "Dockerfile")) as f:
            text = f.read()
        self.assertEqual(self.pb.images.build(text, ctx, args={"WHO": "sdk"}).id, img.id)

    def test_an_exception_below_an_ignored_directory(self) -> None:
        """Docker sends build/keep.txt for "build" then "!build/keep.txt"; the daemon's
        builder, which reads the .dockerignore again, keeps it too."""
        ctx = write_tree(os.path.join(self.tmp, "ctx"), {
            ".dockerignore": "build\n!build/keep.txt\n", "build/out.o": "",
            "build/keep.txt": "kept\n"})
        img = self.pb.images.build("FROM busybox\nCOPY . /ctx/\n", ctx)
        box = self.box(image=img)
        self.assertEqual(box.exec("cat /ctx/build/keep.txt").stdout, "kept\n")

    def test_built_images_are_not_builtin(self) -> None:
        """An image built on busybox does not carry busybox's "pitbox.builtin" label."""
        self.assertFalse(self.small_image("not-builtin").builtin)

    def test_list_get_tag_and_delete(self) -> None:
        img = self.small_image("tags", tags=["sdk-test/one:1"])
        listed = list(self.pb.images.list(page_size=1))  # a page per image
        ids = [i.id for i in listed]
        self.assertIn(img.id, ids)
        self.assertEqual(len(ids), len(set(ids)))
        names = {i.name for i in listed if i.builtin}
        self.assertTrue({"host", "busybox:latest"} <= names, names)
        refs: list[str | Image] = ["sdk-test/one:1", img.id, img.short_id, img]
        for ref in refs:
            self.assertEqual(self.pb.images.get(ref).id, img.id)
        self.assertEqual(self.pb.images.get("sdk-test/one:1"), img)

        tagged = self.pb.images.tag(img, "sdk-test/two")
        self.assertEqual(tagged.tags, ["sdk-test/one:1", "sdk-test/two:latest"])
        self.assertEqual(self.pb.images.get("sdk-test/two").id, img.id)
        removed = self.pb.images.delete("sdk-test/one:1")  # one of two tags: only untagged
        self.assertEqual((removed.untagged, removed.deleted), (["sdk-test/one:1"], []))
        self.assertFalse(self.pb.images.exists("sdk-test/one:1"))

        with self.box(image="sdk-test/two") as box:
            with self.assertRaises(Conflict) as cm:
                self.pb.images.delete("sdk-test/two")
            self.assertIn(box.id, cm.exception.message)
        removed = self.pb.images.delete("sdk-test/two")
        self.assertEqual((removed.untagged, removed.deleted), (["sdk-test/two:latest"], [img.id]))
        with self.assertRaises(NotFound):
            self.pb.images.get(img.id)
        with self.assertRaises(NotFound):
            self.pb.images.delete("sdk-test/two")
        with self.assertRaises(InvalidArgument):
            self.pb.images.tag("busybox", "Bad Name")
        with self.assertRaises(InvalidArgument):
            self.pb.images.delete("host")

    def test_export_delete_import_gives_the_same_image(self) -> None:
        img = self.small_image("trip", tags=["sdk-test/trip:1"])
        path = os.path.join(self.tmp, "trip.tar")
        size = self.pb.images.export("sdk-test/trip:1", path)
        self.assertEqual(os.path.getsize(path), size)
        self.assertFalse(os.path.exists(path + ".pitbox-part"))
        with tarfile.open(path) as tar:
            self.assertIn("index.json", tar.getnames())
        buf = io.BytesIO()
        self.assertEqual(self.pb.images.export(img, buf), size)  # to a file object
        self.assertEqual(self.pb.images.delete(img.id).deleted, [img.id])
        self.assertFalse(self.pb.images.exists(img.id))

        made = self.pb.images.import_archive(path)
        self.assertEqual([(i.id, i.tags) for i in made], [(img.id, ["sdk-test/trip:1"])])
        self.assertEqual(made[0].layers, img.layers)
        self.assertEqual(made[0].config, img.config)
        again = self.pb.images.import_archive(io.BytesIO(buf.getvalue()), tag="sdk-test/trip:2")
        self.assertEqual(again[0].id, img.id)
        self.assertEqual(self.pb.images.get("sdk-test/trip:2").tags,
                         ["sdk-test/trip:1", "sdk-test/trip:2"])
        with self.box(image="sdk-test/trip:2") as box:
            self.assertEqual(box.image_id, img.id)
        with self.assertRaises(NotFound):
            self.pb.images.export("sdk-test/none", os.path.join(self.tmp, "none.tar"))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "none.tar")))
        with self.assertRaises(InvalidArgument):
            self.pb.images.import_archive(b"not a tar archive" * 100)

    def test_prune(self) -> None:
        untagged = self.small_image("prune-me")
        kept = self.small_image("keep-me", tags=["sdk-test/kept"])
        pruned = self.pb.images.prune()
        self.assertIn(untagged.id, pruned.deleted)
        self.assertNotIn(kept.id, pruned.deleted)
        self.assertGreaterEqual(pruned.layers, 0)
        self.assertFalse(self.pb.images.exists(untagged.id))
        self.assertTrue(self.pb.images.exists("sdk-test/kept"))

    def test_build_base_when_it_exists(self) -> None:
        """Building the base image takes a minute and the Debian archive: only the answer
        for an existing one is checked, with the daemon's answer made up."""
        img = self.small_image("base")
        answer = mock.Mock(status=200)
        answer.json.return_value = {"status": "exists", "image": img.raw}
        with mock.patch.object(self.pb.images._http, "request", return_value=answer) as call:
            self.assertEqual(self.pb.images.build_base(), img)
        call.assert_called_once_with("POST", "/v1/images/base", json={"rebuild": False})
        # Builds of it are admin-only, as is prune.
        user = Pitbox(self.daemon.url, self.pb.keys.create("images-user").key)
        self.addCleanup(user.close)
        self.assertTrue(any(i.id == img.id for i in user.images.list()))
        for call_admin_only in (lambda: user.images.build_base(), user.images.prune):
            with self.assertRaises(PermissionDenied):
                call_admin_only()


class ReadmeTest(SdkTestCase):
    def test_readme_images_example(self) -> None:
        """The README's images example, run as written against the test daemon."""
        with open(os.path.join(SDK, "README.md")) as f:
            readme = f.read()
        match = re.search(r"## Images.*?```python\n(.*?)```", readme, re.S)
        assert match, "no images example in the README"
        with tempfile.TemporaryDirectory() as cwd:
            write_tree(cwd, {"site/index.html": "<h1>hello</h1>\n"})
            env = dict(self.env.env, PITBOX_API_URL=self.daemon.url,
                       PITBOX_API_KEY=self.daemon.admin_key, PYTHONPATH=SDK)
            r = subprocess.run([sys.executable, "-c", match.group(1)], env=env, cwd=cwd,
                               capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("<h1>hello</h1>", r.stdout)
        self.pb.images.delete("site:1")


if __name__ == "__main__":
    unittest.main()
