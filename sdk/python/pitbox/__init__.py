"""The Python SDK of pitbox, a self-hosted sandbox platform for AI agents.

    from pitbox import Pitbox

    pb = Pitbox()  # $PITBOX_API_URL and $PITBOX_API_KEY, or the local daemon's admin key
    with pb.create(name="demo") as box:
        print(box.exec("echo hello").stdout)
"""

from ._transport import __version__
from .builder import ImageBuilder
from .client import DEFAULT_URL, Keys, Pitbox, Snapshots
from .errors import (
    BuildError,
    CommandError,
    Conflict,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PitboxConnectionError,
    PitboxError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from .files import Files
from .images import Images
from .models import (
    AuditEntry,
    Build,
    CreatedKey,
    ExecEvent,
    ExecResult,
    FileEntry,
    FindMatch,
    GrepMatch,
    Health,
    Image,
    ImageConfig,
    Snapshot,
    ImageLayer,
    Key,
    MatchList,
    PrunedImages,
    RemovedImages,
    SessionLogs,
    TarExtracted,
)
from .sandbox import Command, Sandbox, Session, Sessions

__all__ = [
    "__version__",
    "DEFAULT_URL",
    "Pitbox",
    "Keys",
    "Snapshots",
    "Snapshot",
    "Sandbox",
    "Sessions",
    "Session",
    "Command",
    "Files",
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
    "Images",
    "Image",
    "ImageConfig",
    "ImageLayer",
    "RemovedImages",
    "PrunedImages",
    "Build",
    "ImageBuilder",
    "PitboxError",
    "InvalidArgument",
    "Unauthenticated",
    "PermissionDenied",
    "NotFound",
    "Conflict",
    "ResourceExhausted",
    "Internal",
    "Unavailable",
    "PitboxConnectionError",
    "CommandError",
    "BuildError",
]
