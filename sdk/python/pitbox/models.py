"""Plain data returned by the SDK."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from .errors import CommandError

__all__ = [
    "ExecResult",
    "ExecEvent",
    "SessionLogs",
    "FileEntry",
    "FindMatch",
    "GrepMatch",
    "MatchList",
    "TarExtracted",
    "Key",
    "CreatedKey",
    "AuditEntry",
    "Health",
    "Image",
    "ImageConfig",
    "ImageLayer",
    "RemovedImages",
    "PrunedImages",
    "Build",
]

T = TypeVar("T")


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass
class ExecResult:
    """The outcome of :meth:`Sandbox.exec`.

    ``stdout`` and ``stderr`` are ``str``, or ``bytes`` when the output was not valid UTF-8 (the
    API then sends both base64-encoded).
    """

    exit_code: int
    stdout: str | bytes
    stderr: str | bytes
    duration_ms: int = 0
    truncated: bool = False
    timed_out: bool = False
    signal: int | None = None
    command: str = field(default="", repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any], command: str = "") -> ExecResult:
        stdout: str | bytes = data.get("stdout", "")
        stderr: str | bytes = data.get("stderr", "")
        if data.get("encoding") == "base64":
            stdout = base64.b64decode(data.get("stdout", ""))
            stderr = base64.b64decode(data.get("stderr", ""))
        return cls(exit_code=int(data["exit_code"]), stdout=stdout, stderr=stderr,
                   duration_ms=int(data.get("duration_ms", 0)),
                   truncated=bool(data.get("truncated", False)),
                   timed_out=bool(data.get("timed_out", False)),
                   signal=_optional_int(data.get("signal")), command=command)

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.exit_code == 0

    def check(self) -> ExecResult:
        """Returns self when :attr:`ok`; raises :class:`CommandError` otherwise."""
        if not self.ok:
            raise CommandError(self, self.command)
        return self


@dataclass
class ExecEvent:
    """One event of :meth:`Sandbox.exec_stream`.

    ``type`` is ``"stdout"`` or ``"stderr"`` (with ``data``: ``str``, or ``bytes`` when the
    chunk was not valid UTF-8) or, last, ``"exit"`` (with ``exit_code``, ``signal``,
    ``duration_ms`` and ``timed_out``).
    """

    type: Literal["stdout", "stderr", "exit"]
    data: str | bytes = ""
    exit_code: int | None = None
    signal: int | None = None
    duration_ms: int | None = None
    timed_out: bool = False

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> ExecEvent:
        kind = data.get("type")
        if kind == "exit":
            return cls(type="exit", exit_code=int(data["exit_code"]),
                       signal=_optional_int(data.get("signal")),
                       duration_ms=_optional_int(data.get("duration_ms")),
                       timed_out=bool(data.get("timed_out", False)))
        if kind not in ("stdout", "stderr"):
            raise ValueError("unknown exec event %r" % (data,))
        chunk: str | bytes
        if "data_base64" in data:
            chunk = base64.b64decode(data["data_base64"])
        else:
            chunk = data.get("data", "")
        return cls(type="stdout" if kind == "stdout" else "stderr", data=chunk)


@dataclass
class SessionLogs:
    """Output of a session from some offset: ``data``, the offset to ask for next, and
    whether the session has ended."""

    data: bytes
    next_offset: int
    ended: bool

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@dataclass
class FileEntry:
    """A file, directory, symlink or other entry in a sandbox."""

    name: str
    path: str
    type: str
    mode: int
    size: int
    mtime: str
    uid: int
    gid: int
    target: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> FileEntry:
        return cls(name=data.get("name", ""), path=data["path"], type=data.get("type", ""),
                   mode=int(data.get("mode", 0)), size=int(data.get("size", 0)),
                   mtime=data.get("mtime", ""), uid=int(data.get("uid", 0)),
                   gid=int(data.get("gid", 0)), target=data.get("target"))

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @property
    def is_file(self) -> bool:
        return self.type == "file"

    @property
    def is_symlink(self) -> bool:
        return self.type == "symlink"


@dataclass
class FindMatch:
    path: str
    type: str
    size: int

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> FindMatch:
        return cls(path=data["path"], type=data.get("type", ""), size=int(data.get("size", 0)))


@dataclass
class GrepMatch:
    path: str
    line: int
    text: str

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> GrepMatch:
        return cls(path=data["path"], line=int(data["line"]), text=data.get("text", ""))


class MatchList(list[T], Generic[T]):
    """A list of matches; ``truncated`` is True when more matched than the limit."""

    truncated: bool

    def __init__(self, items: list[T], truncated: bool = False) -> None:
        super().__init__(items)
        self.truncated = truncated


@dataclass
class TarExtracted:
    """What an uploaded tar archive put into the sandbox."""

    path: str
    files: int
    dirs: int = 0
    links: int = 0
    skipped: int = 0

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> TarExtracted:
        return cls(path=data["path"], files=int(data.get("files", 0)),
                   dirs=int(data.get("dirs", 0)), links=int(data.get("links", 0)),
                   skipped=int(data.get("skipped", 0)))


@dataclass
class Key:
    """An API key (never the secret itself)."""

    id: str
    name: str
    created_at: str
    admin: bool = False

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Key:
        return cls(id=data["id"], name=data.get("name", ""), created_at=data.get("created_at", ""),
                   admin=bool(data.get("admin", False)))


@dataclass
class CreatedKey(Key):
    """A key just made: ``key`` is the secret, shown this once."""

    key: str = field(default="", repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> CreatedKey:
        return cls(id=data["id"], name=data.get("name", ""), created_at=data.get("created_at", ""),
                   admin=bool(data.get("admin", False)), key=data["key"])


@dataclass
class AuditEntry:
    """One entry of the audit log."""

    id: int
    time: str
    key_id: str | None
    action: str
    target: str | None
    status: int
    error: str | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> AuditEntry:
        return cls(id=int(data["id"]), time=data.get("time", ""), key_id=data.get("key_id"),
                   action=data.get("action", ""), target=data.get("target") or None,
                   status=int(data.get("status", 0)), error=data.get("error") or None)


@dataclass
class Health:
    status: str
    version: str

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Health:
        return cls(status=data.get("status", ""), version=data.get("version", ""))


def _env_dict(env: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env or []:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


@dataclass
class ImageLayer:
    """One layer of an image: its (compressed) ``digest``, the ``diff_id`` of its tar, its
    size in bytes and its media type."""

    digest: str
    diff_id: str
    size: int
    media_type: str

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> ImageLayer:
        return cls(digest=data.get("digest", ""), diff_id=data.get("diff_id", ""),
                   size=int(data.get("size", 0)), media_type=data.get("media_type", ""))


@dataclass
class ImageConfig:
    """What a sandbox of an image starts with: ``env`` (as a dict; the API sends
    ``"KEY=value"`` strings), ``workdir``, ``user``, ``entrypoint`` and ``cmd``, plus the
    image's ``labels`` and ``exposed_ports`` (such as ``"8000/tcp"``)."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)

    @classmethod
    def from_api(cls, data: dict[str, Any] | None) -> ImageConfig:
        data = data or {}
        return cls(env=_env_dict(data.get("env")), workdir=data.get("workdir") or "",
                   user=data.get("user") or "", entrypoint=list(data.get("entrypoint") or []),
                   cmd=list(data.get("cmd") or []), labels=dict(data.get("labels") or {}),
                   exposed_ports=list(data.get("exposed_ports") or []))


