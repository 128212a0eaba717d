"""A throw-away single-node SLURM cluster on localhost, for tests of Nipype's SLURM plugin.

Starts a private ``munged`` (own key, socket and PID file), writes a minimal ``slurm.conf`` in a
temporary folder (free ports, no cgroups, no accounting) and starts ``slurmctld`` and ``slurmd`` in
the foreground as children of this process, so they are stopped by their PIDs and never clash
with another cluster on the same machine. Client commands (``sbatch``, ``squeue``, ``srun``) find
the cluster through the ``SLURM_CONF`` variable that :attr:`LocalSlurmCluster.env` provides.

Needs root and Debian's ``slurm-wlm`` and ``munge`` packages (``apt-get install slurm-wlm munge``).
Usage::

    with LocalSlurmCluster(tmp_dir) as cluster:
        subprocess.run(["srun", "hostname"], env=cluster.env, check=True)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = {
    "munged": "/usr/sbin/munged",
    "slurmctld": "/usr/sbin/slurmctld",
    "slurmd": "/usr/sbin/slurmd",
}
CLIENTS = ("sinfo", "squeue", "sbatch", "srun", "mungekey")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot run here (missing packages, not root, or the daemons failed to start)."""


def why_unavailable() -> str | None:
    """Return why a local cluster cannot be started here, or None if it can be tried."""
    if os.name != "posix" or os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    missing = [name for name, path in DAEMONS.items() if not Path(path).is_file()]
    missing += [name for name in CLIENTS if shutil.which(name) is None]
    if missing:
        return (
            f"missing {', '.join(missing)}: install Debian's SLURM with "
            "'apt-get install -y slurm-wlm munge'"
        )
    return None


class LocalSlurmCluster:
    """Single-node SLURM cluster (munged + slurmctld + slurmd) living in ``root``.

    Parameters
    ----------
    root : path
        An empty or new folder for keys, configuration, state, spool and logs.
    partition : str
        Name of the (default) partition.
    timeout : float
        Seconds to wait for the node to become idle.
    """

    def __init__(self, root: str | os.PathLike, partition: str = "noddi", timeout: float = 60.0):
        self.root = Path(root)
        self.partition = partition
        self.timeout = timeout
        self.hostname = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self._procs: dict[str, subprocess.Popen] = {}
        self.start_seconds: float | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands: ``os.environ`` plus ``SLURM_CONF``."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def __enter__(self) -> LocalSlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start munged, slurmctld and slurmd; raise :class:`SlurmUnavailable` on failure."""
        reason = why_unavailable()
        if reason:
            raise SlurmUnavailable(reason)
        began = time.monotonic()
        try:
            self._start_munge()
            self._write_conf()
            for daemon in ("slurmctld", "slurmd"):
                log = (self.root / "log" / f"{daemon}.stderr").open("wb")
                self._procs[daemon] = subprocess.Popen(
                    [DAEMONS[daemon], "-D", "-f", str(self.conf)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,
                )
                log.close()
            self._wait_idle()
        except BaseException as err:
            logs = self.log_tail()
            self.stop()
            if isinstance(err, SlurmUnavailable):
                raise SlurmUnavailable(f"{err}\n{logs}") from err
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop the daemons this object started (by PID), newest first, and wait for them."""
        for name in reversed(list(self._procs)):
            proc = self._procs.pop(name)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)

    def log_tail(self, lines: int = 15) -> str:
        """Last lines of every daemon log, for error messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*")) if (self.root / "log").is_dir() else []:
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a client command (e.g. ``"srun", "hostname"``) against this cluster."""
        return subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout, check=True
        )

    # -- internals -------------------------------------------------------------------------
    def _start_munge(self) -> None:
        munge_dir = self.munge_socket.parent
        (self.root / "log").mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        munge_dir.mkdir(mode=0o711, exist_ok=True)
        munge_dir.chmod(0o711)
        key = munge_dir / "munge.key"
        subprocess.run(
            ["mungekey", "--create", "--force", f"--keyfile={key}"],
            check=True,
            capture_output=True,
        )
        key.chmod(0o400)
        stderr = (self.root / "log" / "munged.stderr").open("wb")
        self._procs["munged"] = subprocess.Popen(
            [
                DAEMONS["munged"],
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        stderr.close()
        deadline = time.monotonic() + 15
        while not self.munge_socket.exists():
            if self._procs["munged"].poll() is not None or time.monotonic() > deadline:
                raise SlurmUnavailable("munged did not start")
            time.sleep(0.05)

    def _write_conf(self) -> None:
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(exist_ok=True)
        ctld_port, slurmd_port = _free_ports(2)
        cpus = os.cpu_count() or 1
        memory_mb = max(256, int(_mem_total_mb() * 0.8))
        host = self.hostname
        lines = [
            "ClusterName=noddilocal",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "CredType=cred/munge",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "MpiDefault=none",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.timeout
        state = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited with status {proc.returncode}")
            probe = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%t"],
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            )
            state = probe.stdout.strip()
            if probe.returncode == 0 and state == "idle":
                return
            time.sleep(0.2)
        raise SlurmUnavailable(f"node not idle after {self.timeout:.0f} s (state {state!r})")


def _free_ports(count: int) -> list[int]:
    """Return ``count`` TCP ports that were free on localhost a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _mem_total_mb() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    return 1024.0
