"""The node's spool: every received instance is on disk before its C-STORE is acknowledged.

Layout under the spool folder::

    incoming/<SeriesInstanceUID>/<SOPInstanceUID>.dcm   series still arriving
    processing/<SeriesInstanceUID>-<stamp>/             a series being processed
    work/                                               temporary conversion outputs
    outgoing/<job>/                                     maps waiting to be sent
    failed/<SeriesInstanceUID>-<stamp>/reason.json      series that gave no maps, kept
    done/<SeriesInstanceUID>-<stamp>/                   processed series (``keep_done``)
    dead-letter/<destination>/<job>/reason.json         maps a destination never took

An instance is written to ``tmp/`` (flushed to the disk with ``fsync`` when configured) and
renamed into its series folder, so a crash leaves either the whole file or none. On start,
series found in ``processing/`` (interrupted) go back to ``incoming/`` and every series in
``incoming/`` is tracked again: a restart resumes them.

Clean-up: processed series are removed (or kept in ``done/``); ``failed/``, ``done/`` and
``dead-letter/`` entries older than the retention are removed; when an instance would take the
spool over its size bound, the oldest ``done/`` then ``failed/`` entries are removed first, and
if that is not enough the instance is refused (the sender keeps it and retries).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)

#: Sub-folders of the spool.
FOLDERS = ("incoming", "processing", "work", "outgoing", "failed", "done", "dead-letter", "tmp")
#: Folders whose entries may be evicted when the spool is full, oldest first, in this order.
EVICTABLE = ("done", "failed")
#: Folders whose entries expire after the retention time.
EXPIRING = ("done", "failed", "dead-letter")


class SpoolFull(RuntimeError):
    """The spool is at its size bound even after eviction."""


def folder_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 if it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


class Spool:
    """The spool folder of one node (thread-safe).

    Parameters
    ----------
    root : Path
        Spool folder (created).
    max_bytes : int
        Size bound.
    fsync : bool
        Flush each instance to the disk before it counts as stored.
    retention_days : float
        Age after which ``failed/``, ``done/`` and ``dead-letter/`` entries are removed.
    keep_done : bool
        Move processed series to ``done/`` instead of removing them.
    """

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        *,
        fsync: bool = True,
        retention_days: float = 7.0,
        keep_done: bool = False,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.fsync = fsync
        self.retention_s = retention_days * 86400.0
        self.keep_done = keep_done
        self._lock = threading.Lock()
        for name in FOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        for stale in (self.root / "tmp").iterdir():  # never acknowledged
            stale.unlink(missing_ok=True)
        shutil.rmtree(self.root / "work", ignore_errors=True)
        (self.root / "work").mkdir()
        self.used_bytes = folder_size(self.root)

    def path(self, name: str) -> Path:
        """Return a sub-folder of the spool (one of :data:`FOLDERS`)."""
        return self.root / name

    # -- receiving ------------------------------------------------------------------------
    def store(self, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Write one instance durably into its series folder.

        Parameters
        ----------
        series_uid, sop_uid : str
            Validated UIDs (folder and file names).
        data : bytes
            The instance in the DICOM file format.

        Returns
        -------
        Path
            The stored file (an earlier copy of the same instance is replaced).

        Raises
        ------
        SpoolFull
            When the spool cannot take ``len(data)`` more bytes.
        """
        self.reserve(len(data))
        temporary = self.root / "tmp" / f"{uuid.uuid4().hex}.dcm"
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                if self.fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            with self._lock:
                folder = self.root / "incoming" / series_uid
                folder.mkdir(exist_ok=True)
                target = folder / f"{sop_uid}.dcm"
                replaced = target.stat().st_size if target.exists() else 0
                os.replace(temporary, target)
                self.used_bytes -= replaced
            if self.fsync:
                _fsync_folder(folder)
            return target
        except BaseException:
            temporary.unlink(missing_ok=True)
            self.release(len(data))
            raise

    def reserve(self, n_bytes: int) -> None:
        """Count ``n_bytes`` more, evicting old kept series if needed.

        Raises
        ------
        SpoolFull
            If the bound would still be exceeded.
        """
        with self._lock:
            if self.used_bytes + n_bytes > self.max_bytes:
                self._evict(self.used_bytes + n_bytes - self.max_bytes)
            if self.used_bytes + n_bytes > self.max_bytes:
                raise SpoolFull(
                    f"spool {self.root} is full ({self.used_bytes} of {self.max_bytes} bytes)"
                )
            self.used_bytes += n_bytes

    def count(self, n_bytes: int) -> None:
        """Count ``n_bytes`` written by the node itself (maps, dead letters), without a bound."""
        with self._lock:
            self.used_bytes += n_bytes

    def release(self, n_bytes: int) -> None:
        """Stop counting ``n_bytes`` (removed files)."""
        with self._lock:
            self.used_bytes = max(self.used_bytes - n_bytes, 0)

    # -- series life cycle ----------------------------------------------------------------
    def claim(self, series_uid: str) -> Path | None:
        """Move a series from ``incoming/`` to ``processing/``.

        Instances arriving later start a new incoming series. Returns the processing folder
        (None if nothing is there).
        """
        with self._lock:
            source = self.root / "incoming" / series_uid
            if not source.is_dir():
                return None
            target = self.root / "processing" / f"{series_uid}-{_stamp()}"
            source.rename(target)
            return target

    def resume(self) -> list[str]:
        """Put interrupted series back in ``incoming/``; return every incoming series UID."""
        with self._lock:
            for folder in sorted((self.root / "processing").iterdir()):
                series_uid = folder.name.rsplit("-", 1)[0]
                target = self.root / "incoming" / series_uid
                target.mkdir(exist_ok=True)
                for item in folder.iterdir():
                    os.replace(item, target / item.name)
                folder.rmdir()
            return sorted(p.name for p in (self.root / "incoming").iterdir() if p.is_dir())

    def fail(self, folder: Path, reason: dict[str, Any]) -> Path:
        """Keep a series that gave no maps in ``failed/``, with ``reason.json``."""
        target = self.root / "failed" / folder.name
        with self._lock:
            folder.rename(target)
        (target / "reason.json").write_text(json.dumps(reason, indent=2) + "\n", "utf-8")
        return target

    def finish(self, folder: Path) -> None:
        """Remove a processed series, or keep it in ``done/``."""
        if self.keep_done:
            with self._lock:
                folder.rename(self.root / "done" / folder.name)
            return
        self.remove(folder)

    def remove(self, path: Path) -> None:
        """Delete a file or folder of the spool and stop counting its bytes."""
        size = folder_size(path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        self.release(size)

    # -- clean-up ---------------------------------------------------------------------------
    def expire(self, now: float | None = None) -> list[Path]:
        """Remove ``failed/``, ``done/`` and ``dead-letter/`` entries older than the retention."""
        limit = (time.time() if now is None else now) - self.retention_s
        removed = []
        for entry in self._kept(EXPIRING):
            if entry.stat().st_mtime < limit:
                self.remove(entry)
                removed.append(entry)
        return removed

    def recount(self) -> int:
        """Measure the spool again (corrects the running count); returns the bytes used."""
        size = folder_size(self.root)
        with self._lock:
            self.used_bytes = size
        return size

    def _kept(self, folders: tuple[str, ...]) -> list[Path]:
        entries = []
        for name in folders:
            base = self.root / name
            children = [c for c in base.iterdir()] if base.is_dir() else []
            if name == "dead-letter":  # dead-letter/<destination>/<job>
                children = [job for c in children if c.is_dir() for job in c.iterdir()]
            entries += children
        return entries

    def _evict(self, n_bytes: int) -> None:
        """Remove the oldest done/, then failed/ entries until ``n_bytes`` are free (locked)."""
        freed = 0
        for name in EVICTABLE:
            entries = sorted(self._kept((name,)), key=lambda p: p.stat().st_mtime)
            for entry in entries:
                if freed >= n_bytes:
                    return
                size = folder_size(entry)
                shutil.rmtree(entry, ignore_errors=True)
                self.used_bytes -= size
                freed += size
                LOGGER.warning(
                    "spool full: removed %s/%s to make room",
                    name,
                    entry.name,
                    extra={"event": "spool_evicted", "entry": f"{name}/{entry.name}"},
                )


def _stamp() -> str:
    return f"{time.time_ns()}"


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to the disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