@dataclass
class Image:
    """An image of the daemon's store.

    ``id`` is its digest (``"sha256:..."``), ``name`` its first tag (or the id when it has
    none), ``tags`` all of them (``"name:tag"``); ``builtin`` images (``host``, ``busybox``)
    are made by the daemon itself. ``size`` is the bytes of its layers; ``raw`` is the API
    object.
    """

    id: str
    name: str
    tags: list[str]
    builtin: bool = False
    created_at: str | None = None
    size: int = 0
    layers: list[ImageLayer] = field(default_factory=list)
    config: ImageConfig = field(default_factory=ImageConfig)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Image:
        return cls(id=data["id"], name=data.get("name") or data["id"],
                   tags=list(data.get("tags") or []), builtin=bool(data.get("builtin", False)),
                   created_at=data.get("created_at"), size=int(data.get("size") or 0),
                   layers=[ImageLayer.from_api(x) for x in data.get("layers") or []],
                   config=ImageConfig.from_api(data.get("config")), raw=data)

    @property
    def short_id(self) -> str:
        """The first 12 hex digits of the id (enough to name the image in calls)."""
        return self.id[7:19] if self.id.startswith("sha256:") else self.id


@dataclass
class RemovedImages:
    """What :meth:`Images.delete` did: the tags it removed, and the images it deleted (an
    image goes once its last tag does)."""

    untagged: list[str]
    deleted: list[str]

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> RemovedImages:
        return cls(untagged=list(data.get("untagged") or []),
                   deleted=list(data.get("deleted") or []))


