"""Command line ``noddi-bids-node``: the inline DICOM node (see ``docs/inline.md``).

Usage::

    noddi-bids-node --config node.toml                 # run as a service
    noddi-bids-node --config node.toml --once DIR --out OUT   # a folder, no networking
    noddi-bids-node --config node.toml --check         # health check (exit 0 = healthy)
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from noddi_bids import __version__
from noddi_bids.cli.parser import HelpFormatter

LOGGER = logging.getLogger("noddi_bids.node")

#: Exit codes: success, unhealthy or series without maps, bad configuration or usage.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 64
#: The health file is stale after this many seconds (the node rewrites it every 5 s).
HEALTH_MAX_AGE_S = 30.0


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``noddi-bids-node``."""
    parser = argparse.ArgumentParser(
        prog="noddi-bids-node",
        description=(
            "A DICOM node that receives diffusion series (C-STORE), computes NODDI maps (ODI, "
            "NDI, FWF, fibre direction) and sends them back as new series of the same study."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"noddi-bids {__version__}")
    parser.add_argument(
        "--config", type=Path, help="settings file (.toml, .yaml); default: built-in defaults"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--once",
        type=Path,
        metavar="DIR",
        help="process the DICOM files of DIR (every series) without networking, then exit",
    )
    mode.add_argument(
        "--check",
        action="store_true",
        help="health check of a running node: C-ECHO to it and a fresh health file",
    )
    parser.add_argument("--out", type=Path, help="output folder of --once (required with it)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``noddi-bids-node``."""
    from noddi_bids.node.config import ConfigError, load_config
    from noddi_bids.node.logs import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.once is not None and args.out is None:
        parser.error("--once needs --out")
    try:
        config = load_config(args.config)
    except ConfigError as err:
        sys.stderr.write(f"noddi-bids-node: {err}\n")
        return EXIT_USAGE
    setup_logging(config.log_format, args.verbose)
    if args.check:
        return check(config)
    if args.once is not None:
        from noddi_bids.node.server import run_once

        if not args.once.is_dir():
            sys.stderr.write(f"noddi-bids-node: --once {args.once}: no such folder\n")
            return EXIT_USAGE
        return run_once(args.once, args.out, config)
    return serve(config)


def serve(config) -> int:
    """Run the node until SIGTERM or SIGINT."""
    from noddi_bids.node.server import Node

    try:
        node = Node(config)
        node.start()
    except OSError as err:
        LOGGER.error("cannot start the node: %s", err, extra={"event": "start_failed"})
        return EXIT_FAILED

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        node.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    node.wait()
    node.stop()
    return EXIT_OK


def check(config) -> int:
    """Health check: C-ECHO to the node and a health file younger than 30 s.

    Prints one JSON line with the result and the node's health file; exit 0 when healthy.
    """
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from noddi_bids.node.server import HEALTH_FILE

    ae = AE(ae_title=config.ae_title)
    ae.add_requested_context(Verification)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    host = "127.0.0.1" if config.host in ("0.0.0.0", "") else config.host
    tls = None
    if config.tls:
        from noddi_bids.node.config import TlsSettings

        trust = TlsSettings(
            certificate=config.tls.certificate if config.tls.ca_certificates else None,
            key=config.tls.key if config.tls.ca_certificates else None,
            ca_certificates=config.tls.ca_certificates or config.tls.certificate,
        )
        context = trust.client_context()
        context.check_hostname = False
        tls = (context, host)
    assoc = ae.associate(host, config.port, ae_title=config.ae_title, tls_args=tls)
    echo = False
    if assoc.is_established:
        status = assoc.send_c_echo()
        echo = getattr(status, "Status", None) == 0
        assoc.release()
    health_path = config.spool_dir / HEALTH_FILE
    try:
        health = json.loads(health_path.read_text("utf-8"))
        fresh = time.time() - float(health["time"]) < HEALTH_MAX_AGE_S
    except (OSError, ValueError, KeyError):
        health, fresh = None, False
    healthy = echo and fresh
    report = {"healthy": healthy, "echo": echo, "health_file_fresh": fresh, "node": health}
    sys.stdout.write(json.dumps(report) + "\n")
    return EXIT_OK if healthy else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
