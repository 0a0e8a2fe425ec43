"""ImageBuilder: a Dockerfile written step by step, in Python.

    from pitbox import ImageBuilder

    image = (ImageBuilder.debian()
             .apt_install(["git", "build-essential"])
             .env({"APP_ENV": "prod"})
             .workdir("/app")
             .copy("./src", "/app/")
             .cmd(["python3", "main.py"]))
    print(image.dockerfile())
    built = pb.images.build(image, tags=["myapp:1"])

Every method returns a new builder (a builder is never changed), so a common start can be
shared by several images. ``copy`` takes local files and directories: they become the build
context that :meth:`Images.build` uploads with the Dockerfile.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Image

__all__ = ["ImageBuilder", "BASE_IMAGE"]

BASE_IMAGE = "base:bookworm"
"""The tag of the daemon's Debian base image (``pb.images.build_base()`` makes it)."""

# A word of FROM, WORKDIR, USER, COPY or EXPOSE that needs no quotes: nothing the Dockerfile's
# word splitting, quote removal or variable substitution would change.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./:@%+,=~^-]+")
# A name of ENV or LABEL that can be written as it is (Docker splits name=value at the first
# "=", before removing quotes: a name can hold neither "=" nor anything to unquote).
_NAME = re.compile(r"[^\s=\"'\\$]+")


