"""Nipype interface writing one NODDI map as a DICOM series (see :mod:`noddi_bids.io.dicom`)."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from noddi_bids.io.dicom import (
    make_study_uid,
    patient_attributes_from_bids,
    write_parametric_map_series,
)


class _DicomMapSeriesInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3-D NODDI map (NIfTI, values in [0, 1])")
    parameter = traits.Enum("od", "icvf", "isovf", mandatory=True, desc="BIDS param- label")
    estimator = traits.Enum("nnmle", "nngt", "mle", mandatory=True, desc="BIDS desc- label")
    series_number = traits.Range(low=1, mandatory=True, desc="DICOM SeriesNumber")
    subject = traits.Str(mandatory=True, desc="participant label (PatientID sub-<label>)")
    session = traits.Str(desc="session label (one DICOM study per session)")
    dataset = traits.Str(
        "", usedefault=True, desc="dataset name or DOI, mixed into the default StudyInstanceUID"
    )
    study_uid = traits.Str(
        desc="StudyInstanceUID; default: the sidecar's StudyInstanceUID if present, else "
        "make_study_uid(subject, session, dataset=dataset)"
    )
    bids_sidecar = File(exists=True, desc="JSON sidecar of the source DWI (patient/study data)")
    participants_tsv = File(exists=True, desc="participants.tsv (sex, age, weight)")
    out_dir = traits.Str(desc="series folder to write; default <cwd>/<parameter>_<estimator>")


class _DicomMapSeriesOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="the series folder")
    out_files = OutputMultiObject(File(exists=True), desc="one DICOM file per slice, in order")
    study_uid = traits.Str(desc="StudyInstanceUID written")


class DicomMapSeries(SimpleInterface):
    """Write a NODDI map as a DICOM MR series (integers x 1000, one instance per slice).

    Examples
    --------
    >>> node = DicomMapSeries(
    ...     in_file="sub-01_model-noddi_param-od_desc-nnmle_dwimap.nii.gz",
    ...     parameter="od", estimator="nnmle", series_number=1001, subject="01",
    ...     bids_sidecar="sub-01_dwi.json")  # doctest: +SKIP
    >>> node.run().outputs.out_files[0]  # doctest: +SKIP
    '.../od_nnmle/ODI_NN-MLE_0001.dcm'
    """

    input_spec = _DicomMapSeriesInputSpec
    output_spec = _DicomMapSeriesOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        session = inputs.session if isdefined(inputs.session) else None
        patient = patient_attributes_from_bids(
            inputs.bids_sidecar if isdefined(inputs.bids_sidecar) else None,
            inputs.participants_tsv if isdefined(inputs.participants_tsv) else None,
            subject=inputs.subject,
            session=session,
        )
        study_uid = (
            inputs.study_uid
            if isdefined(inputs.study_uid)
            else patient.get("StudyInstanceUID")
            or make_study_uid(inputs.subject, session, dataset=inputs.dataset)
        )
        out_dir = (
            Path(inputs.out_dir)
            if isdefined(inputs.out_dir)
            else Path(runtime.cwd) / f"{inputs.parameter}_{inputs.estimator}"
        )
        files = write_parametric_map_series(
            inputs.in_file,
            out_dir,
            parameter=inputs.parameter,
            estimator=inputs.estimator,
            series_number=inputs.series_number,
            study_uid=study_uid,
            patient=patient,
        )
        self._results["out_dir"] = str(out_dir)
        self._results["out_files"] = [str(f) for f in files]
        self._results["study_uid"] = study_uid
        return runtime
