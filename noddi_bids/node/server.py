"""The node: a Storage SCP that turns each complete diffusion series into NODDI map series.

Threads: pynetdicom's (one per association) store instances into the spool and track them;
a watcher schedules series whose idle timeout passed and does the spool's clean-up; workers
process scheduled series (:func:`~noddi_bids.node.process.process_series`); the outbox sends
the maps. A series is moved out of ``incoming/`` when it is scheduled, so late instances start
a new series and never change one being processed.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from noddi_bids.node.config import NodeConfig
from noddi_bids.node.headers import ACCEPTED_SOP_CLASSES, InstanceError, inspect_instance
from noddi_bids.node.process import Estimators, ProcessingError, process_series
from noddi_bids.node.send import Outbox, set_nodelay
from noddi_bids.node.spool import Spool, SpoolFull, folder_size
from noddi_bids.node.tracker import SeriesState, SeriesTracker

LOGGER = logging.getLogger(__name__)

#: C-STORE statuses: success, refused (out of resources), cannot understand.
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
#: Seconds between two looks for series past their idle timeout.
WATCH_INTERVAL_S = 0.1
#: Seconds between two clean-ups of the spool and updates of the health file.
MAINTENANCE_INTERVAL_S = 5.0
#: Name of the health file in the spool.
HEALTH_FILE = "health.json"
#: Transfer syntaxes accepted: the uncompressed ones and the common lossless compressions.
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    "1.2.840.10008.1.2.4.70",  # JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.5",  # RLE lossless
]

Deliver = Callable[[SeriesState, Path, dict], None]


class Node:
    """A DICOM node computing NODDI maps (see the module docstring).

    Parameters
    ----------
    config : NodeConfig
        Its settings.
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.spool = Spool(
            config.spool_dir,
            config.spool_max_bytes,
            fsync=config.fsync,
            retention_days=config.retention_days,
            keep_done=config.keep_done,
        )
        self.tracker = SeriesTracker(config.idle_timeout_s)
        self.outbox = Outbox(config, self.spool)
        self.estimators = Estimators(config)
        self.counts = {"processed": 0, "failed": 0, "ignored": 0}
        self._ready: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = None

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Resume the spool, start the workers, the outbox and the listening server."""
        self._resume()
        self.outbox.start()
        for index in range(self.config.workers):
            self._spawn(self._work, f"worker-{index}", self._deliver_to_outbox)
        self._spawn(self._watch, "watcher")
        ae = AE(ae_title=self.config.ae_title)
        for sop_class in ACCEPTED_SOP_CLASSES:
            ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        if self.config.allowed_calling_aets:
            ae.require_calling_aet = sorted(
                {*self.config.allowed_calling_aets, self.config.ae_title}
            )
        ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
        handlers = [
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_REJECTED, _log_rejection),
        ]
        context = self.config.tls.server_context() if self.config.tls else None
        self._server = ae.start_server(
            (self.config.host, self.config.port),
            block=False,
            evt_handlers=handlers,
            ssl_context=context,
        )
        self.write_health()
        LOGGER.info(
            "listening as %s on %s:%d",
            self.config.ae_title,
            self.config.host,
            self.config.port,
            extra={
                "event": "node_started",
                "ae_title": self.config.ae_title,
                "port": self.config.port,
                "tls": context is not None,
                "destinations": [d.name for d in self.config.destinations],
            },
        )

    def stop(self) -> None:
        """Stop listening, let the current series finish, stop the threads."""
        if self._server is not None:
            self._server.shutdown()
        self._stop.set()
        for _ in self._threads:
            self._ready.put(None)
        for thread in self._threads:
            thread.join(timeout=60)
        self.outbox.stop()
        LOGGER.info("stopped", extra={"event": "node_stopped"})

    def request_stop(self) -> None:
        """Make :meth:`wait` return (safe in a signal handler)."""
        self._stop.set()

    def wait(self) -> None:
        """Block until :meth:`request_stop` is called (by a signal handler)."""
        self._stop.wait()

    # -- receiving ------------------------------------------------------------------------
    def handle_store(self, event: evt.Event) -> int:
        """``EVT_C_STORE``: check, spool, track; acknowledge only once on disk."""
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            info = inspect_instance(ds)
        except (InstanceError, InvalidDicomError, ValueError, EOFError) as err:
            what = f"an instance from {event.assoc.requestor.ae_title}"
            self.refuse(_series_uid_of(event), what, str(err))
            return CANNOT_UNDERSTAND
        return self.ingest(info, event.encoded_dataset())

    def refuse(self, series_uid: str, what: str, reason: str) -> None:
        """Count a refused instance against its series (when known) and log it."""
        if series_uid:
            self.tracker.refuse(series_uid)
        LOGGER.warning(
            "refused %s of series %s: %s",
            what,
            series_uid or "(unknown)",
            reason,
            extra={"event": "instance_refused", "series_uid": series_uid},
        )

    def ingest(self, info, data: bytes) -> int:
        """Spool one checked instance and track it; returns the C-STORE status."""
        try:
            self.spool.store(info.series_uid, info.sop_uid, data)
        except (SpoolFull, OSError) as err:
            LOGGER.error(
                "cannot spool an instance of series %s: %s",
                info.series_uid,
                err,
                extra={"event": "spool_refused", "series_uid": info.series_uid},
            )
            return OUT_OF_RESOURCES
        if self.tracker.add(info):
            self._schedule(info.series_uid, "expected count reached")
        return SUCCESS

    def ingest_file(self, path: Path, folder: Path) -> None:
        """Check, spool and track one file of a folder (``--once``); non-DICOM files skipped."""
        name = path.relative_to(folder)
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError) as err:
            series_uid = _readable_series_uid(path)
            if not series_uid:
                LOGGER.info("skipped %s: not a DICOM file (%s)", name, err)
                return
            self.refuse(series_uid, str(name), f"truncated or malformed DICOM ({err})")
            return
        try:
            info = inspect_instance(ds)
        except InstanceError as err:
            self.refuse(_valid_uid(ds.get("SeriesInstanceUID", "")), str(name), str(err))
            return
        self.ingest(info, path.read_bytes())

    def _resume(self) -> None:
        for series_uid in self.spool.resume():
            files = sorted((self.spool.path("incoming") / series_uid).glob("*.dcm"))
            for path in files:
                try:
                    complete = self.tracker.add(inspect_instance(pydicom.dcmread(path)))
                except (InstanceError, InvalidDicomError, OSError) as err:
                    LOGGER.warning("unreadable spooled file %s: %s", path.name, err)
                    self.tracker.refuse(series_uid)
                    complete = False
            LOGGER.info(
                "resumed series %s (%d instances spooled)",
                series_uid,
                len(files),
                extra={
                    "event": "series_resumed",
                    "series_uid": series_uid,
                    "instances": len(files),
                },
            )
            if complete:
                self._schedule(series_uid, "expected count reached")

    # -- scheduling and processing --------------------------------------------------------
    def _schedule(self, series_uid: str, reason: str) -> None:
        state = self.tracker.pop(series_uid)
        if state is None:
            return
        folder = self.spool.claim(series_uid)
        self._ready.put((state, folder, reason, time.time()))

    def _watch(self) -> None:
        last_maintenance = 0.0
        while not self._stop.wait(WATCH_INTERVAL_S):
            for series_uid in self.tracker.due():
                self._schedule(series_uid, "idle timeout")
            if time.monotonic() - last_maintenance >= MAINTENANCE_INTERVAL_S:
                last_maintenance = time.monotonic()
                self.spool.expire()
                self.write_health()

    def _work(self, deliver: Deliver) -> None:
        while True:
            item = self._ready.get()
            if item is None:
                return
            self.handle_series(*item, deliver=deliver)

    def handle_series(
        self,
        state: SeriesState,
        folder: Path | None,
        reason: str,
        scheduled: float,
        deliver: Deliver,
    ) -> str | None:
        """Process one complete series: ignore, keep as failed, or compute and deliver maps.

        Returns
        -------
        str or None
            Why the series gave no maps; None when maps were delivered or the series was
            rightly ignored.
        """
        uid = state.series_uid
        base = {"series_uid": uid, "instances": len(state.instances), "trigger": reason}
        if folder is None:  # nothing stored: every instance was refused, or already claimed
            problem = state.problem()
            if problem is not None:
                LOGGER.error(
                    "series %s: no maps: %s",
                    uid,
                    problem,
                    extra={"event": "series_failed", **base, "reason": problem},
                )
                self.counts["failed"] += 1
            return problem
        if not state.diffusion:
            LOGGER.info(
                "series %s ignored: not diffusion-weighted",
                uid,
                extra={"event": "series_ignored", **base},
            )
            self.spool.remove(folder)
            self.counts["ignored"] += 1
            return None
        problem = state.problem()
        if problem is None:
            try:
                self._compute(state, folder, base, scheduled, deliver)
                return None
            except ProcessingError as err:
                problem = str(err)
            except Exception as err:  # noqa: BLE001 - the node must outlive any series
                LOGGER.exception("series %s: unexpected error", uid)
                problem = f"unexpected error ({type(err).__name__}: {err})"
        kept = self.spool.fail(folder, {**base, "reason": problem, "time": time.time()})
        LOGGER.error(
            "series %s: no maps: %s (instances kept in %s)",
            uid,
            problem,
            kept,
            extra={"event": "series_failed", **base, "reason": problem},
        )
        self.counts["failed"] += 1
        return problem

    def process_all(self, deliver: Deliver) -> list[tuple[SeriesState, str | None]]:
        """Schedule every tracked series and process them here, one after the other.

        Returns
        -------
        list of (SeriesState, str or None)
            Each series with the reason it gave no maps (None: maps delivered or ignored).
        """
        for series_uid in self.tracker.uids():
            self._schedule(series_uid, "folder read")
        outcomes = []
        while not self._ready.empty():
            state, folder, reason, scheduled = self._ready.get()
            outcomes.append((state, self.handle_series(state, folder, reason, scheduled, deliver)))
        return outcomes

    def _compute(
        self, state: SeriesState, folder: Path, base: dict, scheduled: float, deliver: Deliver
    ) -> None:
        work = self.spool.path("work") / folder.name
        maps_dir = self.spool.path("work") / f"{folder.name}-maps"
        queued_s = time.time() - scheduled
        start = time.perf_counter()
        try:
            result = process_series(folder, work, maps_dir, self.config, self.estimators)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        info = {
            **base,
            "last_arrival": time.time() - (time.monotonic() - state.last_arrival),
            "series": [p.name for p in result.out_dirs],
            "timings": result.timings,
            "voxels": result.voxels,
            "scheme": result.scheme,
            "model": result.model,
            "queued_s": round(queued_s, 4),
            "process_s": round(time.perf_counter() - start, 4),
        }
        deliver(state, maps_dir, info)
        self.spool.finish(folder)
        self.counts["processed"] += 1
        LOGGER.info(
            "series %s: maps written (%d voxels)",
            state.series_uid,
            result.voxels,
            extra={"event": "series_processed", **info},
        )

    def _deliver_to_outbox(self, state: SeriesState, maps_dir: Path, info: dict) -> None:
        job = self.spool.path("outgoing") / maps_dir.name.removesuffix("-maps")
        maps_dir.rename(job)
        self.spool.count(folder_size(job))
        self.outbox.submit(job, info)

    def _spawn(self, target, name: str, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- health ---------------------------------------------------------------------------
    def health(self) -> dict:
        """Return the node's state: queues, spool use, counts."""
        return {
            "time": time.time(),
            "pid": os.getpid(),
            "ae_title": self.config.ae_title,
            "port": self.config.port,
            "pending_series": self.tracker.pending(),
            "queued_series": self._ready.qsize(),
            "outgoing_jobs": self.outbox.pending(),
            "spool_bytes": self.spool.used_bytes,
            "spool_max_bytes": self.spool.max_bytes,
            **self.counts,
        }

    def write_health(self) -> None:
        """Write :meth:`health` to ``<spool>/health.json`` (atomically)."""
        path = self.spool.root / HEALTH_FILE
        temporary = path.with_name(f".{HEALTH_FILE}.tmp")
        temporary.write_text(json.dumps(self.health()) + "\n", "utf-8")
        os.replace(temporary, path)


