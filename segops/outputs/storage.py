"""Where node-written outputs go: a folder (local or shared, e.g. NFS) or an object store URI.

On a cluster, inference actors and training workers run on every node, so what they write
must land where every node (and the driver) can read it: a path all nodes mount, or a
pyarrow.fs URI such as ``s3://bucket/prefix?endpoint_override=host:9000&scheme=http``. A
location is a plain string; a URI keeps its query (endpoint options, never credentials) at the
end when joined. Outputs tables list each object by its :func:`address` (the URI without the
query); :func:`with_options` puts the storage's query back to open one.

Writes are atomic on both: a folder gets temp file + rename; an object store gets the whole
object in one upload from a complete local temp file, so a reader sees the object complete
or not at all.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pyarrow.fs as pafs


def is_uri(location: str | Path) -> bool:
    """``scheme://…`` (an object store); anything else is a filesystem path."""
    return "://" in str(location)


def join(location: str | Path, *parts: str) -> str:
    """``location/part/…``; a URI's query stays at the end."""
    if not is_uri(location):
        return str(Path(location).joinpath(*parts))
    url = urlsplit(str(location))
    path = "/".join([url.path.rstrip("/"), *(p.strip("/") for p in parts)])
    return urlunsplit(url._replace(path=path))


def address(location: str | Path) -> str:
    """What outputs tables list: a URI without its query (``s3://bucket/key.png``), or the path."""
    return urlunsplit(urlsplit(str(location))._replace(query="")) if is_uri(location) else str(location)


def with_options(location: str | Path, base: str | Path | None) -> str:
    """An :func:`address` with the query (endpoint options) of ``base`` put back, to open it."""
    if not is_uri(location) or base is None or "?" in str(location):
        return str(location)
    query = urlsplit(str(base)).query
    return urlunsplit(urlsplit(str(location))._replace(query=query))


def open_storage(location: str) -> tuple[pafs.FileSystem, str]:
    """A local path or a pyarrow.fs URI → (filesystem, path in it); a local folder is created.

    For S3, credentials given in the environment (``AWS_ACCESS_KEY_ID``…) are put into the
    filesystem object, which Ray ships to the training workers: they upload the checkpoints,
    and a worker process need not have the driver's environment.
    """
    if not is_uri(location):
        path = Path(location).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return pafs.LocalFileSystem(), str(path)
    url = urlsplit(location)
    credentials = tuple(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
    return _filesystem(url.scheme, url.netloc, url.query, *credentials), _path_in(location)


@lru_cache(maxsize=16)
def _filesystem(
    scheme: str, netloc: str, query: str, key: str | None, secret: str | None, token: str | None
) -> pafs.FileSystem:
    """One filesystem object per (scheme, bucket, options, credentials): actors write many objects."""
    if scheme == "s3" and key and secret:
        options = {k: v[-1] for k, v in parse_qs(query).items()}
        return pafs.S3FileSystem(
            access_key=key,
            secret_key=secret,
            session_token=token,
            region=options.get("region", os.environ.get("AWS_DEFAULT_REGION", "us-east-1")),
            endpoint_override=options.get("endpoint_override"),
            scheme=options.get("scheme", "https"),
        )
    filesystem, _ = pafs.FileSystem.from_uri(urlunsplit((scheme, netloc, "", query, "")))
    return filesystem


def _path_in(location: str) -> str:
    """The path inside the filesystem: ``bucket/key`` for bucket stores (s3, gs), else the URI path."""
    url = urlsplit(location)
    if url.scheme in ("s3", "gs", "gcs"):
        return f"{url.netloc}{url.path}".rstrip("/")
    return url.path.rstrip("/")


def upload_atomically(location: str, write: Callable[[Path], None]) -> str:
    """``write(tmp)`` into a local temp file, then upload it whole to the URI ``location``;
    returns its :func:`address`."""
    fs, path = open_storage(location)
    fd, tmp = tempfile.mkstemp(prefix=".segops-", suffix=f"-{PurePosixPath(path).name}.tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        data = Path(tmp).read_bytes()
        with fs.open_output_stream(path) as out:  # one upload: the object appears when it completes
            out.write(data)
    finally:
        os.unlink(tmp)
    return address(location)


def read_bytes(location: str | Path) -> bytes:
    """The bytes of a file or object."""
    if not is_uri(location):
        return Path(location).read_bytes()
    fs, path = open_storage(str(location))
    with fs.open_input_stream(path) as f:
        return f.read()


def list_files(location: str | Path, prefix: str = "", suffix: str = "") -> list[str]:
    """Locations of the files directly in the folder ``location`` whose names match; [] if none."""
    if not is_uri(location):
        folder = Path(location)
        names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    else:
        fs, path = open_storage(str(location))
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        names = sorted(PurePosixPath(i.path).name for i in infos if i.type == pafs.FileType.File)
    return [join(location, n) for n in names if n.startswith(prefix) and n.endswith(suffix)]
