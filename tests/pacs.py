"""A throw-away Orthanc PACS and dcmtk's storescu, for the tests of the inline DICOM node.

:class:`LocalOrthanc` runs Debian's ``/usr/sbin/Orthanc`` in the foreground on free ports, with
its storage, index and configuration in a temporary folder, local access only and no plugins;
it is stopped by its PID. :func:`storescu` sends files with dcmtk's ``storescu`` (found on
``PATH``, skipping pynetdicom's Python script of the same name). Both set ``TCP_NODELAY=1``:
without it every image waits ~50 ms for a delayed ACK (``docs/inline.md``).

Needs ``apt-get install orthanc dcmtk``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ORTHANC = Path("/usr/sbin/Orthanc")
NODELAY_ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dcmtk_tool(name: str) -> Path | None:
    """The first ``name`` on PATH that is a compiled program (dcmtk), not a Python script."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            with open(path, "rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    return path
    return None


def why_unavailable() -> str | None:
    """Return why Orthanc and storescu cannot be used here, or None."""
    missing = [] if ORTHANC.is_file() else ["Orthanc (/usr/sbin/Orthanc)"]
    missing += [] if dcmtk_tool("storescu") else ["dcmtk's storescu"]
    if missing:
        return f"missing {', '.join(missing)}: apt-get install -y orthanc dcmtk"
    return None


def storescu(
    paths: list[Path] | Path, port: int, called: str, calling: str = "STORESCU"
) -> subprocess.CompletedProcess:
    """Send files (or a folder, recursively) to 127.0.0.1:port with dcmtk's storescu."""
    items = [paths] if isinstance(paths, Path) else list(paths)
    command = [str(dcmtk_tool("storescu")), "-aet", calling, "-aec", called, "+sd", "+r", "-nh"]
    command += ["127.0.0.1", str(port), *map(str, items)]
    return subprocess.run(command, capture_output=True, text=True, env=NODELAY_ENV, check=False)


class LocalOrthanc:
    """An Orthanc server in ``root`` (see the module docstring).

    Parameters
    ----------
    root : Path
        Folder for its configuration, storage, index and log.
    ae_title : str
        Its AE title.
    """

    def __init__(self, root: Path, ae_title: str = "ORTHANC") -> None:
        self.root = Path(root)
        self.ae_title = ae_title
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LocalOrthanc:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Write the configuration, start Orthanc and wait for its REST API (10 s at most)."""
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "noddi-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "DicomModalities": {},
            "StableAge": 1,
            "DicomCheckCalledAet": False,
        }
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        log = open(self.root / "orthanc.log", "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [str(ORTHANC), str(path)], stdout=log, stderr=subprocess.STDOUT, env=NODELAY_ENV
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not start; see {self.root / 'orthanc.log'}")

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def request(self, method: str, path: str, body: object | None = None) -> bytes:
        """Call the REST API; returns the response body."""
        data = None if body is None else json.dumps(body).encode()
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(
            urllib.request.Request(url, data, method=method), timeout=60
        ) as r:
            return r.read()

    def get(self, path: str):
        """GET a JSON resource."""
        return json.loads(self.request("GET", path))

    def series(self) -> list[dict]:
        """Every series stored, with its main DICOM tags."""
        return self.get("/series?expand")

    def series_by_uid(self, series_uid: str) -> dict | None:
        """The stored series with this SeriesInstanceUID (None if not there)."""
        return next(
            (s for s in self.series() if s["MainDicomTags"]["SeriesInstanceUID"] == series_uid),
            None,
        )

    def instance_files(self, series_id: str) -> list[bytes]:
        """The DICOM files of a stored series (Orthanc identifier)."""
        return [
            self.request("GET", f"/instances/{item['ID']}/file")
            for item in self.get(f"/series/{series_id}/instances")
        ]

    def add_modality(self, name: str, ae_title: str, port: int) -> None:
        """Register a DICOM destination on 127.0.0.1."""
        self.request(
            "PUT", f"/modalities/{name}", {"AET": ae_title, "Host": "127.0.0.1", "Port": port}
        )

    def send(self, modality: str, resource_ids: list[str]) -> dict:
        """C-STORE resources (study, series or instance IDs) to a modality, synchronously."""
        return json.loads(
            self.request(
                "POST",
                f"/modalities/{modality}/store",
                {"Resources": resource_ids, "Synchronous": True},
            )
        )

    def upload(self, folder: Path) -> list[str]:
        """Store the files of a folder through the REST API; returns the series identifiers."""
        series = set()
        for path in sorted(folder.iterdir()):
            url = f"http://127.0.0.1:{self.http_port}/instances"
            request = urllib.request.Request(url, path.read_bytes(), method="POST")
            with urllib.request.urlopen(request, timeout=60) as response:
                series.add(json.loads(response.read())["ParentSeries"])
        return sorted(series)

    def clear(self) -> None:
        """Delete every patient."""
        for patient in self.get("/patients"):
            self.request("DELETE", f"/patients/{patient}")


def wait_for(condition, timeout: float, interval: float = 0.1):
    """Poll ``condition()`` until it returns something true; return it (None on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None
