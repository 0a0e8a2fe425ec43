"""Build contexts: a local directory as a tar archive, less what its .dockerignore excludes.

The rules are Docker's (moby/patternmatcher), as the daemon and the CLI apply them: "*" and "?"
never match "/", "[...]" classes, "\\" escapes, "**" matches any number of directories; "!"
makes an exception; the last rule that matches a path or one of its parent directories decides.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import tarfile
from collections.abc import Iterable
from typing import IO

__all__ = ["IgnoreRules", "write_context"]


class _Pattern:
    """One .dockerignore pattern, compiled."""

    def __init__(self, text: str) -> None:
        self.text = text
        regex: list[str] = []
        leading_doublestar = False
        wildcards = False
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            i += 1
            if c == "*" and i < n and text[i] == "*":
                if i == 1:
                    leading_doublestar = True
                else:
                    wildcards = True
                i += 1
                if i < n and text[i] == "/":
                    i += 1
                regex.append(".*" if i == n else "(?:.*/)?")
            elif c == "*":
                regex.append("[^/]*")
                wildcards = True
            elif c == "?":
                regex.append("[^/]")
                wildcards = True
            elif c == "\\":
                if i == n:
                    raise ValueError("bad pattern %r: it ends in a lone \\" % text)
                regex.append(re.escape(text[i]))
                i += 1
                wildcards = True
            elif c == "[":
                i = self._class(text, i, regex)
                wildcards = True
            else:
                if c == "]":
                    wildcards = True
                regex.append(re.escape(c))
        # As patternmatcher: "**" followed by plain text only is a suffix test.
        self._suffix_only = leading_doublestar and not wildcards
        self._literal = not leading_doublestar and not wildcards
        self._regex = re.compile("".join(regex), re.S)

    @staticmethod
    def _class(text: str, start: int, regex: list[str]) -> int:
        """Go's "[" "^"? (char | char "-" char)+ "]" (with "\\" escaping), from after "[";
        returns where it ends."""
        n = len(text)
        i = start

        def bad(why: str) -> ValueError:
            return ValueError("bad pattern %r: %s" % (text, why))

        def bound() -> str:
            nonlocal i
            if i == n or text[i] in "-]":
                raise bad("malformed [] class")
            if text[i] == "\\":
                i += 1
                if i == n:
                    raise bad("malformed [] class")
            c = text[i]
            i += 1
            if i == n:
                raise bad("unclosed [")
            return c

        negated = i < n and text[i] == "^"
        if negated:
            i += 1
        ranges: list[tuple[str, str]] = []
        while True:
            if i < n and text[i] == "]" and ranges:
                i += 1
                break
            lo = hi = bound()
            if text[i] == "-":
                i += 1
                hi = bound()
            ranges.append((lo, hi))
        parts = [re.escape(lo) if lo == hi else re.escape(lo) + "-" + re.escape(hi)
                 for lo, hi in ranges if lo <= hi]  # an empty range matches nothing
        if parts:
            regex.append("[" + ("^" if negated else "") + "".join(parts) + "]")
        else:
            regex.append("." if negated else "(?!)")
        return i

    def _suffix_matches(self, path: str) -> bool:
        suffix = self.text[2:]
        return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])

    def matches(self, path: str) -> bool:
        if self._literal:
            return path == self.text
        if self._suffix_only:
            return self._suffix_matches(path)
        return self._regex.fullmatch(path) is not None

    def matches_or_parent(self, path: str) -> bool:
        """Whether ``path`` or one of its parent directories matches."""
        slash = path.find("/")
        while slash > 0:
            if self.matches(path[:slash]):
                return True
            slash = path.find("/", slash + 1)
        return self.matches(path)


def _clean(path: str) -> str:
    """Go's filepath.Clean, relative: "./a//b/" is "a/b", "a/../b" is "b", "" is "."."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