@dataclass
class PrunedImages:
    """What :meth:`Images.prune` removed: images (ids), and layers and their bytes."""

    deleted: list[str]
    layers: int
    bytes: int

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> PrunedImages:
        return cls(deleted=list(data.get("deleted") or []), layers=int(data.get("layers", 0)),
                   bytes=int(data.get("bytes", 0)))


@dataclass
class Build:
    """An image build, as the daemon keeps it.

    ``kind`` is ``"dockerfile"`` or ``"base"``; ``status`` is ``"running"``, ``"succeeded"``
    (with ``image_id``) or ``"failed"`` (with ``error``, the API's error object: ``code``,
    ``message`` and maybe ``details`` such as ``{"line": 3}``). ``steps`` and
    ``cached_steps`` count the steps that make an image and those of them taken from the cache
    (both known once it succeeded).
    """

    id: str
    kind: str
    tags: list[str]
    status: str
    image_id: str | None = None
    error: dict[str, Any] | None = None
    steps: int = 0
    cached_steps: int = 0
    created_at: str | None = None
    finished_at: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Build:
        error = data.get("error")
        return cls(id=data["id"], kind=data.get("kind", ""), tags=list(data.get("tags") or []),
                   status=data.get("status", ""), image_id=data.get("image_id") or None,
                   error=error if isinstance(error, dict) else None,
                   steps=int(data.get("steps") or 0),
                   cached_steps=int(data.get("cached_steps") or 0),
                   created_at=data.get("created_at"), finished_at=data.get("finished_at"))

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def error_message(self) -> str | None:
        """The error's message, such as ``"Dockerfile line 3: the command exited with 1:
        ..."``, when the build failed."""
        return None if self.error is None else str(self.error.get("message", ""))

    @property
    def error_line(self) -> int | None:
        """The Dockerfile line the error is about, when it is about one."""
        details = (self.error or {}).get("details")
        line = details.get("line") if isinstance(details, dict) else None
        return line if isinstance(line, int) else None


@dataclass
class Snapshot:
    """A sandbox's files captured at one instant (:meth:`Sandbox.snapshot`): new sandboxes
    start from it (``pb.create(snapshot=...)``) and its sandbox can be rolled back to it
    (:meth:`Sandbox.restore`). ``size`` is the bytes of the captured files."""

    id: str
    name: str
    sandbox_id: str
    image: str
    image_id: str
    size: int = 0
    created_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Snapshot:
        return cls(id=data["id"], name=data.get("name", ""),
                   sandbox_id=data.get("sandbox_id", ""), image=data.get("image", ""),
                   image_id=data.get("image_id", ""), size=int(data.get("size") or 0),
                   created_at=data.get("created_at"), raw=data)

