"""The inline node's parts: settings, completeness rules, spool bound, TLS."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from pacs import free_port
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from noddi_bids.cli.node import main
from noddi_bids.node.config import ConfigError, NodeConfig, TlsSettings, load_config
from noddi_bids.node.headers import InstanceInfo
from noddi_bids.node.server import Node
from noddi_bids.node.spool import Spool, SpoolFull
from noddi_bids.node.tracker import SeriesTracker


def test_toml_and_yaml_settings(tmp_path):
    toml = tmp_path / "node.toml"
    toml.write_text(
        '[node]\nae_title = "NODDI"\nport = 11113\nallowed_calling_aets = ["ORTHANC"]\n'
        '[spool]\nfolder = "spool"\nmax_gb = 0.5\n[sending]\nretries = 5\n'
        '[[destinations]]\nname = "pacs"\nae_title = "ORTHANC"\nhost = "pacs"\nport = 4242\n'
    )
    config = load_config(toml)
    assert config.port == 11113 and config.allowed_calling_aets == ("ORTHANC",)
    assert config.spool_dir == tmp_path / "spool" and config.spool_max_bytes == 2**29
    assert config.retries == 5 and config.destinations[0].port == 4242
    yaml = tmp_path / "node.yaml"
    yaml.write_text("series:\n  idle_timeout_s: 2.5\nprocessing:\n  model: nn-mle\n")
    config = load_config(yaml)
    assert config.idle_timeout_s == 2.5 and config.model == "nn-mle"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[node]\nport = 70000\n", "node.port must be 1-65535"),
        ("[node]\naet = 'X'\n", "unknown setting node.aet"),
        ("[spool]\nfsync = 'yes'\n", "spool.fsync: invalid value 'yes'"),
        ("[node]\nae_title = 'A_TITLE_FAR_TOO_LONG'\n", "must be 1-16 printable characters"),
        ("[[destinations]]\nname = 'x'\n", "missing keys ['ae_title', 'host', 'port']"),
    ],
)
def test_bad_settings_refused_in_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)
    assert main(["--config", str(path), "--check"]) == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err


def instance(sop, acquisition="1", position=(0.0, 0.0, 0.0), expected=4, series="1.2.3"):
    return InstanceInfo(sop, series, "1.2", True, 1, expected, acquisition, position, (8, 8))


def test_expected_count_ends_a_series_only_across_volumes():
    tracker = SeriesTracker(idle_timeout_s=60)
    # Two slices x two volumes in one acquisition: complete at the fourth instance.
    slices = [(0.0, 0.0, 0.0), (0.0, 0.0, 2.0)]
    done = [tracker.add(instance(str(k), position=slices[k % 2])) for k in range(4)]
    assert done == [False, False, False, True]
    # A vendor announcing each volume as its own acquisition (distinct positions, count = slices)
    # does not end the series after its first volume.
    tracker = SeriesTracker(idle_timeout_s=60)
    first = [
        tracker.add(instance(str(k), position=slices[k], expected=2, series="9")) for k in (0, 1)
    ]
    assert first == [False, False]
    assert not tracker.add(
        instance("2", acquisition="2", position=slices[0], expected=2, series="9")
    )


def test_idle_timeout_and_incomplete_series():
    now = [0.0]
    tracker = SeriesTracker(idle_timeout_s=5, clock=lambda: now[0])
    for k in range(3):
        tracker.add(instance(str(k), position=(0.0, 0.0, float(k % 2))))
    now[0] = 4.9
    assert tracker.due() == []
    now[0] = 5.0
    assert tracker.due() == ["1.2.3"]
    state = tracker.pop("1.2.3")
    assert state.problem() == "incomplete: 3 of 4 instances announced arrived"


def test_spool_bound_evicts_kept_series_then_refuses(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=3000, fsync=False)
    spool.store("1.2.3", "1.2.3.1", b"x" * 1000)
    failed = spool.fail(spool.claim("1.2.3"), {"reason": "test"})
    os.utime(failed, (time.time() - 10, time.time() - 10))
    spool.store("1.2.4", "1.2.4.1", b"y" * 1500)
    spool.store("1.2.4", "1.2.4.2", b"z" * 1400)  # needs the failed series' room
    assert not failed.exists()
    with pytest.raises(SpoolFull):
        spool.store("1.2.4", "1.2.4.3", b"w" * 1000)
    assert sorted(p.name for p in (tmp_path / "spool" / "incoming" / "1.2.4").iterdir()) == [
        "1.2.4.1.dcm",
        "1.2.4.2.dcm",
    ]
    assert not list((tmp_path / "spool" / "tmp").iterdir())


def test_restart_puts_interrupted_series_back(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=10**6, fsync=True)
    spool.store("1.2.3", "1.2.3.1", b"a")
    spool.claim("1.2.3")
    spool.store("1.2.3", "1.2.3.2", b"b")  # arrived while the first part was processed
    restarted = Spool(tmp_path / "spool", max_bytes=10**6)
    assert restarted.resume() == ["1.2.3"]
    assert sorted(p.name for p in (tmp_path / "spool" / "incoming" / "1.2.3").iterdir()) == [
        "1.2.3.1.dcm",
        "1.2.3.2.dcm",
    ]
    assert not list((tmp_path / "spool" / "processing").iterdir())


def test_tls_node_answers_only_over_tls(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key),
         "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = TlsSettings(certificate=cert, key=key)
    config = NodeConfig(host="127.0.0.1", port=free_port(), spool_dir=tmp_path / "spool", tls=tls)
    node = Node(config)
    node.start()
    try:

        def echo(tls_args):
            ae = AE(ae_title="CLIENT")
            ae.add_requested_context(Verification)
            ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 5
            assoc = ae.associate("127.0.0.1", config.port, ae_title="NODDI", tls_args=tls_args)
            ok = assoc.is_established and assoc.send_c_echo().Status == 0
            if assoc.is_established:
                assoc.release()
            return ok

        assert echo((TlsSettings(ca_certificates=cert).client_context(), "localhost"))
        assert not echo(None)
    finally:
        node.stop()
