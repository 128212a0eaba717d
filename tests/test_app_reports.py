"""The CLI writes participant reports after the derivatives, the group report after the tables."""

from __future__ import annotations

from html.parser import HTMLParser

from conftest import make_bids_dataset

from noddi_bids.cli.run import main


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images = 0
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.images += tag == "img" or tag == "svg"
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])


def test_cli_writes_participant_and_group_reports(tmp_path, model_cache):
    phantom = make_bids_dataset(tmp_path / "bids")
    out, work = tmp_path / "out", tmp_path / "work"
    assert main([str(phantom.root), str(out), "participant", "-w", str(work)]) == 0
    report = (out / "sub-01.html").read_text()
    tags = _Tags()
    tags.feed(report)
    assert tags.images >= 3
    assert "NN_MLE" in report or "nnmle" in report
    assert f"noddi-bids {phantom.root} {out} participant" in report
    for tissue in ("WM", "GM", "CSF"):
        assert tissue in report
    assert main([str(phantom.root), str(out), "group"]) == 0
    group = _Tags()
    group.feed((out / "group_report.html").read_text())
    assert "sub-01.html" in group.links
