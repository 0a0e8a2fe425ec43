"""The files of a sandbox."""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Generator, Iterable, Iterator
from typing import IO, Any

from ._transport import Transport
from .errors import NotFound
from .models import FileEntry, FindMatch, GrepMatch, MatchList, TarExtracted

__all__ = ["Files"]

Data = bytes | bytearray | memoryview | str | IO[bytes] | IO[str] | Iterable[bytes]
"""What :meth:`Files.write` takes: bytes, text (written as UTF-8), a file object opened for
reading (streamed), or an iterable of byte chunks (streamed)."""


def _mode_text(mode: int | str) -> str:
    return format(mode, "o") if isinstance(mode, int) else mode


class Files:
    """The files of one sandbox. Paths are absolute and always resolved inside the sandbox."""

    def __init__(self, http: Transport, sandbox_path: str) -> None:
        self._http = http
        self._base = sandbox_path + "/files"

    # --- contents

    def read(self, path: str) -> bytes:
        """The whole file."""
        return self._http.request("GET", self._base, query={"path": path}).content

    def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read(path).decode(encoding, errors)

    def read_stream(self, path: str, chunk_size: int = 64 * 1024
                    ) -> Generator[bytes, None, None]:
        """The file's bytes in pieces as they come (for files too big to hold at once)."""
        answer = self._http.request("GET", self._base, query={"path": path}, stream=True)

        def chunks() -> Generator[bytes, None, None]:
            try:
                yield from answer.iter_chunks(chunk_size)
            finally:
                answer.close()

        return chunks()

    def download(self, path: str, dest: IO[bytes]) -> int:
        """Streams the file into the writable binary file object ``dest``; returns its size."""
        size = 0
        for chunk in self.read_stream(path):
            dest.write(chunk)
            size += len(chunk)
        return size

    def write(self, path: str, data: Data, mode: int | str | None = None) -> int:
        """Writes a file (made or replaced whole, its parent directories made as needed);
        returns its size. ``mode`` is permission bits, such as ``0o755`` or ``"755"``
        (default: the old file's, or 0644). File objects and iterables are streamed."""
        body: Any
        if isinstance(data, str):
            body = data.encode("utf-8")
        elif isinstance(data, (bytearray, memoryview)):
            body = bytes(data)
        else:
            body = data
        answer = self._http.request(
            "PUT", self._base,
            query={"path": path, "mode": None if mode is None else _mode_text(mode)},
            body=body, headers={"Content-Type": "application/octet-stream"})
        return int(answer.json()["size"])

    # --- entries

    def list(self, path: str = "/", *, page_size: int = 1000) -> Iterator[FileEntry]:
        """The entries of a directory (all pages), by name."""
        from .sandbox import paginate

        return paginate(
            lambda cursor: self._http.request(
                "GET", self._base + "/list",
                query={"path": path, "limit": page_size, "cursor": cursor}).json(),
            FileEntry.from_api)

    def stat(self, path: str) -> FileEntry:
        """The entry at ``path`` (a symlink itself, not what it points to)."""
        return FileEntry.from_api(
            self._http.request("GET", self._base + "/stat", query={"path": path}).json())

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except NotFound:
            return False
        return True

    def mkdir(self, path: str, parents: bool = True, mode: int | str | None = None) -> FileEntry:
        """Makes a directory (and, with ``parents``, those above it); fine if it exists."""
        body: dict[str, Any] = {"path": path, "parents": parents}
        if mode is not None:
            body["mode"] = mode
        return FileEntry.from_api(
            self._http.request("POST", self._base + "/mkdir", json=body).json())

    def remove(self, path: str, recursive: bool = False) -> None:
        """Removes a file, or a directory (with ``recursive``, with all in it)."""
        self._http.request("DELETE", self._base,
                           query={"path": path, "recursive": recursive or None})

    def move(self, src: str, dst: str, overwrite: bool = False) -> FileEntry:
        """Renames ``src`` to ``dst``; returns the entry at ``dst``."""
        body = {"from": src, "to": dst, "overwrite": overwrite}
        return FileEntry.from_api(
            self._http.request("POST", self._base + "/move", json=body).json())

    def chmod(self, path: str, mode: int | str) -> FileEntry:
        body = {"path": path, "mode": mode}
        return FileEntry.from_api(
            self._http.request("POST", self._base + "/chmod", json=body).json())

    def chown(self, path: str, uid: int | None = None, gid: int | None = None) -> FileEntry:
        body: dict[str, Any] = {"path": path}
        if uid is not None:
            body["uid"] = uid
        if gid is not None:
            body["gid"] = gid
        return FileEntry.from_api(
            self._http.request("POST", self._base + "/chown", json=body).json())

    # --- search

    def find(self, path: str, name: str | None = None, type: str | None = None,
             limit: int | None = None) -> MatchList[FindMatch]:
        """Entries below ``path`` whose name matches the glob ``name`` and whose type is
        ``type`` (``"file"``, ``"dir"``, ``"symlink"``, ...)."""
        answer = self._http.request(
            "GET", self._base + "/find",
            query={"path": path, "name": name, "type": type, "limit": limit}).json()
        return MatchList([FindMatch.from_api(m) for m in answer["items"]],
                         bool(answer.get("truncated")))

    def grep(self, path: str, pattern: str, regex: bool = False, ignore_case: bool = False,
             glob: str | None = None, limit: int | None = None) -> MatchList[GrepMatch]:
        """Lines of the files below ``path`` that contain ``pattern`` (or match it, with
        ``regex``); ``glob`` limits the file names searched."""
        answer = self._http.request(
            "GET", self._base + "/grep",
            query={"path": path, "pattern": pattern, "regex": regex or None,
                   "ignore_case": ignore_case or None, "glob": glob, "limit": limit}).json()
        return MatchList([GrepMatch.from_api(m) for m in answer["items"]],
                         bool(answer.get("truncated")))

    # --- archives

    def upload_tar(self, path: str, archive: bytes | IO[bytes]) -> TarExtracted:
        """Extracts a tar archive (plain, gzip, bzip2, xz or zstd) below the directory
        ``path``, made if missing. File objects are streamed."""
        answer = self._http.request("PUT", self._base + "/tar", query={"path": path},
                                    body=archive,
                                    headers={"Content-Type": "application/x-tar"})
        return TarExtracted.from_api(answer.json())

    def download_tar(self, path: str) -> bytes:
        """A tar archive of the directory ``path`` (names relative to it), or of one file."""
        return self._http.request("GET", self._base + "/tar", query={"path": path}).content

    def upload_dir(self, local_dir: str | os.PathLike[str], path: str) -> TarExtracted:
        """Copies the contents of a local directory into the directory ``path``."""
        local = os.fspath(local_dir)
        if not os.path.isdir(local):
            raise NotADirectoryError(local)
        with tempfile.TemporaryFile() as buf:
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted(os.listdir(local)):
                    tar.add(os.path.join(local, name), arcname=name)
            buf.seek(0)
            return self.upload_tar(path, buf)

    def download_dir(self, path: str, local_dir: str | os.PathLike[str]) -> None:
        """Copies the contents of the directory ``path`` into a local directory (made if
        missing). The archive is streamed and extracted with tarfile's ``"data"`` filter:
        nothing lands outside ``local_dir``, and no device files, setuid bits or absolute
        links are made."""
        if not hasattr(tarfile, "data_filter"):
            raise RuntimeError("download_dir needs tarfile's extraction filters "
                               "(Python 3.11.4 or later)")
        local = os.fspath(local_dir)
        os.makedirs(local, exist_ok=True)
        answer = self._http.request("GET", self._base + "/tar", query={"path": path},
                                    stream=True)
        try:
            with tarfile.open(fileobj=answer.raw, mode="r|") as tar:
                extract: Any = tar.extractall  # (older type stubs lack its filter argument)
                extract(local, filter="data")
            for _ in answer.iter_chunks():  # the rest of the answer: the connection is kept
                pass
        finally:
            answer.close()
