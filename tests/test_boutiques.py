"""The Boutiques descriptor ``noddi-bids.json`` is valid and describes the real command line."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest

import noddi_bids
from noddi_bids.cli.parser import build_parser
from noddi_bids.config import AppError

NO_BOUTIQUES = "boutiques not installed (pip install boutiques)"
DESCRIPTOR = Path(__file__).resolve().parents[1] / "noddi-bids.json"


@pytest.fixture(scope="module")
def descriptor() -> dict:
    return json.loads(DESCRIPTOR.read_text())


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    skip = (argparse._HelpAction, argparse._VersionAction)
    return [a for a in parser._actions if not isinstance(a, skip)]


def test_bosh_validate():
    bosh = pytest.importorskip("boutiques", reason=NO_BOUTIQUES)
    bosh.bosh(["validate", str(DESCRIPTOR)])  # raises DescriptorValidationError if invalid


def test_tool_version_and_command(descriptor):
    assert descriptor["tool-version"] == noddi_bids.__version__
    assert descriptor["command-line"].split()[0] == "noddi-bids"
    keys = {item["value-key"] for item in descriptor["inputs"]}
    assert keys == set(descriptor["command-line"].split()[1:])


def test_every_parser_option_is_described_and_nothing_else(descriptor, parser):
    by_flag = {i["command-line-flag"]: i for i in descriptor["inputs"] if "command-line-flag" in i}
    by_id = {i["id"]: i for i in descriptor["inputs"]}
    described = set()
    for action in _actions(parser):
        if not action.option_strings:  # positional: bids_dir, output_dir, analysis_level
            item = by_id.get(action.dest)
            assert item is not None and "command-line-flag" not in item, action.dest
            assert not item.get("optional", False), action.dest
        else:
            flags = [f for f in action.option_strings if f in by_flag]
            assert len(flags) == 1, f"{action.option_strings} not described (once) in {DESCRIPTOR}"
            item = by_flag[flags[0]]
            _check_type(action, item)
        described.add(item["id"])
    assert described == set(by_id), f"described but not in the parser: {set(by_id) - described}"


def _check_type(action: argparse.Action, item: dict) -> None:
    name = item["id"]
    if isinstance(action, argparse._StoreTrueAction | argparse._CountAction):
        assert item["type"] == "Flag", name
        return
    assert item["type"] != "Flag", name
    assert bool(item.get("list")) == (action.nargs in ("+", "*")), name
    if action.type is int:
        assert item["type"] == "Number" and item.get("integer"), name
    elif action.type is float:
        assert item["type"] == "Number" and not item.get("integer"), name
    if action.default is not None:
        assert item.get("default-value") == pytest.approx(action.default), name
    else:
        assert "default-value" not in item, name
    if action.choices:
        assert sorted(item["value-choices"]) == sorted(action.choices), name


def test_mutually_exclusive_groups(descriptor, parser):
    groups = {
        frozenset(g["members"]) for g in descriptor.get("groups", []) if g.get("mutually-exclusive")
    }
    by_flag = {
        i["command-line-flag"]: i["id"] for i in descriptor["inputs"] if "command-line-flag" in i
    }
    for group in parser._mutually_exclusive_groups:
        ids = {by_flag[f] for a in group._group_actions for f in a.option_strings if f in by_flag}
        assert frozenset(ids) in groups


def test_error_codes_match_the_app(descriptor):
    codes = set()
    stack = [AppError]
    while stack:
        cls = stack.pop()
        codes.add(cls.exit_code)
        stack.extend(cls.__subclasses__())
    assert {e["code"] for e in descriptor["error-codes"]} == codes


def test_simulated_invocation_parses(tmp_path, parser):
    bosh = pytest.importorskip("boutiques", reason=NO_BOUTIQUES)
    invocation = {
        "bids_dir": "/data/bids",
        "output_dir": "/data/out",
        "analysis_level": "participant",
        "participant_label": ["01", "02"],
        "session_label": ["A"],
        "mle": True,
        "nprocs": 4,
        "omp_nthreads": 2,
        "mem_gb": 8.5,
        "work_dir": "/scratch/work",
        "use_plugin": "/data/slurm.yml",
        "skip_bids_validation": True,
        "quiet": True,
    }
    path = tmp_path / "invocation.json"
    path.write_text(json.dumps(invocation))
    result = bosh.bosh(["exec", "simulate", str(DESCRIPTOR), "-i", str(path)])
    argv = shlex.split(result.shell_command)
    assert argv[0] == "noddi-bids"
    args = parser.parse_args(argv[1:])
    assert (args.bids_dir, args.output_dir, args.analysis_level) == (
        "/data/bids",
        "/data/out",
        "participant",
    )
    assert args.participant_label == ["01", "02"] and args.session_label == ["A"]
    assert args.mle and args.skip_bids_validation and args.quiet == 1
    assert (args.nprocs, args.omp_nthreads, args.mem_gb) == (4, 2, 8.5)
    assert (args.work_dir, args.use_plugin) == ("/scratch/work", "/data/slurm.yml")
