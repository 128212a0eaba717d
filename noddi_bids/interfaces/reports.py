"""Nipype interfaces writing the HTML reports (:mod:`noddi_bids.reports`); no science inside."""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from noddi_bids.reports import write_group_report, write_participant_report


class _ParticipantReportInputSpec(BaseInterfaceInputSpec):
    output_dir = Directory(exists=True, mandatory=True, desc="derivatives folder")
    subject = traits.Str(mandatory=True, desc="participant label (with or without sub-)")
    session = traits.Str(desc="session label; all sessions in one report when unset")
    command = traits.Str(desc="command line of the run, shown in the provenance block")
    timings = traits.Dict(traits.Str, traits.Float, desc="step -> seconds, for provenance")
    in_files = traits.List(
        File(exists=True), desc="derivatives written (only to run after the writers)"
    )


class _ReportOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="HTML report")


class ParticipantReport(SimpleInterface):
    """Write ``sub-<label>[_ses-<label>].html`` from the derivatives found in ``output_dir``.

    Connect the derivative writers' ``out_files`` to ``in_files`` so that the report is made
    after them.

    Examples
    --------
    >>> report = ParticipantReport(output_dir="derivatives/noddi-bids", subject="01",
    ...                            command="noddi-bids bids out participant")  # doctest: +SKIP
    >>> report.run().outputs.out_report  # doctest: +SKIP
    '.../derivatives/noddi-bids/sub-01.html'
    """

    input_spec = _ParticipantReportInputSpec
    output_spec = _ReportOutputSpec
    always_run = True  # the derivatives may have changed while this node's inputs did not

    def _run_interface(self, runtime):
        inputs = self.inputs
        provenance = {}
        if inputs.command:
            provenance["command"] = inputs.command
        if inputs.timings:
            provenance["timings"] = dict(inputs.timings)
        path = write_participant_report(
            inputs.output_dir, inputs.subject, inputs.session or None, provenance
        )
        self._results["out_report"] = str(path)
        return runtime


class _GroupReportInputSpec(BaseInterfaceInputSpec):
    output_dir = Directory(exists=True, mandatory=True, desc="folder with group_tissue_stats.tsv")


class GroupReport(SimpleInterface):
    """Write ``group_report.html`` (and ``figures/group_tissue_stats.svg``) from the group table.

    Examples
    --------
    >>> GroupReport(output_dir="derivatives/noddi-bids").run()  # doctest: +SKIP
    """

    input_spec = _GroupReportInputSpec
    output_spec = _ReportOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        self._results["out_report"] = str(write_group_report(self.inputs.output_dir))
        return runtime
