"""Sandboxes, their commands and their sessions."""

from __future__ import annotations

import base64
import json
import math
import shlex
import time
import urllib.parse
from collections.abc import Generator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ._transport import Transport
from .errors import NotFound
from .files import Files
from .models import ExecEvent, ExecResult, SessionLogs, Snapshot

if TYPE_CHECKING:
    from .client import Pitbox

__all__ = ["Sandbox", "Sessions", "Session", "Command"]

Command = str | Sequence[str]
"""A command: a list of arguments (run as is) or a string (run by ``/bin/sh -c``)."""

T = TypeVar("T")


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def paginate(fetch: Callable[[str | None], Any], convert: Callable[[Any], T]) -> Iterator[T]:
    """Every item of a paged list. The first page is fetched now (so errors show at once),
    the next ones as the iteration reaches them."""
    first = fetch(None)

    def items() -> Iterator[T]:
        page = first
        while True:
            for item in page["items"]:
                yield convert(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return
            page = fetch(str(cursor))

    return items()


def _command_body(cmd: Command, env: Mapping[str, str] | None, cwd: str | None,
                  user: str | None, stdin: str | bytes | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if isinstance(cmd, str):
        body["shell"] = cmd
    else:
        body["cmd"] = list(cmd)
    if env is not None:
        body["env"] = dict(env)
    if cwd is not None:
        body["cwd"] = cwd
    if user is not None:
        body["user"] = user
    if isinstance(stdin, str):
        body["stdin"] = stdin
    elif stdin is not None:
        body["stdin_base64"] = base64.b64encode(bytes(stdin)).decode("ascii")
    return body


def _describe(cmd: Command) -> str:
    return cmd if isinstance(cmd, str) else shlex.join(cmd)


class Sandbox:
    """A sandbox. Its attributes are those of the API's sandbox object, as of the last answer
    about it (:meth:`refresh` asks again). As a context manager, it deletes the sandbox on
    exit."""

    id: str
    name: str | None
    labels: dict[str, str]
    image: str
    image_id: str | None
    runtime: str
    state: str
    error: Any
    cpus: float | None
    memory: int | None
    pids: int | None
    disk: int | None
    env: dict[str, str]
    workdir: str
    user: str
    auto_stop_minutes: float | None
    auto_delete_minutes: float | None
    auto_archive_minutes: float | None
    ephemeral: bool
    snapshot_id: str | None
    """The snapshot the sandbox was made from, if any."""
    forked_from: str | None
    """The id of the sandbox this one is a fork of, if any."""
    created_at: str | None
    started_at: str | None
    stopped_at: str | None
    last_activity_at: str | None
    raw: dict[str, Any]
    """The API object as it was last received."""

    def __init__(self, client: Pitbox, data: dict[str, Any]) -> None:
        self._client = client
        self._update(data)

    def _update(self, data: dict[str, Any]) -> None:
        self.raw = data
        self.id = data["id"]
        self.name = data.get("name")
        self.labels = dict(data.get("labels") or {})
        self.image = data.get("image", "")
        self.image_id = data.get("image_id")
        self.runtime = data.get("runtime", "")
        self.state = data.get("state", "")
        self.error = data.get("error")
        self.cpus = data.get("cpus")
        self.memory = data.get("memory")
        self.pids = data.get("pids")
        self.disk = data.get("disk")
        self.env = dict(data.get("env") or {})
        self.workdir = data.get("workdir", "")
        self.user = data.get("user", "")
        self.auto_stop_minutes = data.get("auto_stop_minutes")
        self.auto_delete_minutes = data.get("auto_delete_minutes")
        self.auto_archive_minutes = data.get("auto_archive_minutes")
        self.ephemeral = bool(data.get("ephemeral", False))
        self.snapshot_id = data.get("snapshot")
        self.forked_from = data.get("forked_from")
        self.created_at = data.get("created_at")
        self.started_at = data.get("started_at")
        self.stopped_at = data.get("stopped_at")
        self.last_activity_at = data.get("last_activity_at")

    @property
    def _http(self) -> Transport:
        return self._client._transport

    @property
    def _path(self) -> str:
        return "/v1/sandboxes/" + quote(self.id)

    def __repr__(self) -> str:
        return "<Sandbox %s%s %s>" % (self.id, " (%s)" % self.name if self.name else "",
                                     self.state)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sandbox) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.delete()
        except NotFound:
            pass

    # --- life cycle

    def refresh(self) -> Sandbox:
        """Fetches the sandbox again; returns self."""
        self._update(self._http.request("GET", self._path).json())
        return self

    def stop(self) -> Sandbox:
        """Stops the sandbox (its files are kept); returns self."""
        self._update(self._http.request("POST", self._path + "/stop").json())
        return self

    def start(self) -> Sandbox:
        """Starts a stopped sandbox again on the same files; returns self."""
        self._update(self._http.request("POST", self._path + "/start").json())
        return self

    def delete(self) -> None:
        """Deletes the sandbox and everything in it."""
        self._http.request("DELETE", self._path)
        self.state = "deleted"

    def pause(self) -> Sandbox:
        """Freezes every process of the sandbox (no CPU used, memory kept); returns self.
        Commands and file calls on a paused sandbox raise :class:`Conflict` unless they pass
        ``auto_resume=True``."""
        self._update(self._http.request("POST", self._path + "/pause").json())
        return self

    def resume(self) -> Sandbox:
        """Lets the processes of a paused sandbox go on where they were; returns self."""
        self._update(self._http.request("POST", self._path + "/resume").json())
        return self

    def resize(self, *, cpus: float | None = None, memory: int | str | None = None,
               pids: int | None = None, disk: int | str | None = None) -> Sandbox:
        """New limits (only those given change): at once for a running sandbox, at its next
        start for a stopped one. A memory limit below what the sandbox uses now raises
        :class:`Conflict` (its ``details["memory_used"]`` says how much). Returns self."""
        body = {k: v for k, v in {"cpus": cpus, "memory": memory, "pids": pids,
                                  "disk": disk}.items() if v is not None}
        self._update(self._http.request("POST", self._path + "/resize", json=body).json())
        return self

    @property
    def network(self) -> dict[str, Any]:
        """Its network policy and, while it runs, its ``address`` (as of the last answer)."""
        return dict(self.raw.get("network") or {})

    def set_network(self, policy: str = "egress", *, allow_cidrs: list[str] | None = None,
                    deny_cidrs: list[str] | None = None,
                    allow_domains: list[str] | None = None,
                    networks: list[str] | None = None) -> Sandbox:
        """A new network policy, in force at once while the sandbox runs (connections it
        already has stay). The whole policy is given each time. Returns self."""
        body: dict[str, Any] = {"policy": policy}
        for key, value in (("allow_cidrs", allow_cidrs), ("deny_cidrs", deny_cidrs),
                           ("allow_domains", allow_domains), ("networks", networks)):
            if value is not None:
                body[key] = list(value)
        self._update(self._http.request("PUT", self._path + "/network", json=body).json())
        return self

    def ports(self) -> list[int]:
        """The TCP ports something listens on in the running sandbox, ascending."""
        answer = self._http.request("GET", self._path + "/ports").json()
        return [p["port"] for p in answer["items"]]

    def preview_url(self, port: int, *, expires_in: int | None = None,
                    by_path: bool = False) -> str:
        """A link that opens ``port`` of the sandbox in a browser without an API key, for
        ``expires_in`` seconds (default a day): ``http://PORT-ID.localhost:7070/?pitbox_token=..``
        (or the ``/v1/sandboxes/ID/ports/PORT/proxy/`` address with ``by_path``)."""
        body = {"expires_in": expires_in} if expires_in is not None else {}
        answer = self._http.request("POST", "%s/ports/%d/preview-url" % (self._path, port),
                                    json=body).json()
        return answer["path_url" if by_path else "url"]

    def revoke_previews(self) -> None:
        """Every preview link made so far stops working, and public ports are private again."""
        self._http.request("DELETE", self._path + "/preview-urls")

    def set_port_public(self, port: int, public: bool = True, *, by_path: bool = False) -> str:
        """Whether anyone may open the preview of ``port``, without a link or an API key;
        returns its address (``http://PORT-ID.localhost:7070/``, or the path one with
        ``by_path``). ``revoke_previews`` makes every port private again."""
        answer = self._http.request("PUT" if public else "DELETE",
                                    "%s/ports/%d/public" % (self._path, port)).json()
        return answer["path_url" if by_path else "url"]

    def snapshot(self, name: str | None = None) -> Snapshot:
        """Captures the sandbox's files now (a running sandbox is frozen for the capture
        only) and returns the snapshot; ``name`` is unique among snapshots (default
        ``<sandbox>-<n>``)."""
        body = {"name": name} if name is not None else {}
        answer = self._http.request("POST", self._path + "/snapshots", json=body)
        return Snapshot.from_api(answer.json())

    def snapshots(self, *, page_size: int = 100) -> Iterator[Snapshot]:
        """This sandbox's snapshots, oldest first (all pages)."""
        return paginate(
            lambda cursor: self._http.request(
                "GET", self._path + "/snapshots",
                query={"limit": page_size, "cursor": cursor}).json(),
            Snapshot.from_api)

    def restore(self, snapshot: Snapshot | str) -> Sandbox:
        """Rolls the sandbox back to one of its snapshots (a :class:`Snapshot`, an id or a
        name): its files become exactly the snapshot's; a running sandbox is restarted for it.
        Returns self."""
        ref = snapshot.id if isinstance(snapshot, Snapshot) else snapshot
        answer = self._http.request("POST", self._path + "/restore", json={"snapshot": ref})
        self._update(answer.json())
        return self

    def fork(self, count: int = 1, *, names: Sequence[str] | None = None,
             labels: Mapping[str, str] | None = None) -> list[Sandbox]:
        """New started sandboxes whose files equal this one's now (it keeps running; it is
        frozen for the capture only): ``count`` of them, or one per name in ``names``, with
        ``labels`` (default: this sandbox's). All are made or none."""
        body: dict[str, Any] = {}
        if names is not None:
            body["names"] = list(names)
            if count != 1:
                body["count"] = count
        else:
            body["count"] = count
        if labels is not None:
            body["labels"] = dict(labels)
        answer = self._http.request("POST", self._path + "/fork", json=body)
        return [Sandbox(self._client, item) for item in answer.json()["items"]]

    @property
    def children(self) -> list[str]:
        """The ids of the sandboxes forked from this one (asks the daemon)."""
        return list(self._http.request("GET", self._path).json().get("children") or [])

    def archive(self) -> Sandbox:
        """Packs a stopped sandbox's files away (state ``archived``); :meth:`start` unpacks
        them again. Returns self."""
        self._update(self._http.request("POST", self._path + "/archive").json())
        return self

    def set_labels(self, labels: Mapping[str, str]) -> Sandbox:
        """Replaces the sandbox's labels; returns self."""
        answer = self._http.request("PUT", self._path + "/labels",
                                    json={"labels": dict(labels)})
        self._update(answer.json())
        return self

    # --- commands

    def exec(self, cmd: Command, *, env: Mapping[str, str] | None = None,
             cwd: str | None = None, user: str | None = None,
             stdin: str | bytes | None = None, timeout: float | None = None,
             max_output: int | None = None, auto_resume: bool = False) -> ExecResult:
        """Runs a command to its end and returns its exit status and output.

        ``cmd`` is a list of arguments, or a string for ``/bin/sh -c``. ``timeout`` (seconds)
        kills the command when it passes (the result then has ``timed_out`` set);
        ``max_output`` is the number of bytes kept of each stream (the API's default is 1 MiB).
        A command that cannot start is an error (:class:`NotFound`, :class:`InvalidArgument`),
        not an exit code. On a paused sandbox it raises :class:`Conflict`, unless
        ``auto_resume`` resumes the sandbox first.
        """
        body = self._exec_body(cmd, env, cwd, user, stdin, timeout, max_output)
        answer = self._http.request("POST", self._path + "/exec",
                                    query={"auto_resume": True} if auto_resume else None,
                                    json=body, timeout=self._wait_timeout(timeout))
        return ExecResult.from_api(answer.json(), _describe(cmd))

    def exec_stream(self, cmd: Command, *, env: Mapping[str, str] | None = None,
                    cwd: str | None = None, user: str | None = None,
                    stdin: str | bytes | None = None, timeout: float | None = None,
                    ) -> Generator[ExecEvent, None, None]:
        """Runs a command and yields its output as it comes: ``stdout`` and ``stderr`` events,
        then one ``exit`` event. The command starts (or fails to) before this returns; leaving
        the iteration early kills it."""
        body = self._exec_body(cmd, env, cwd, user, stdin, timeout, None)
        answer = self._http.request("POST", self._path + "/exec", query={"stream": True},
                                    json=body, timeout=self._wait_timeout(timeout), stream=True)

        def events() -> Generator[ExecEvent, None, None]:
            try:
                for line in answer.iter_lines():
                    if line.strip():
                        yield ExecEvent.from_api(json.loads(line))
            finally:
                answer.close()

        return events()

    def _exec_body(self, cmd: Command, env: Mapping[str, str] | None, cwd: str | None,
                   user: str | None, stdin: str | bytes | None, timeout: float | None,
                   max_output: int | None) -> dict[str, Any]:
        body = _command_body(cmd, env, cwd, user, stdin)
        if timeout is not None:
            body["timeout_ms"] = max(1, math.ceil(timeout * 1000))
        if max_output is not None:
            body["max_output"] = max_output
        return body

    def _wait_timeout(self, timeout: float | None) -> float | None:
        """How long to wait for a command's answer: its own timeout and the client's, or
        without end for a command that has none."""
        if timeout is None or self._http.timeout is None:
            return None
        return timeout + self._http.timeout

    @property
    def sessions(self) -> Sessions:
        """Background commands in this sandbox."""
        return Sessions(self)

    @property
    def files(self) -> Files:
        """The files of this sandbox."""
        return Files(self._http, self._path)


class Sessions:
    """The sessions (background commands) of one sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def start(self, cmd: Command, *, tty: bool = False, env: Mapping[str, str] | None = None,
              cwd: str | None = None, user: str | None = None,
              stdin: str | bytes | None = None) -> Session:
        """Starts a command in the background. ``stdin`` is written to it at once; more can
        be sent with :meth:`Session.send`."""
        body = _command_body(cmd, env, cwd, user, stdin)
        if tty:
            body["tty"] = True
        answer = self._sandbox._http.request("POST", self._sandbox._path + "/sessions",
                                             json=body)
        return Session(self._sandbox, answer.json())

    def list(self, *, page_size: int = 100) -> Iterator[Session]:
        """Every session of the sandbox (all pages)."""
        http, path = self._sandbox._http, self._sandbox._path + "/sessions"
        return paginate(
            lambda cursor: http.request("GET", path,
                                        query={"limit": page_size, "cursor": cursor}).json(),
            lambda item: Session(self._sandbox, item))

    def get(self, session_id: str) -> Session:
        answer = self._sandbox._http.request(
            "GET", self._sandbox._path + "/sessions/" + quote(session_id))
        return Session(self._sandbox, answer.json())


class Session:
    """A command running in the background (or that ran). As a context manager, it deletes
    the session (killing the command if it still runs) on exit."""

    id: str
    command: list[str]
    tty: bool
    state: str
    exit_code: int | None
    signal: int | None
    started_at: str | None
    ended_at: str | None
    raw: dict[str, Any]

    def __init__(self, sandbox: Sandbox, data: dict[str, Any]) -> None:
        self.sandbox = sandbox
        self._update(data)

    def _update(self, data: dict[str, Any]) -> None:
        self.raw = data
        self.id = data["id"]
        self.command = list(data.get("command") or [])
        self.tty = bool(data.get("tty", False))
        self.state = data.get("state", "")
        self.exit_code = data.get("exit_code")
        self.signal = data.get("signal")
        self.started_at = data.get("started_at")
        self.ended_at = data.get("ended_at")

    @property
    def _http(self) -> Transport:
        return self.sandbox._http

    @property
    def _path(self) -> str:
        return self.sandbox._path + "/sessions/" + quote(self.id)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def __repr__(self) -> str:
        return "<Session %s %s %s>" % (self.id, shlex.join(self.command), self.state)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.delete()
        except NotFound:
            pass

    def refresh(self) -> Session:
        self._update(self._http.request("GET", self._path).json())
        return self

    def logs(self, offset: int = 0) -> SessionLogs:
        """The output kept (stdout and stderr together) from byte ``offset`` on."""
        answer = self._http.request("GET", self._path + "/logs", query={"offset": offset})
        return SessionLogs(data=answer.content,
                           next_offset=int(answer.headers.get("X-Pitbox-Next-Offset", "0")),
                           ended=answer.headers.get("X-Pitbox-Session-Ended") == "true")

    def follow(self, offset: int = 0) -> Generator[bytes, None, None]:
        """Yields the output from byte ``offset`` on as it comes, until the session ends."""
        answer = self._http.request("GET", self._path + "/logs",
                                    query={"offset": offset, "follow": True}, timeout=None,
                                    stream=True)

        def chunks() -> Generator[bytes, None, None]:
            try:
                yield from answer.iter_chunks()
            finally:
                answer.close()

        return chunks()

    def send(self, data: str | bytes) -> None:
        """Writes to the command's standard input."""
        if isinstance(data, str):
            body = {"data": data}
        else:
            body = {"data_base64": base64.b64encode(bytes(data)).decode("ascii")}
        self._http.request("POST", self._path + "/input", json=body)

    def eof(self) -> None:
        """Closes the command's standard input."""
        self._http.request("POST", self._path + "/input", json={"eof": True})

    def kill(self, signal: int | str = 15) -> None:
        """Sends a signal (a number, or a name such as ``"KILL"``) to the command's process
        group."""
        self._http.request("POST", self._path + "/kill", json={"signal": signal})

    def wait(self, timeout: float | None = None) -> Session:
        """Waits until the command has exited; returns self, refreshed. Raises TimeoutError
        when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                # Following from far past the end answers nothing until the session ends.
                answer = self._http.request("GET", self._path + "/logs",
                                            query={"offset": 1 << 62, "follow": True},
                                            timeout=left, stream=True)
                try:
                    for _ in answer.iter_chunks():
                        pass
                finally:
                    answer.close()
            except TimeoutError:
                raise TimeoutError("session %s still runs after %s seconds"
                                   % (self.id, timeout)) from None
            self.refresh()
            if not self.running:
                return self
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("session %s still runs after %s seconds" % (self.id, timeout))

    def delete(self) -> None:
        """Forgets the session, killing its command if it still runs."""
        self._http.request("DELETE", self._path)
