"""Where the warehouse's files live: a local directory, or object storage (`s3://…`, `gs://…`) through fsspec.

Every file is first written to a local scratch folder and then put in place whole: on a local root by a rename
within the same file system, on object storage by one PUT of the finished object. Either way a reader sees the
old file or the new one, never a part. DuckDB reads object storage through the same fsspec file system,
registered in each of its databases (`register`), since its own httpfs extension may not be installable.

Object storage is configured the way its client library is: for S3 the standard AWS variables
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` for an S3-compatible
server) or an instance role.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from functools import cache
from pathlib import Path

import duckdb


def is_remote(root: str) -> bool:
    return "://" in root


class LocalStorage:
    """A directory tree on this machine."""

    remote = False

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def glob(self, folder: str, suffix: str) -> list[str]:
        """The files directly in `folder` whose names end with `suffix`, sorted."""
        if not os.path.isdir(folder):
            return []
        return sorted(str(p) for p in Path(folder).glob(f"*{suffix}"))

    def folders(self, path: str) -> list[str]:
        """The names of the folders directly under `path`."""
        if not os.path.isdir(path):
            return []
        return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())

    def remove(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def put(self, local_file: str, target: str) -> None:
        """Make a finished local file `target`, replacing it atomically."""
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(local_file, target)

    def get(self, path: str, local_file: str) -> None:
        shutil.copyfile(path, local_file)

    def scratch(self, folder: str) -> str:
        """A local folder for files that will be put into `folder`: the folder itself (a rename stays atomic)."""
        os.makedirs(folder, exist_ok=True)
        return folder

    def register(self, con: duckdb.DuckDBPyConnection) -> None:
        """Nothing to do: DuckDB reads local files itself."""


class ObjectStorage:
    """A bucket of an object store, through an fsspec file system."""

    remote = True

    def __init__(self, protocol: str):
        import fsspec

        self.protocol = protocol
        # other processes write the same prefixes: a cached listing would hide their objects
        self.fs = fsspec.filesystem(protocol, use_listings_cache=False, skip_instance_cache=True)
        self._lock = threading.Lock()

    def _url(self, key: str) -> str:
        return key if "://" in key else f"{self.protocol}://{key}"

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def glob(self, folder: str, suffix: str) -> list[str]:
        return sorted(self._url(key) for key in self.fs.glob(f"{folder.rstrip('/')}/*{suffix}"))

    def folders(self, path: str) -> list[str]:
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        return sorted(os.path.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory")

    def remove(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    def put(self, local_file: str, target: str) -> None:
        """Upload a finished local file as the object `target` (one PUT), then drop the local file."""
        self.fs.put_file(local_file, target)
        os.remove(local_file)

    def get(self, path: str, local_file: str) -> None:
        self.fs.get_file(path, local_file)

    def scratch(self, folder: str) -> str:
        """A local folder for the files of `folder` before they are uploaded."""
        local = os.path.join(SCRATCH_ROOT, folder.split("://", 1)[-1])
        os.makedirs(local, exist_ok=True)
        return local

    def register(self, con: duckdb.DuckDBPyConnection) -> None:
        """Let DuckDB read and write `<protocol>://` paths through this file system (once per database)."""
        with self._lock:
            if not con.filesystem_is_registered(self.protocol):
                con.register_filesystem(self.fs)


SCRATCH_ROOT = os.path.join(tempfile.gettempdir(), "recopipeline-scratch")


@cache
def storage_for(root: str) -> LocalStorage | ObjectStorage:
    """The storage of a warehouse root (one per process and protocol)."""
    return ObjectStorage(root.split("://", 1)[0]) if is_remote(root) else LOCAL


LOCAL = LocalStorage()

