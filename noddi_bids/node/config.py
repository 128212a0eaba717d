"""Settings of the inline DICOM node, read from a YAML or TOML file (``noddi-bids-node --config``).

Every key has a default, so an empty file (or none) gives a node that listens as ``NODDI`` on
port 11112, accepts any calling AE title, spools to ``./noddi-node-spool`` and sends nowhere.
See ``docs/inline.md`` for a complete example. Unknown keys are refused, so that a typo does not
silently leave a setting at its default.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from noddi_bids.model.noddi import D_PAR
from noddi_bids.model.scheme import B0_THRESHOLD

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: AE titles: 1-16 characters of the default repertoire, no backslash.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


class ConfigError(ValueError):
    """An unusable node configuration (the message names the file and the key)."""


@dataclass(frozen=True)
class TlsSettings:
    """TLS of a connection (the node's server side, or a destination).

    Attributes
    ----------
    certificate, key : Path or None
        PEM certificate chain and private key presented by this side (the server needs both).
    ca_certificates : Path or None
        PEM bundle of the peer certificates to trust. On the server, setting it requires every
        calling node to present a certificate signed by one of them (mutual TLS).
    """

    certificate: Path | None = None
    key: Path | None = None
    ca_certificates: Path | None = None

    def server_context(self) -> ssl.SSLContext:
        """SSL context of the listening node."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.certificate), str(self.key))
        if self.ca_certificates:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(str(self.ca_certificates))
        return context

    def client_context(self) -> ssl.SSLContext:
        """SSL context of a connection to a destination (server certificate verified)."""
        context = ssl.create_default_context(
            cafile=str(self.ca_certificates) if self.ca_certificates else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.certificate:
            context.load_cert_chain(str(self.certificate), str(self.key) if self.key else None)
        return context


@dataclass(frozen=True)
class Destination:
    """A DICOM node the maps are sent to (C-STORE).

    Attributes
    ----------
    name : str
        Label used in logs and in the dead-letter folder (letters, digits, ``-``, ``_``).
    ae_title, host, port
        Called AE title and address of the destination.
    tls : TlsSettings or None
        Connect with TLS.
    """

    name: str
    ae_title: str
    host: str
    port: int
    tls: TlsSettings | None = None


@dataclass(frozen=True)
class NodeConfig:
    """All settings of a node (see ``docs/inline.md`` for each key with its default).

    Attributes
    ----------
    ae_title, host, port
        The node's AE title and listening address.
    allowed_calling_aets : tuple of str
        Calling AE titles accepted at association (empty: any). The node's own AE title is
        always accepted, for the health check.
    tls : TlsSettings or None
        Listen with TLS.
    idle_timeout_s : float
        A series is complete this long after its last instance arrived (seconds), unless the
        expected number of instances from its headers has arrived earlier.
    spool_dir : Path
        Spool folder (incoming instances, work, outgoing maps, failed series, dead letters).
    spool_max_bytes : int
        Size bound of the spool; when full, the oldest kept (failed, done) series are removed,
        then new instances are refused with status 0xA700 (out of resources).
    keep_done : bool
        Keep the instances of processed series in ``done/`` (else removed at once).
    retention_days : float
        Failed, done and dead-letter folders older than this are removed.
    fsync : bool
        Flush every instance to the disk before acknowledging it (survives a power cut, not
        only a crash of the node).
    model : str
        ``auto``, a named network or an ``.onnx`` path (as the app's ``--model``).
    train_missing : bool
        Train (once, cached) a network for shells no shipped or cached network covers.
    d_par : float
        Intra-neurite parallel diffusivity of the network, mm^2/s.
    b0_threshold : float
        b <= this (s/mm^2) counts as b = 0.
    threads : int
        Threads of the network (ONNX Runtime); 0 = all cores.
    workers : int
        Series processed at the same time.
    archive_dir : Path or None
        Also write NIfTI maps and sidecars there, as a BIDS derivative dataset.
    destinations : tuple of Destination
        Where the maps are sent.
    retries : int
        Further attempts after a failed send to a destination.
    retry_delay_s : float
        Wait before the first retry; doubled before each further one.
    send_timeout_s : float
        Connection and response timeout of a send.
    log_format : {"json", "text"}
        Structured (one JSON object a line) or plain log lines.
    """

    ae_title: str = "NODDI"
    host: str = "0.0.0.0"
    port: int = 11112
    allowed_calling_aets: tuple[str, ...] = ()
    tls: TlsSettings | None = None
    idle_timeout_s: float = 5.0
    spool_dir: Path = Path("noddi-node-spool")
    spool_max_bytes: int = 20 * 1024**3
    keep_done: bool = False
    retention_days: float = 7.0
    fsync: bool = True
    model: str = "auto"
    train_missing: bool = True
    d_par: float = D_PAR
    b0_threshold: float = B0_THRESHOLD
    threads: int = 0
    workers: int = 1
    archive_dir: Path | None = None
    destinations: tuple[Destination, ...] = ()
    retries: int = 3
    retry_delay_s: float = 2.0
    send_timeout_s: float = 30.0
    log_format: str = "json"

    def replace(self, **changes: Any) -> NodeConfig:
        """Return a copy with some settings changed."""
        return dataclasses.replace(self, **changes)


#: Sections of the file and the settings they hold (file key -> NodeConfig field).
_SECTIONS: dict[str, dict[str, str]] = {
    "node": {
        "ae_title": "ae_title",
        "host": "host",
        "port": "port",
        "allowed_calling_aets": "allowed_calling_aets",
        "tls": "tls",
        "log_format": "log_format",
    },
    "series": {"idle_timeout_s": "idle_timeout_s"},
    "spool": {
        "folder": "spool_dir",
        "max_gb": "spool_max_bytes",
        "keep_done": "keep_done",
        "retention_days": "retention_days",
        "fsync": "fsync",
    },
    "processing": {
        "model": "model",
        "train_missing": "train_missing",
        "d_par": "d_par",
        "b0_threshold": "b0_threshold",
        "threads": "threads",
        "workers": "workers",
        "archive": "archive_dir",
    },
    "sending": {
        "retries": "retries",
        "retry_delay_s": "retry_delay_s",
        "timeout_s": "send_timeout_s",
    },
}
_DESTINATION_KEYS = {"name", "ae_title", "host", "port", "tls"}
_TLS_KEYS = {"certificate", "key", "ca_certificates"}


def load_config(path: str | os.PathLike[str] | None) -> NodeConfig:
    """Read a node configuration file (``.toml``, ``.yaml`` or ``.yml``).

    Parameters
    ----------
    path : path or None
        The file; None gives the defaults. Relative paths in it are relative to its folder.

    Returns
    -------
    NodeConfig

    Raises
    ------
    ConfigError
        Unreadable file, unknown key or invalid value; the message names the file and key.
    """
    if path is None:
        return validate(NodeConfig(), "defaults")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: expected a .toml, .yaml or .yml file")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the configuration: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected sections ([node], [spool], ...) at the top level")
    return from_mapping(data, path.parent, str(path))


def from_mapping(data: dict[str, Any], base: Path, label: str) -> NodeConfig:
    """Build and validate a configuration from its sections (as read from a file).

    Parameters
    ----------
    data : dict
        Sections ``node``, ``series``, ``spool``, ``processing``, ``sending`` and the list
        ``destinations``.
    base : Path
        Folder relative paths are relative to.
    label : str
        Name of the source in error messages.

    Returns
    -------
    NodeConfig
    """
    values: dict[str, Any] = {}
    for section, content in data.items():
        if section == "destinations":
            values["destinations"] = tuple(
                _destination(item, base, f"{label}: destinations[{i}]")
                for i, item in enumerate(_as_list(content, f"{label}: destinations"))
            )
            continue
        if section not in _SECTIONS:
            raise ConfigError(
                f"{label}: unknown section {section!r}; expected {[*_SECTIONS, 'destinations']}"
            )
        if not isinstance(content, dict):
            raise ConfigError(f"{label}: [{section}] must be a table of settings")
        for key, value in content.items():
            if key not in _SECTIONS[section]:
                raise ConfigError(
                    f"{label}: unknown setting {section}.{key}; expected one of "
                    f"{sorted(_SECTIONS[section])}"
                )
            values[_SECTIONS[section][key]] = _convert(
                _SECTIONS[section][key], value, base, f"{label}: {section}.{key}"
            )
    return validate(NodeConfig(**values), label)


def validate(config: NodeConfig, label: str) -> NodeConfig:
    """Check the values of a configuration; return it unchanged.

    Raises
    ------
    ConfigError
        Naming the first invalid setting.
    """
    for title in (config.ae_title, *config.allowed_calling_aets):
        _check_ae_title(title, label)
    checks = [
        (0 < config.port < 65536, "node.port must be 1-65535"),
        (config.idle_timeout_s > 0, "series.idle_timeout_s must be > 0"),
        (config.spool_max_bytes > 0, "spool.max_gb must be > 0"),
        (config.retention_days > 0, "spool.retention_days must be > 0"),
        (config.workers >= 1, "processing.workers must be >= 1"),
        (config.threads >= 0, "processing.threads must be >= 0"),
        (config.d_par > 0, "processing.d_par must be > 0 (mm^2/s)"),
        (config.retries >= 0, "sending.retries must be >= 0"),
        (config.retry_delay_s >= 0, "sending.retry_delay_s must be >= 0"),
        (config.send_timeout_s > 0, "sending.timeout_s must be > 0"),
        (config.log_format in ("json", "text"), "node.log_format must be 'json' or 'text'"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{label}: {message}")
    names = [d.name for d in config.destinations]
    if len(set(names)) != len(names):
        raise ConfigError(f"{label}: destination names must be unique, got {names}")
    for tls in (config.tls, *(d.tls for d in config.destinations)):
        for path in (tls.certificate, tls.key, tls.ca_certificates) if tls else ():
            if path is not None and not path.is_file():
                raise ConfigError(f"{label}: TLS file {path} does not exist")
    if config.tls and not (config.tls.certificate and config.tls.key):
        raise ConfigError(f"{label}: node.tls needs a certificate and a key")
    return config


def _convert(name: str, value: Any, base: Path, label: str) -> Any:
    expected = {f.name: f.type for f in dataclasses.fields(NodeConfig)}[name]
    if name in ("spool_dir", "archive_dir"):
        return base / Path(str(value)).expanduser()
    if name == "allowed_calling_aets":
        return tuple(str(v) for v in _as_list(value, label))
    if name == "tls":
        return _tls(value, base, label)
    if expected == "bool" or isinstance(value, bool):
        if expected != "bool" or not isinstance(value, bool):
            raise ConfigError(f"{label}: invalid value {value!r} ({expected} expected)")
        return value
    try:
        if name == "spool_max_bytes":
            return int(float(value) * 1024**3)
        if expected == "int":
            if int(value) != value:
                raise ValueError(value)
            return int(value)
        return float(value) if expected == "float" else str(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{label}: invalid value {value!r} ({expected} expected)") from err


def _destination(item: Any, base: Path, label: str) -> Destination:
    if not isinstance(item, dict):
        raise ConfigError(f"{label}: expected a table with {sorted(_DESTINATION_KEYS)}")
    unknown = set(item) - _DESTINATION_KEYS
    missing = {"name", "ae_title", "host", "port"} - set(item)
    if unknown or missing:
        raise ConfigError(
            f"{label}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
        )
    name = str(item["name"])
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise ConfigError(f"{label}: name {name!r} must be letters, digits, - or _")
    _check_ae_title(str(item["ae_title"]), label)
    port = item["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{label}: port must be an integer 1-65535, got {port!r}")
    tls = _tls(item["tls"], base, f"{label}.tls") if item.get("tls") else None
    return Destination(name, str(item["ae_title"]), str(item["host"]), port, tls)


def _tls(value: Any, base: Path, label: str) -> TlsSettings | None:
    if not value:
        return None
    if not isinstance(value, dict) or set(value) - _TLS_KEYS:
        raise ConfigError(f"{label}: expected a table with keys among {sorted(_TLS_KEYS)}")
    return TlsSettings(**{k: base / Path(str(v)).expanduser() for k, v in value.items() if v})


def _as_list(value: Any, label: str) -> list:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ConfigError(f"{label}: expected a list")
    return list(value)


def _check_ae_title(title: str, label: str) -> None:
    if not _AE_TITLE.match(title) or not title.strip():
        raise ConfigError(
            f"{label}: AE title {title!r} must be 1-16 printable characters without backslash"
        )