class IgnoreRules:
    """The rules of a .dockerignore file (see the module's doc)."""

    def __init__(self, rules: Iterable[tuple[str, bool]] = ()) -> None:
        self._rules = [(_Pattern(p), exception) for p, exception in rules]

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        """Reads a .dockerignore: "#" in the first column starts a comment, blank lines are
        skipped, patterns are trimmed and cleaned (a leading "/" dropped), "!" makes an
        exception. Raises ValueError naming the line of a malformed pattern."""
        rules: list[tuple[str, bool]] = []
        for number, line in enumerate(text.split("\n"), 1):
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]
            if line.startswith("#"):
                continue
            line = line.strip(" \t\r\v\f")
            if not line:
                continue
            exception = line.startswith("!")
            if exception:
                line = line[1:].strip(" \t\r\v\f")
                if not line:
                    raise ValueError(".dockerignore line %d: \"!\" needs a pattern after it"
                                     % number)
            pattern = _clean(line)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
            try:
                _Pattern(pattern)
            except ValueError as e:
                raise ValueError(".dockerignore line %d: %s" % (number, e)) from None
            rules.append((pattern, exception))
        return cls(rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def _deciding(self, path: str) -> int:
        for i in range(len(self._rules) - 1, -1, -1):
            if self._rules[i][0].matches_or_parent(path):
                return i
        return -1

    def ignored(self, rel_path: str) -> bool:
        """Whether ``rel_path`` ("dir/file", relative to the context's root) is left out. The
        root itself never is."""
        path = _clean(rel_path).lstrip("/")
        if path in ("", "."):
            return False
        i = self._deciding(path)
        return i >= 0 and not self._rules[i][1]

    def can_skip_dir(self, rel_dir: str) -> bool:
        """Whether a walk may leave out directory ``rel_dir`` without looking inside: it is
        ignored, and no later exception could bring anything below it back."""
        path = _clean(rel_dir).lstrip("/")
        i = self._deciding(path) if path not in ("", ".") else -1
        if i < 0 or self._rules[i][1]:
            return False
        return not any(exception for _, exception in self._rules[i + 1:])


def _tarinfo(tar: tarfile.TarFile, path: str, name: str) -> tarfile.TarInfo | None:
    """The header of ``path`` as ``name`` (owned by root, like Docker's contexts), or None
    for what a context does not hold (sockets, fifos, devices)."""
    st = os.lstat(path)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return None
    info = tar.gettarinfo(path, arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add(tar: tarfile.TarFile, path: str, name: str) -> bool:
    info = _tarinfo(tar, path, name)
    if info is None:
        return False
    if info.isreg():
        with open(path, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)
    return True


def _add_tree(tar: tarfile.TarFile, root: str, prefix: str, rules: IgnoreRules) -> None:
    """The contents of directory ``root`` under ``prefix`` ("" or "name/"), in name order,
    without what ``rules`` (relative to ``root``) leave out."""

    def walk(rel: str) -> None:
        directory = os.path.join(root, rel) if rel else root
        for entry in sorted(os.listdir(directory)):
            child = rel + entry
            path = os.path.join(root, child)
            is_dir = stat.S_ISDIR(os.lstat(path).st_mode)
            if rules.ignored(child):
                # An exception may still bring back something below an ignored directory:
                # then its files go in (their parents are made when the tar is unpacked).
                if is_dir and not rules.can_skip_dir(child):
                    walk(child + "/")
                continue
            if _add(tar, path, prefix + child) and is_dir:
                walk(child + "/")

    walk("")


def read_ignore(directory: str) -> IgnoreRules:
    path = os.path.join(directory, ".dockerignore")
    if not os.path.isfile(path):
        return IgnoreRules()
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return IgnoreRules.parse(f.read())


def write_context(out: IO[bytes], sources: Iterable[tuple[str, str]]) -> None:
    """Writes a tar archive of ``sources``: (local path, name in the archive) pairs. A
    directory named "" is the archive's root; each directory goes in without what its own
    .dockerignore excludes. The parents of names are made as directories."""
    made: set[str] = set()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for local, name in sources:
            name = name.strip("/")
            parts = name.split("/")[:-1] if name else []
            for depth in range(1, len(parts) + 1):
                parent = "/".join(parts[:depth])
                if parent not in made:
                    made.add(parent)
                    info = tarfile.TarInfo(parent)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            made.add(name)
            if os.path.isdir(local):
                if name:
                    _add(tar, local, name)
                _add_tree(tar, local, name + "/" if name else "", read_ignore(local))
            elif os.path.lexists(local):
                if not name:
                    raise NotADirectoryError(local)
                if not _add(tar, local, name):
                    raise ValueError("%s is not a file, directory or symbolic link" % local)
            else:
                raise FileNotFoundError(local)
