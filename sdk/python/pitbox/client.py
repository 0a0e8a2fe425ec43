"""The client: sandboxes, images, keys, the audit log and health."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from ._transport import QueryValue, Transport
from .images import Images
from .models import AuditEntry, CreatedKey, Health, Image, Key, Snapshot
from .sandbox import Sandbox, paginate, quote

__all__ = ["Pitbox", "Keys", "DEFAULT_URL"]

DEFAULT_URL = "http://127.0.0.1:7070"
DEFAULT_STATE = "/var/lib/pitbox"


def _admin_key() -> str | None:
    """The admin key of the local daemon, when this user may read it (as the CLI does)."""
    state = os.environ.get("PITBOX_STATE") or DEFAULT_STATE
    path = os.path.join(state, "keys", "admin.key")
    try:
        with open(path, encoding="utf-8") as f:
            key = f.read().strip()
    except OSError:
        return None
    return key or None


class Pitbox:
    """A client of one pitbox daemon.

    ``url`` defaults to ``$PITBOX_API_URL``, else ``http://127.0.0.1:7070``; ``api_key`` to
    ``$PITBOX_API_KEY``, else the admin key in ``$PITBOX_STATE/keys/admin.key`` (by default
    ``/var/lib/pitbox``) when it is readable; ``api_key=""`` sends no key. ``timeout`` (seconds, None for none) bounds each
    call; commands are waited for as long as they run (plus ``timeout`` past their own
    timeout). Connections are kept open and reused; :meth:`close` (or ``with``) closes them.
    The client may be shared by threads.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 timeout: float | None = 60.0) -> None:
        url = url or os.environ.get("PITBOX_API_URL") or DEFAULT_URL
        if api_key is None:
            api_key = os.environ.get("PITBOX_API_KEY") or _admin_key()
        self._transport = Transport(url, api_key, timeout)
        self.keys = Keys(self._transport)
        """API keys (admin key only)."""
        self.images = Images(self._transport)
        self.snapshots = Snapshots(self._transport)
        """Images, and builds of new ones."""

    @property
    def url(self) -> str:
        return self._transport.url

    @property
    def timeout(self) -> float | None:
        return self._transport.timeout

    def __repr__(self) -> str:
        return "<Pitbox %s>" % self.url

    def close(self) -> None:
        """Closes the kept connections (a later call opens a new one)."""
        self._transport.close()

    def __enter__(self) -> Pitbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- sandboxes

    def create(self, image: str | Image = "host", name: str | None = None,
               labels: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None,
               cpus: float | None = None, memory: int | str | None = None,
               pids: int | None = None, workdir: str | None = None, user: str | None = None,
               auto_stop_minutes: float | None = None,
               auto_delete_minutes: float | None = None, ephemeral: bool = False, *,
               disk: int | str | None = None, runtime: str | None = None,
               snapshot: Snapshot | str | None = None,
               auto_archive_minutes: float | None = None,
               network: str | Mapping[str, Any] | None = None) -> Sandbox:
        """Creates a sandbox and returns it once it is ready to run commands.

        ``image`` is a name (``"host"``, ``"busybox"``, ``"myimage:1"``), an id, or an
        :class:`Image` (exactly that image, by its id). ``memory`` and ``disk`` are bytes or
        size strings such as ``"512m"``; ``cpus`` may be fractional. ``auto_stop_minutes``
        stops the sandbox after that long without activity, ``auto_delete_minutes`` deletes
        it that long after it stopped, and an ``ephemeral`` sandbox is deleted when it stops.
        ``snapshot`` (a :class:`Snapshot`, id or name) starts the sandbox with that
        snapshot's files on its image, instead of ``image``. ``auto_archive_minutes`` archives
        it that long after it stopped. ``network`` is its policy: ``"egress"``, ``"none"``,
        or a mapping with ``policy``, ``allow_cidrs``, ``deny_cidrs`` and ``allow_domains``
        (default: the server's; see docs/networking.md).
        """
        body: dict[str, Any] = {}
        if snapshot is not None:
            body["snapshot"] = snapshot.id if isinstance(snapshot, Snapshot) else snapshot
        else:
            body["image"] = image.id if isinstance(image, Image) else image
        optional: dict[str, Any] = {
            "name": name, "labels": None if labels is None else dict(labels),
            "env": None if env is None else dict(env), "cpus": cpus, "memory": memory,
            "pids": pids, "disk": disk, "workdir": workdir, "user": user, "runtime": runtime,
            "auto_stop_minutes": auto_stop_minutes, "auto_delete_minutes": auto_delete_minutes,
            "auto_archive_minutes": auto_archive_minutes,
            "network": network if network is None or isinstance(network, str) else dict(network)}
        body.update({k: v for k, v in optional.items() if v is not None})
        if ephemeral:
            body["ephemeral"] = True
        return Sandbox(self, self._transport.request("POST", "/v1/sandboxes", json=body).json())

    def get(self, id_or_name: str) -> Sandbox:
        """The sandbox with this id or name; :class:`NotFound` if there is none."""
        answer = self._transport.request("GET", "/v1/sandboxes/" + quote(id_or_name))
        return Sandbox(self, answer.json())

    def list(self, labels: Mapping[str, str] | None = None, state: str | None = None, *,
             page_size: int = 100) -> Iterator[Sandbox]:
        """Every sandbox (all pages) that has all of ``labels`` and, if given, is in
        ``state``."""
        selectors = ["%s=%s" % (k, v) for k, v in (labels or {}).items()]
        return paginate(
            lambda cursor: self._transport.request(
                "GET", "/v1/sandboxes",
                query={"label": selectors, "state": state, "limit": page_size,
                       "cursor": cursor}).json(),
            lambda item: Sandbox(self, item))

    # --- the rest

    def audit(self, limit: int | None = None, *, page_size: int = 100) -> Iterator[AuditEntry]:
        """The audit log, newest first: all of it, or its ``limit`` newest entries (admin key
        only)."""
        size = page_size if limit is None else max(1, min(page_size, limit))
        entries = paginate(
            lambda cursor: self._transport.request(
                "GET", "/v1/audit", query={"limit": size, "cursor": cursor}).json(),
            AuditEntry.from_api)
        if limit is None:
            return entries

        count = limit

        def first() -> Iterator[AuditEntry]:
            for n, entry in enumerate(entries):
                if n >= count:
                    return
                yield entry

        return first()

    def health(self) -> Health:
        """The daemon's status and version (needs no key)."""
        return Health.from_api(self._transport.request("GET", "/v1/health").json())

    def request(self, method: str, path: str, *, query: Mapping[str, QueryValue] | None = None,
                json: Any = None) -> Any:
        """A call the SDK has no method for: ``path`` such as ``"/v1/sandboxes"``, ``json``
        the body. Returns the decoded JSON answer (None when it is empty); errors are raised
        as for every other call."""
        return self._transport.request(method, path, query=query, json=json).json()

    def openapi(self) -> dict[str, Any]:
        """The API's OpenAPI 3 document."""
        spec: dict[str, Any] = self._transport.request("GET", "/v1/openapi.json").json()
        return spec

    def metrics(self) -> str:
        """The Prometheus metrics, as text."""
        return self._transport.request("GET", "/metrics").content.decode("utf-8")


