"""Images: list, inspect, tag, remove, prune, import and export them, and build them from a
Dockerfile (or an :class:`ImageBuilder`) and a build context."""

from __future__ import annotations

import builtins
import codecs
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any, Union

from ._context import write_context
from ._transport import Transport
from .builder import ImageBuilder
from .errors import BuildError, NotFound
from .models import Build, Image, PrunedImages, RemovedImages

__all__ = ["Images", "ImageRef", "LogCallback"]

ImageRef = Union[str, Image]
"""An image: a name (``"busybox"``, ``"myimage:1"``), an id (``"sha256:..."``, or its first
12 hex digits at least), or an :class:`Image`."""

LogCallback = Callable[[str], Any]
"""Called with each piece of a build's log as it comes (text, not split into lines)."""

PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]


def _ref(ref: ImageRef) -> str:
    return ref.id if isinstance(ref, Image) else ref


def _quote(segment: str) -> str:
    from .sandbox import quote

    return quote(segment)


class Images:
    """The images of the daemon (``pb.images``), and builds of new ones.

    A ref names an image by name, tag or id (see :data:`ImageRef`); in paths it is
    percent-encoded, so names with "/" work too.
    """

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def _path(self, ref: ImageRef) -> str:
        return "/v1/images/" + _quote(_ref(ref))

    # --- the store

    def list(self, *, page_size: int = 100) -> Iterator[Image]:
        """Every image (all pages), the built-in ``host`` and ``busybox`` included."""
        from .sandbox import paginate

        return paginate(
            lambda cursor: self._http.request(
                "GET", "/v1/images", query={"limit": page_size, "cursor": cursor}).json(),
            Image.from_api)

    def get(self, ref: ImageRef) -> Image:
        """The image ``ref`` names; :class:`NotFound` if none."""
        return Image.from_api(self._http.request("GET", self._path(ref)).json())

    def exists(self, ref: ImageRef) -> bool:
        try:
            self.get(ref)
        except NotFound:
            return False
        return True

    def tag(self, ref: ImageRef, tag: str) -> Image:
        """Gives the image another name (``"name"`` or ``"name:tag"``; a tag already on
        another image moves to this one); returns the image."""
        answer = self._http.request("POST", self._path(ref) + "/tag", json={"tag": tag})
        return Image.from_api(answer.json())

    def delete(self, ref: ImageRef) -> RemovedImages:
        """Removes a tag (by name) or an image (by id, with all its tags). An image goes once
        it has no tags left; :class:`Conflict` while a sandbox (or a running build) uses it."""
        return RemovedImages.from_api(self._http.request("DELETE", self._path(ref)).json())

    def prune(self) -> PrunedImages:
        """Removes the images without tags that nothing uses, and the layers no image has
        (admin key only)."""
        return PrunedImages.from_api(
            self._http.request("POST", "/v1/images/prune", json={}).json())

    def import_archive(self, source: PathOrFile | bytes, tag: str | None = None
                       ) -> builtins.list[Image]:
        """Imports a ``docker save`` archive or an OCI image layout (a tar file, plain or
        compressed, or a directory): a path, a binary file object (streamed) or bytes. ``tag``
        also names the image. Returns the images made (or found: the same archive twice makes
        the same images)."""
        query = {"tag": tag}
        if isinstance(source, (bytes, bytearray, memoryview)):
            return self._imported(bytes(source), query)
        if not isinstance(source, (str, os.PathLike)):
            return self._imported(source, query)  # a file object: streamed
        path = os.fspath(source)
        if os.path.isdir(path):
            with tempfile.TemporaryFile() as buf:
                write_context(buf, [(path, "")])
                buf.seek(0)
                return self._imported(buf, query)
        with open(path, "rb") as f:
            return self._imported(f, query)

    def _imported(self, body: bytes | IO[bytes], query: dict[str, Any]
                  ) -> builtins.list[Image]:
        # The daemon answers once it has stored and checked the whole archive.
        answer = self._http.request("POST", "/v1/images/import", query=query, body=body,
                                    headers={"Content-Type": "application/x-tar"},
                                    timeout=None)
        return [Image.from_api(i) for i in answer.json()["images"]]

    def export(self, ref: ImageRef, dest: PathOrFile) -> int:
        """Writes the image as an OCI archive (``docker load`` takes it too) to ``dest``, a
        path or a writable binary file object; streamed. Returns its size. A path is written
        whole or not at all."""
        answer = self._http.request("GET", self._path(ref) + "/export", stream=True,
                                    timeout=None)
        try:
            if not isinstance(dest, (str, os.PathLike)):
                return self._copy(answer.iter_chunks(), dest)
            path = os.fspath(dest)
            part = path + ".pitbox-part"
            try:
                with open(part, "wb") as f:
                    size = self._copy(answer.iter_chunks(), f)
                os.replace(part, path)
            except BaseException:
                if os.path.exists(part):
                    os.unlink(part)
                raise
            return size
        finally:
            answer.close()

    @staticmethod
    def _copy(chunks: Iterator[bytes], out: IO[bytes]) -> int:
        size = 0
        for chunk in chunks:
            out.write(chunk)
            size += len(chunk)
        return size

    # --- builds

    def upload_context(self, source: str | os.PathLike[str] | Sequence[tuple[str, str]]
                       ) -> str:
        """Uploads a build context and returns its id (``"sha256:..."``, the same for the same
        contents). ``source`` is a local directory, sent without what its .dockerignore
        excludes, or (local path, name in the context) pairs. :meth:`build` calls this."""
        sources = ([(os.fspath(source), "")] if isinstance(source, (str, os.PathLike))
                   else list(source))
        if len(sources) == 1 and sources[0][1] == "" and not os.path.isdir(sources[0][0]):
            raise NotADirectoryError(sources[0][0])
        with tempfile.TemporaryFile() as buf:
            write_context(buf, sources)
            buf.seek(0)
            answer = self._http.request("POST", "/v1/build-contexts", body=buf,
                                        headers={"Content-Type": "application/x-tar"},
                                        timeout=None)
        context_id: str = answer.json()["id"]
        return context_id

    def start_build(self, dockerfile: str | ImageBuilder | None = None,
                    context_dir: str | os.PathLike[str] | None = None, *,
                    tags: Sequence[str] | None = None, args: Mapping[str, str] | None = None,
                    no_cache: bool = False) -> Build:
        """Uploads the context and starts a build; returns it at once, running (see
        :meth:`build` for the arguments, and :meth:`wait_build`)."""
        if isinstance(tags, str):
            tags = [tags]
        context: str | None = None
        if isinstance(dockerfile, ImageBuilder):
            if context_dir is not None:
                raise ValueError("an ImageBuilder makes its own build context (of its copy() "
                                 "steps): give no context_dir")
            text = dockerfile.dockerfile()
            if dockerfile.context:
                context = self.upload_context(dockerfile.context)
        else:
            if dockerfile is None:
                if context_dir is None:
                    raise ValueError("build needs a Dockerfile, an ImageBuilder or a "
                                     "context_dir with a Dockerfile")
                with open(os.path.join(os.fspath(context_dir), "Dockerfile"),
                          encoding="utf-8") as f:
                    text = f.read()
            else:
                text = dockerfile
            if context_dir is not None:
                context = self.upload_context(context_dir)
        body: dict[str, Any] = {"dockerfile": text, "tags": list(tags or []),
                                "args": dict(args or {}), "no_cache": no_cache}
        if context is not None:
            body["context"] = context
        return Build.from_api(self._http.request("POST", "/v1/builds", json=body).json())

    def build(self, dockerfile: str | ImageBuilder | None = None,
              context_dir: str | os.PathLike[str] | None = None, *,
              tags: Sequence[str] | None = None, args: Mapping[str, str] | None = None,
              no_cache: bool = False, on_log: LogCallback | None = None) -> Image:
        """Builds an image and returns it.

        ``dockerfile`` is the text of a Dockerfile, or an :class:`ImageBuilder` (whose copy()
        steps make the context), or None for the ``Dockerfile`` of ``context_dir``.
        ``context_dir`` is a local directory sent as the build context, without what its
        .dockerignore excludes (Docker's rules). ``tags`` name the image, ``args`` set its
        ``ARG``s, ``no_cache`` runs every step again. ``on_log`` is called with the build's
        log as it comes.

        A Dockerfile that does not parse is refused at once (:class:`InvalidArgument`, its
        ``details["line"]`` the line); a build that fails raises :class:`BuildError`, with the
        build record, the line and the log.
        """
        started = self.start_build(dockerfile, context_dir, tags=tags, args=args,
                                   no_cache=no_cache)
        return self.wait_build(started, on_log=on_log)

    def wait_build(self, build: Build | str, on_log: LogCallback | None = None) -> Image:
        """Follows a build's log (to ``on_log``) until it ends; returns the image it made, or
        raises :class:`BuildError`."""
        record, log = self._follow(build.id if isinstance(build, Build) else build, on_log)
        if not record.succeeded or not record.image_id:
            raise BuildError(record, log)
        return self.get(record.image_id)

    def _follow(self, build_id: str, on_log: LogCallback | None) -> tuple[Build, str]:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pieces: list[str] = []
        offset = 0

        def take(text: str) -> None:
            if text:
                pieces.append(text)
                if on_log is not None:
                    on_log(text)

        while True:
            # Answered until the build ends; a build may be silent for long (a RUN step).
            answer = self._http.request(
                "GET", "/v1/builds/%s/logs" % _quote(build_id),
                query={"follow": True, "offset": offset or None}, timeout=None, stream=True)
            try:
                for chunk in answer.iter_chunks():
                    offset += len(chunk)
                    take(decoder.decode(chunk))
            finally:
                answer.close()
            record = self.get_build(build_id)
            if not record.running:
                break
        take(decoder.decode(b"", final=True))
        return record, "".join(pieces)

    def get_build(self, build_id: str) -> Build:
        """A build by id (the daemon keeps the last ones, also after they ended)."""
        return Build.from_api(
            self._http.request("GET", "/v1/builds/" + _quote(build_id)).json())

    def builds(self, *, page_size: int = 100) -> Iterator[Build]:
        """The builds the daemon keeps, newest first (all pages)."""
        from .sandbox import paginate

        return paginate(
            lambda cursor: self._http.request(
                "GET", "/v1/builds", query={"limit": page_size, "cursor": cursor}).json(),
            Build.from_api)

    def build_log(self, build: Build | str) -> str:
        """A build's log so far."""
        build_id = build.id if isinstance(build, Build) else build
        answer = self._http.request("GET", "/v1/builds/%s/logs" % _quote(build_id))
        return answer.content.decode("utf-8", "replace")

    def build_base(self, rebuild: bool = False, on_log: LogCallback | None = None) -> Image:
        """The daemon's Debian base image (``base:bookworm``, also ``base``), built with
        mmdebstrap unless it exists (or with ``rebuild``): about a minute, and it needs the
        Debian archive. Admin key only. Raises :class:`BuildError` when it fails."""
        answer = self._http.request("POST", "/v1/images/base", json={"rebuild": rebuild})
        data = answer.json()
        if answer.status == 200 and data.get("status") == "exists":
            return Image.from_api(data["image"])
        return self.wait_build(Build.from_api(data), on_log=on_log)
