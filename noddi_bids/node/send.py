"""Sending the maps: C-STORE to each destination, with retries and a dead-letter folder.

A job is a folder ``outgoing/<job>/`` holding the map series and one marker file
``pending-<destination>`` per destination not yet served. One thread per destination sends its
jobs in order. A failed send is retried ``retries`` times, the wait doubling from
``retry_delay_s``; after the last failure the job's files are copied to
``dead-letter/<destination>/<job>/`` with ``reason.json``, and the node moves on. A job folder is
removed when no marker is left. Markers are files, so a restarted node resumes every job.

Every connection sets TCP_NODELAY: without it Nagle's algorithm and delayed ACKs cost about
50 ms per image (see ``docs/inline.md``).
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import socket
import threading
import time
from pathlib import Path

from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, evt

from noddi_bids.node.config import Destination, NodeConfig
from noddi_bids.node.spool import Spool, folder_size

LOGGER = logging.getLogger(__name__)

#: SOP classes of the map series.
SENT_SOP_CLASSES = (MRImageStorage, SecondaryCaptureImageStorage)
_MARKER = "pending-"


class SendError(RuntimeError):
    """A destination did not take every instance."""


def set_nodelay(event: evt.Event) -> None:
    """``EVT_CONN_OPEN`` handler: disable Nagle's algorithm on the association's socket."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def store_files(
    files: list[Path], destination: Destination, calling_aet: str, timeout_s: float
) -> int:
    """Send files to a destination over one association.

    Parameters
    ----------
    files : list of Path
        DICOM files (MR or Secondary Capture).
    destination : Destination
        Called AE title, address and TLS.
    calling_aet : str
        This node's AE title.
    timeout_s : float
        Connection, association and response timeout.

    Returns
    -------
    int
        Instances stored.

    Raises
    ------
    SendError
        No association, or an instance not stored (status other than success or warning).
    """
    ae = AE(ae_title=calling_aet)
    for sop_class in SENT_SOP_CLASSES:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    tls = (destination.tls.client_context(), destination.host) if destination.tls else None
    assoc = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        tls_args=tls,
        evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)],
    )
    if not assoc.is_established:
        raise SendError(
            f"no association with {destination.ae_title}@{destination.host}:{destination.port}"
        )
    try:
        for path in files:
            status = assoc.send_c_store(path)
            code = getattr(status, "Status", None)
            if code is None or not (code == 0 or 0xB000 <= code <= 0xBFFF):
                raise SendError(
                    f"{destination.name} refused {path.name} (status "
                    f"{'none' if code is None else hex(code)})"
                )
    finally:
        if assoc.is_established:
            assoc.release()
    return len(files)


class Outbox:
    """Jobs waiting to be sent, one worker thread per destination.

    Parameters
    ----------
    config : NodeConfig
        Destinations, retries, timeouts and the node's AE title.
    spool : Spool
        Where ``outgoing/`` and ``dead-letter/`` are.
    """

    def __init__(self, config: NodeConfig, spool: Spool) -> None:
        self.config = config
        self.spool = spool
        self._queues: dict[str, queue.Queue] = {d.name: queue.Queue() for d in config.destinations}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.sent_at: dict[tuple[str, str], float] = {}

    def start(self) -> None:
        """Start the destination threads and queue the jobs left by an earlier run."""
        for destination in self.config.destinations:
            thread = threading.Thread(
                target=self._run, args=(destination,), name=f"send-{destination.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        for job in sorted(self.spool.path("outgoing").iterdir()):
            markers = list(job.glob(f"{_MARKER}*")) if job.is_dir() else []
            for marker in markers:
                name = marker.name.removeprefix(_MARKER)
                if name in self._queues:
                    self._queues[name].put(job)
                else:  # destination removed from the configuration
                    self._dead_letter(job, name, "destination no longer configured")
            if job.is_dir() and not markers:
                self.spool.remove(job)

    def stop(self) -> None:
        """Ask the threads to stop after their current attempt."""
        self._stop.set()
        for q in self._queues.values():
            q.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def submit(self, job: Path, info: dict) -> None:
        """Queue a written job folder for every destination (info goes to ``job.json``)."""
        (job / "job.json").write_text(json.dumps(info, indent=2) + "\n", "utf-8")
        if not self._queues:
            LOGGER.warning(
                "no destination configured; maps kept in %s",
                job,
                extra={"event": "no_destination", "job": job.name},
            )
            return
        for name in self._queues:
            (job / f"{_MARKER}{name}").touch()
        for q in self._queues.values():
            q.put(job)

    def pending(self) -> int:
        """Jobs waiting, over all destinations."""
        return sum(q.qsize() for q in self._queues.values())

    def _run(self, destination: Destination) -> None:
        q = self._queues[destination.name]
        while not self._stop.is_set():
            job = q.get()
            if job is None:
                return
            self._send_job(job, destination)

    def _send_job(self, job: Path, destination: Destination) -> None:
        files = sorted(job.glob("*/*.dcm"))
        info = json.loads((job / "job.json").read_text("utf-8"))
        delay = self.config.retry_delay_s
        error = ""
        for attempt in range(self.config.retries + 1):
            start = time.perf_counter()
            try:
                count = store_files(
                    files, destination, self.config.ae_title, self.config.send_timeout_s
                )
            except (SendError, OSError, RuntimeError, ValueError) as err:
                error = str(err)
                LOGGER.warning(
                    "send of %s to %s failed (attempt %d of %d): %s",
                    job.name,
                    destination.name,
                    attempt + 1,
                    self.config.retries + 1,
                    error,
                    extra={
                        "event": "send_failed",
                        "job": job.name,
                        "destination": destination.name,
                        "attempt": attempt + 1,
                    },
                )
                if attempt < self.config.retries and not self._stop.wait(delay):
                    delay *= 2
                    continue
                if self._stop.is_set():
                    return  # the marker stays: resumed at the next start
                break
            now = time.time()
            latency = now - info["last_arrival"] if "last_arrival" in info else None
            LOGGER.info(
                "sent %d instances of series %s to %s",
                count,
                info.get("series_uid"),
                destination.name,
                extra={
                    "event": "series_sent",
                    "series_uid": info.get("series_uid"),
                    "destination": destination.name,
                    "instances": count,
                    "send_s": round(time.perf_counter() - start, 4),
                    "latency_s": None if latency is None else round(latency, 4),
                },
            )
            self.sent_at[(info.get("series_uid", ""), destination.name)] = now
            self._done(job, destination.name)
            return
        self._dead_letter(job, destination.name, error)

    def _dead_letter(self, job: Path, name: str, error: str) -> None:
        target = self.spool.path("dead-letter") / name / job.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(
            job, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(f"{_MARKER}*")
        )
        reason = {"destination": name, "error": error, "time": time.time()}
        (target / "reason.json").write_text(json.dumps(reason, indent=2) + "\n", "utf-8")
        self.spool.count(folder_size(target))
        LOGGER.error(
            "gave up sending %s to %s; kept in %s",
            job.name,
            name,
            target,
            extra={"event": "dead_letter", "job": job.name, "destination": name},
        )
        self._done(job, name)

    def _done(self, job: Path, name: str) -> None:
        with self._lock:
            (job / f"{_MARKER}{name}").unlink(missing_ok=True)
            if not any(job.glob(f"{_MARKER}*")):
                self.spool.remove(job)