class Snapshots:
    """Snapshots of sandboxes' files (``pb.snapshots``); :meth:`Sandbox.snapshot` makes
    them."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def list(self, sandbox: str | None = None, *, page_size: int = 100) -> Iterator[Snapshot]:
        """Every snapshot (all pages), oldest first; only those of ``sandbox`` (id or name)
        when given."""
        return paginate(
            lambda cursor: self._transport.request(
                "GET", "/v1/snapshots",
                query={"sandbox": sandbox, "limit": page_size, "cursor": cursor}).json(),
            Snapshot.from_api)

    def get(self, ref: str) -> Snapshot:
        """The snapshot with this id or name; :class:`NotFound` if there is none."""
        return Snapshot.from_api(
            self._transport.request("GET", "/v1/snapshots/" + quote(ref)).json())

    def delete(self, snapshot: Snapshot | str) -> None:
        """Deletes a snapshot (sandboxes made from it keep their files)."""
        ref = snapshot.id if isinstance(snapshot, Snapshot) else snapshot
        self._transport.request("DELETE", "/v1/snapshots/" + quote(ref))


class Keys:
    """API keys: made, listed and revoked with the admin key."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def create(self, name: str) -> CreatedKey:
        """A new (non-admin) key; its ``key`` is the secret, shown only this once."""
        answer = self._transport.request("POST", "/v1/keys", json={"name": name})
        return CreatedKey.from_api(answer.json())

    def list(self, *, page_size: int = 100) -> Iterator[Key]:
        """Every key (all pages), never the secrets."""
        return paginate(
            lambda cursor: self._transport.request(
                "GET", "/v1/keys", query={"limit": page_size, "cursor": cursor}).json(),
            Key.from_api)

    def delete(self, key: str | Key) -> None:
        """Revokes a key (by id, or a :class:`Key`); it stops working at once."""
        key_id = key.id if isinstance(key, Key) else key
        self._transport.request("DELETE", "/v1/keys/" + quote(key_id))
