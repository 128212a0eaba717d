"""When is a series complete? DICOM has no "series complete" message, so the node decides.

A series (grouped by SeriesInstanceUID) is complete

* as soon as the number of instances its headers announce has arrived: for an Enhanced MR
  instance, the instance itself (or every instance of its concatenation); for classic MR,
  ImagesInAcquisition (0020,1002), trusted only when every instance so far has the same value
  and the same AcquisitionNumber, and slice positions repeat (so the acquisition spans several
  volumes: a vendor that numbers each volume as its own acquisition cannot end the series
  after its first volume);
* otherwise when no instance has arrived for the idle timeout.

A series that reached its idle timeout with fewer instances than announced, or whose slice
positions do not all hold the same number of images, is *incomplete*.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from noddi_bids.node.headers import InstanceInfo


@dataclass
class SeriesState:
    """What the node knows of a series still arriving.

    Attributes
    ----------
    series_uid : str
    instances : set of str
        SOP Instance UIDs received (a resent instance counts once).
    diffusion : bool
        Some instance carries diffusion attributes.
    expected : set
        The announced counts seen (see the module docstring).
    acquisitions : set of str
        AcquisitionNumbers seen.
    positions : Counter
        Instances per slice position (classic MR).
    geometries : set
        Image geometries seen (two mean two acquisitions mixed in one series).
    refused : int
        Instances of the series refused as malformed.
    first_arrival, last_arrival : float
        Monotonic clock times.
    """

    series_uid: str
    instances: set[str] = field(default_factory=set)
    diffusion: bool = False
    expected: set[int | None] = field(default_factory=set)
    acquisitions: set[str] = field(default_factory=set)
    positions: Counter = field(default_factory=Counter)
    geometries: set[tuple] = field(default_factory=set)
    frames: int = 0
    refused: int = 0
    first_arrival: float = 0.0
    last_arrival: float = 0.0

    @property
    def announced(self) -> int | None:
        """The trusted expected number of instances, or None (see the module docstring)."""
        if len(self.expected) != 1 or len(self.acquisitions) > 1:
            return None
        (count,) = self.expected
        if count is None:
            return None
        repeated = not self.positions or len(self.positions) < sum(self.positions.values())
        return count if repeated else None

    def problem(self) -> str | None:
        """Why the series cannot give maps (None when nothing is known to be wrong)."""
        if self.refused:
            return f"{self.refused} instance(s) were refused as malformed"
        if len(self.geometries) > 1:
            return (
                f"the series mixes {len(self.geometries)} acquisitions (different image sizes, "
                "spacings or orientations)"
            )
        count = next(iter(self.expected)) if len(self.expected) == 1 else None
        if count is not None and len(self.acquisitions) <= 1 and len(self.instances) < count:
            return f"incomplete: {len(self.instances)} of {count} instances announced arrived"
        if len(set(self.positions.values())) > 1:
            low, high = min(self.positions.values()), max(self.positions.values())
            return (
                f"incomplete: slice positions hold between {low} and {high} images (volumes "
                "missing slices)"
            )
        return None


class SeriesTracker:
    """Thread-safe bookkeeping of the series still arriving.

    Parameters
    ----------
    idle_timeout_s : float
        Seconds without a new instance after which a series is complete.
    clock : callable
        Monotonic clock (seconds); replaceable in tests.
    """

    def __init__(self, idle_timeout_s: float, clock=time.monotonic) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self._series: dict[str, SeriesState] = {}
        self._lock = threading.Lock()

    def add(self, info: InstanceInfo) -> bool:
        """Record a stored instance; True when its series just reached its announced count."""
        with self._lock:
            state = self._state(info.series_uid)
            new = info.sop_uid not in state.instances
            state.instances.add(info.sop_uid)
            state.diffusion |= info.diffusion
            state.expected.add(info.expected)
            state.acquisitions.add(info.acquisition)
            state.geometries.add(info.geometry)
            if info.position and new:
                state.positions[info.position] += 1
            state.frames += info.frames if new else 0
            announced = state.announced
            return announced is not None and len(state.instances) >= announced

    def refuse(self, series_uid: str) -> None:
        """Record an instance of the series refused as malformed."""
        with self._lock:
            self._state(series_uid).refused += 1

    def due(self) -> list[str]:
        """Series whose idle timeout has passed."""
        now = self.clock()
        with self._lock:
            return [
                uid
                for uid, state in self._series.items()
                if now - state.last_arrival >= self.idle_timeout_s
            ]

    def pop(self, series_uid: str) -> SeriesState | None:
        """Stop tracking a series (it is being processed); returns its state."""
        with self._lock:
            return self._series.pop(series_uid, None)

    def uids(self) -> list[str]:
        """Return the series still arriving."""
        with self._lock:
            return list(self._series)

    def pending(self) -> int:
        """Return the number of series still arriving."""
        with self._lock:
            return len(self._series)

    def _state(self, series_uid: str) -> SeriesState:
        now = self.clock()
        state = self._series.get(series_uid)
        if state is None:
            state = self._series[series_uid] = SeriesState(series_uid, first_arrival=now)
        state.last_arrival = now
        return state