def _no_newline(value: str, what: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError("%s cannot hold a line break: %r" % (what, value))
    return value


def _quoted(value: str) -> str:
    """``value`` in double quotes for a Dockerfile word: inside them, Docker's default escape
    character escapes exactly ``"``, ``$`` and itself, so nothing is substituted."""
    _no_newline(value, "a Dockerfile value")
    return '"' + re.sub(r'(["$\\])', r"\\\1", value) + '"'


def _word(value: str) -> str:
    """One word of FROM, WORKDIR, USER, COPY or EXPOSE: as it is when it is plain, else
    quoted."""
    if not value:
        raise ValueError("an empty value")
    return value if _PLAIN_WORD.fullmatch(value) else _quoted(value)


def _pairs(keyword: str, values: Mapping[str, object]) -> str:
    if not values:
        raise ValueError("%s needs at least one name" % keyword)
    parts = []
    for name, value in values.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError("%s name %r: names cannot be empty or hold blanks, quotes, \"=\", "
                             "\"$\" or \"\\\"" % (keyword, name))
        parts.append("%s=%s" % (name, _quoted(str(value))))
    return keyword + " " + " \\\n    ".join(parts)


def _json_form(keyword: str, argv: Sequence[str]) -> str:
    if isinstance(argv, str):
        raise TypeError("%s: a list of arguments, not a string" % keyword)
    args = [str(a) for a in argv]
    return "%s %s" % (keyword, json.dumps(args, ensure_ascii=False))


def _command(keyword: str, cmd: str | Sequence[str]) -> str:
    """RUN, CMD or ENTRYPOINT: a list is the exec form; a string the shell form (/bin/sh -c),
    written as is when the Dockerfile would read it back unchanged, else as the exec form of
    ``/bin/sh -c`` (several lines, a trailing backslash, a leading "[", a heredoc)."""
    if not isinstance(cmd, str):
        if not cmd and keyword == "RUN":
            raise ValueError("RUN needs a command")
        return _json_form(keyword, cmd)
    text = cmd.strip()
    if not text:
        raise ValueError("%s needs a command" % keyword)
    if ("\n" in text or "\r" in text or text.endswith("\\") or text.startswith("[")
            or "<<" in text):
        return _json_form(keyword, ["/bin/sh", "-c", cmd])
    return "%s %s" % (keyword, text)


def _packages(what: str, packages: str | Iterable[str]) -> str:
    names = [packages] if isinstance(packages, str) else [str(p) for p in packages]
    if not names or not all(names):
        raise ValueError("%s needs package names" % what)
    return " ".join(shlex.quote(p) for p in sorted(set(names)))


@dataclass(frozen=True)
class ImageBuilder:
    """A Dockerfile in the making: ``FROM base``, then the steps added so far. Each method
    returns a new builder; :meth:`dockerfile` is the text. Build it with
    ``pb.images.build(builder, tags=[...])``."""

    base: str
    steps: tuple[str, ...] = ()
    # (absolute local path, name in the build context) of each copy().
    context: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _word(_no_newline(self.base, "FROM"))

    # --- starts

    @classmethod
    def from_(cls, image: str | Image) -> ImageBuilder:
        """A build on ``image``: a name such as ``"busybox"`` or ``"myimage:1"``, an id, or an
        :class:`Image` (its id: exactly that image)."""
        return cls(image if isinstance(image, str) else image.id)

    @classmethod
    def debian(cls) -> ImageBuilder:
        """A build on the daemon's Debian (bookworm) base image, ``base:bookworm``: python3,
        git, curl and common tools (it must have been built: ``pb.images.build_base()``)."""
        return cls(BASE_IMAGE)

    # --- steps

    def _with(self, step: str) -> ImageBuilder:
        return replace(self, steps=self.steps + (step,))

    def run(self, cmd: str | Sequence[str]) -> ImageBuilder:
        """``RUN``: a string for ``/bin/sh -c`` (written as ``RUN cmd``), or a list of
        arguments (the exec form). Build steps have loopback networking only, unless the
        daemon was configured otherwise."""
        return self._with(_command("RUN", cmd))

    def apt_install(self, packages: str | Iterable[str]) -> ImageBuilder:
        """Debian packages, installed without recommends and without keeping apt's lists.
        The names are sorted (so the step, and its cache, does not depend on their order)."""
        names = _packages("apt_install", packages)
        return self._with("RUN apt-get update && apt-get install -y --no-install-recommends "
                          "%s && rm -rf /var/lib/apt/lists/*" % names)

    def pip_install(self, packages: str | Iterable[str]) -> ImageBuilder:
        """Python packages (requirement specifiers such as ``"requests>=2"``), installed with
        the image's ``python3 -m pip``, without a cache and, on Debian, past its "externally
        managed" guard. Needs pip in the image: on the Debian base image,
        ``.apt_install(["python3-pip"])`` first."""
        names = _packages("pip_install", packages)
        return self._with("RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install "
                          "--no-cache-dir %s" % names)

    def env(self, values: Mapping[str, object] | None = None, /,
            **more: object) -> ImageBuilder:
        """``ENV``: variables for the following steps and for sandboxes of the image. Values
        are taken literally (quoted, ``$`` escaped)."""
        merged = {**(values or {}), **more}
        return self._with(_pairs("ENV", merged))

    def label(self, values: Mapping[str, object] | None = None, /,
              **more: object) -> ImageBuilder:
        """``LABEL``: metadata of the image (``Image.config.labels``)."""
        merged = {**(values or {}), **more}
        return self._with(_pairs("LABEL", merged))

    def workdir(self, path: str) -> ImageBuilder:
        """``WORKDIR``: the directory of the following steps and of sandboxes of the image
        (made when missing)."""
        return self._with("WORKDIR " + _word(_no_newline(path, "WORKDIR")))

    def user(self, user: str | int) -> ImageBuilder:
        """``USER``: a name or uid (``"1000:1000"`` with a group) for the following steps and
        sandboxes of the image."""
        return self._with("USER " + _word(_no_newline(str(user), "USER")))

    def expose(self, *ports: int | str) -> ImageBuilder:
        """``EXPOSE``: ports (``8000``, ``"53/udp"``), recorded in the image."""
        if not ports:
            raise ValueError("expose needs a port")
        return self._with("EXPOSE " + " ".join(_word(str(p)) for p in ports))

    def cmd(self, cmd: str | Sequence[str]) -> ImageBuilder:
        """``CMD``: the image's default command (a list, or a string for ``/bin/sh -c``)."""
        return self._with(_command("CMD", cmd))

    def entrypoint(self, cmd: str | Sequence[str]) -> ImageBuilder:
        """``ENTRYPOINT`` (a list, or a string for ``/bin/sh -c``)."""
        return self._with(_command("ENTRYPOINT", cmd))

    def copy(self, src: str | os.PathLike[str], dest: str, *, chown: str | None = None,
             chmod: str | int | None = None) -> ImageBuilder:
        """``COPY`` of a local file or directory into the image, as Docker copies: a
        directory's contents go into ``dest``; a file becomes ``dest``, or goes into it when
        ``dest`` ends in "/". A directory is sent without what its own .dockerignore
        excludes. ``src`` must exist now (its path is kept; its contents are read when the
        image is built). ``chmod`` is octal (``0o755`` or ``"755"``)."""
        local = os.path.abspath(os.fspath(src))
        if not os.path.lexists(local):
            raise FileNotFoundError(local)
        name = "copy-%d" % len(self.context)
        source = pattern = name
        if not os.path.isdir(local):
            base = _no_newline(os.path.basename(local), "a copied name")
            source = name + "/" + base
            # COPY takes a source with * ? [ as a pattern: those are escaped.
            pattern = name + "/" + re.sub(r"([*?\[\\])", r"\\\1", base)
        flags = ""
        if chown is not None:
            flags += "--chown=%s " % _word(_no_newline(str(chown), "chown"))
        if chmod is not None:
            flags += "--chmod=%s " % (format(chmod, "o") if isinstance(chmod, int) else
                                      _word(chmod))
        step = "COPY %s%s %s" % (flags, _word(pattern), _word(_no_newline(dest, "COPY")))
        return replace(self, steps=self.steps + (step,),
                       context=self.context + ((local, source),))

    # --- the result

    def dockerfile(self) -> str:
        """The Dockerfile's text."""
        return "".join(line + "\n" for line in ("FROM " + _word(self.base),) + self.steps)

    def __str__(self) -> str:
        return self.dockerfile()