def run_once(folder: Path, out_dir: Path, config: NodeConfig) -> int:
    """Process every series of a folder of DICOM files, without networking.

    Files are read recursively; those that are not DICOM are skipped. Each diffusion series
    gives ``<out_dir>/<SeriesInstanceUID>/{odi,ndi,fwf,direction}/`` (and the archive when
    configured); a series that gives no maps gets ``<out_dir>/failed/<SeriesInstanceUID>.json``
    with the reason.

    Parameters
    ----------
    folder : Path
        The DICOM files.
    out_dir : Path
        Output folder (created).
    config : NodeConfig
        Processing settings (the network ones are not used).

    Returns
    -------
    int
        0 when every diffusion series gave maps, 1 otherwise (or when there was none).
    """
    out_dir.mkdir(parents=True, exist_ok=True)

    def deliver(state: SeriesState, maps_dir: Path, info: dict) -> None:
        target = out_dir / state.series_uid
        shutil.rmtree(target, ignore_errors=True)
        maps_dir.rename(target)
        (target / "job.json").write_text(json.dumps(info, indent=2) + "\n", "utf-8")

    with tempfile.TemporaryDirectory(prefix=".noddi-once-", dir=out_dir) as scratch:
        node = Node(config.replace(spool_dir=Path(scratch), fsync=False, destinations=()))
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            node.ingest_file(path, folder)
        outcomes = node.process_all(deliver)
    for state, problem in outcomes:
        if problem is not None:
            record = {"series_uid": state.series_uid, "reason": problem}
            (out_dir / "failed").mkdir(exist_ok=True)
            (out_dir / "failed" / f"{state.series_uid}.json").write_text(json.dumps(record))
    diffusion = [problem for state, problem in outcomes if state.diffusion]
    if not diffusion:
        LOGGER.error("no diffusion series in %s", folder, extra={"event": "nothing_found"})
    return 0 if diffusion and all(problem is None for problem in diffusion) else 1


def _readable_series_uid(path: Path) -> str:
    """Return the SeriesInstanceUID of a DICOM file whose data cannot all be read ("" if none)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return _valid_uid(ds.get("SeriesInstanceUID", ""))
    except Exception:  # noqa: BLE001 - not DICOM at all
        return ""


def _valid_uid(value: object) -> str:
    value = str(value or "")
    return value if len(value) <= 64 and value.replace(".", "").isdigit() else ""


def _series_uid_of(event: evt.Event) -> str:
    """Return the SeriesInstanceUID of a refused instance, if readable (else "")."""
    try:
        return _valid_uid(event.dataset.get("SeriesInstanceUID", ""))
    except Exception:  # noqa: BLE001 - an undecodable dataset has no readable UID
        return ""


def _log_rejection(event: evt.Event) -> None:
    LOGGER.warning(
        "association from %s rejected",
        event.assoc.requestor.ae_title,
        extra={
            "event": "association_rejected",
            "calling_aet": event.assoc.requestor.ae_title,
            "address": event.assoc.requestor.address,
        },
    )
