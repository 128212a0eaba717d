"""``--help`` of the command-line tools: every option described, each default stated once."""

from __future__ import annotations

import argparse

import pytest

from noddi_bids.cli.networks import evaluate_parser, train_parser
from noddi_bids.cli.parser import build_parser

PARSERS = {"noddi-bids": build_parser, "noddi-bids-train": train_parser,
           "noddi-bids-evaluate": evaluate_parser}  # fmt: skip


def option_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Help text of each option (by its first long name) as ``--help`` prints it."""
    formatter = parser._get_formatter()
    return {
        next((o for o in action.option_strings if o.startswith("--")), action.dest): (
            formatter._expand_help(action)
        )
        for action in parser._actions
        if action.help is not argparse.SUPPRESS
    }


@pytest.mark.parametrize("name", PARSERS)
def test_every_option_has_help_with_one_default(name):
    for option, text in option_help(PARSERS[name]()).items():
        assert text.strip(), f"{name} {option} has no help"
        assert text.lower().count("default") <= 1, f"{name} {option}: {text!r}"


def test_app_help_states_only_real_defaults():
    helps = option_help(build_parser())
    text = build_parser().format_help()
    for empty in ("(default: None)", "(default: False)", "(default: 0)"):
        assert empty not in text
    assert helps["--work-dir"] == "Nipype work folder; default: ./work"
    assert helps["--dpar"].endswith("(default: 0.0017)")
    assert helps["--b0-threshold"].endswith("(default: 50.0)")
    assert helps["--model"].endswith("(default: auto)")
    assert "default" not in helps["--mle"]
