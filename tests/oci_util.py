"""Image archives made by the tests themselves: layers as tars (plain, gzip or zstd), OCI image
layouts and `docker save` archives (legacy and current), and hostile variants of them.
"""

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile

BUSYBOX = "/bin/busybox"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layer:
    """A layer built in memory: add files, dirs, symlinks, whiteouts, then .tar()."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()

    def _parents(self, name):
        parts = name.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.dirs and ".." not in d:
                self.dir(d)

    def _info(self, name, type_=tarfile.REGTYPE, mode=0o644, uid=0, gid=0):
        info = tarfile.TarInfo(name)
        info.type = type_
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.mtime = 1700000000
        return info

    def dir(self, name, mode=0o755, parents=True):
        if parents:
            self._parents(name)
        self.dirs.add(name.strip("/"))
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode))
        return self

    def file(self, name, data=b"", mode=0o644, uid=0, gid=0, parents=True):
        if isinstance(data, str):
            data = data.encode()
        if parents:
            self._parents(name)
        info = self._info(name, mode=mode, uid=uid, gid=gid)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))
        return self

    def symlink(self, name, target, parents=True):
        if parents:
            self._parents(name)
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)
        return self

    def hardlink(self, name, target, parents=True):
        if parents:
            self._parents(name)
        info = self._info(name, tarfile.LNKTYPE)
        info.linkname = target
        self.tar.addfile(info)
        return self

    def device(self, name, major=1, minor=3):
        info = self._info(name, tarfile.CHRTYPE, 0o666)
        info.devmajor, info.devminor = major, minor
        self.tar.addfile(info)
        return self

    def whiteout(self, name):
        d, base = os.path.split(name.strip("/"))
        return self.file(os.path.join(d, ".wh." + base))

    def opaque(self, dirname):
        return self.file(os.path.join(dirname.strip("/"), ".wh..wh..opq"))

    def busybox(self):
        """A static busybox with sh and a few applets: enough to run commands in."""
        with open(BUSYBOX, "rb") as f:
            self.file("bin/busybox", f.read(), mode=0o755)
        for applet in ("sh", "cat", "ls", "echo", "env", "pwd", "id", "test", "true", "stat",
                       "sleep", "mkdir", "touch", "rm", "wc", "readlink", "find"):
            self.symlink("bin/" + applet, "busybox")
        for d in ("proc", "sys", "dev", "tmp", "etc", "root"):
            self.dir(d)
        self.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
        self.file("etc/group", "root:x:0:\nnogroup:x:65534:\n")
        return self

    def tar_bytes(self):
        self.tar.close()
        return self.buf.getvalue()


def compress(data, how):
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE,
                              check=True).stdout
    return data


MEDIA = {"none": "application/vnd.oci.image.layer.v1.tar",
         "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
         "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


def config_doc(diff_ids, env=None, workdir=None, cmd=None, labels=None):
    cfg = {"Env": env or ["PATH=/bin"]}
    if workdir:
        cfg["WorkingDir"] = workdir
    if cmd:
        cfg["Cmd"] = cmd
    if labels:
        cfg["Labels"] = labels
    return {"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": cfg, "rootfs": {"type": "layers", "diff_ids": diff_ids}}


class Archive:
    """Files of an archive (path -> bytes) written as a tar or a directory."""

    def __init__(self):
        self.files = {}
        self.extra = []  # hand-made tar members: (TarInfo, bytes or None)

    def tar(self, path):
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
            for name in sorted(self.files):
                info = tarfile.TarInfo(name)
                info.size = len(self.files[name])
                info.mode = 0o644
                t.addfile(info, io.BytesIO(self.files[name]))
            for info, data in self.extra:
                t.addfile(info, io.BytesIO(data) if data is not None else None)
        return path

    def directory(self, path):
        for name, data in self.files.items():
            full = os.path.join(path, name)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(data)
        return path


def oci_layout(layers, tag=None, compressions=None, **config):
    """An OCI image layout of `layers` (tar bytes, bottom first). Returns (archive, info)."""
    a = Archive()
    compressions = compressions or ["gzip"] * len(layers)
    descs, diff_ids = [], []
    for tar_bytes, how in zip(layers, compressions):
        blob = compress(tar_bytes, how)
        diff_ids.append(sha256(tar_bytes))
        d = sha256(blob)
        a.files["blobs/sha256/" + d[7:]] = blob
        descs.append({"mediaType": MEDIA[how], "digest": d, "size": len(blob)})
    cfg = json.dumps(config_doc(diff_ids, **config)).encode()
    a.files["blobs/sha256/" + sha256(cfg)[7:]] = cfg
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(cfg), "size": len(cfg)},
        "layers": descs}).encode()
    a.files["blobs/sha256/" + sha256(manifest)[7:]] = manifest
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": sha256(manifest), "size": len(manifest)}
    if tag:
        entry["annotations"] = {"io.containerd.image.name": tag,
                                "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[-1]}
    a.files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    a.files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    return a, {"id": sha256(manifest), "config": sha256(cfg), "diff_ids": diff_ids,
               "layers": [d["digest"] for d in descs]}


def docker_save(layers, tags, **config):
    """A legacy `docker save` archive (manifest.json, <id>.json, <layer>/layer.tar)."""
    a = Archive()
    diff_ids = [sha256(t) for t in layers]
    cfg = json.dumps(config_doc(diff_ids, **config)).encode()
    cfg_name = sha256(cfg)[7:] + ".json"
    a.files[cfg_name] = cfg
    paths = []
    for i, t in enumerate(layers):
        layer_dir = hashlib.sha256(b"layer%d" % i + t).hexdigest()
        a.files[layer_dir + "/layer.tar"] = t
        a.files[layer_dir + "/VERSION"] = b"1.0"
        paths.append(layer_dir + "/layer.tar")
    a.files["manifest.json"] = json.dumps(
        [{"Config": cfg_name, "RepoTags": tags, "Layers": paths}]).encode()
    a.files["repositories"] = b"{}"
    return a, {"config": sha256(cfg), "diff_ids": diff_ids}
