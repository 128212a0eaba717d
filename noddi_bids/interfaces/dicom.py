"""Nipype interfaces writing NODDI maps as DICOM series (see :mod:`noddi_bids.io.dicom`)."""

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
from noddi_bids.vocabulary import ESTIMATORS, MAPS, PARAMETERS


class _DicomPatientInputSpec(BaseInterfaceInputSpec):
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


class _DicomMapSeriesInputSpec(_DicomPatientInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3-D NODDI map (NIfTI, values in [0, 1])")
    parameter = traits.Enum(
        *(MAPS[p].label for p in PARAMETERS), mandatory=True, desc="BIDS param- label"
    )
    estimator = traits.Enum(*ESTIMATORS, mandatory=True, desc="BIDS desc- label")
    series_number = traits.Range(low=1, mandatory=True, desc="DICOM SeriesNumber")
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
        patient, study_uid = _patient_and_study(inputs)
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


def _patient_and_study(inputs) -> tuple[dict, str]:
    """Patient attributes from the BIDS files and the StudyInstanceUID to write."""
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
    return patient, study_uid


#: First SeriesNumber of a run's maps (ODI, NDI, FWF per estimator, in that order).
FIRST_SERIES_NUMBER = 1001


class _DicomRunExportInputSpec(_DicomPatientInputSpec):
    estimators = traits.List(
        traits.Enum(*ESTIMATORS), mandatory=True, desc="desc- label of each estimate"
    )
    map_files = traits.List(
        traits.Dict(traits.Str, File(exists=True)),
        mandatory=True,
        desc="per estimate (same order), {parameter name: map} (as written by WriteEstimate)",
    )
    out_dir = traits.Str(mandatory=True, desc="folder receiving one sub-folder per series")


class _DicomRunExportOutputSpec(TraitedSpec):
    out_dirs = traits.List(Directory(exists=True), desc="one folder per series")
    study_uid = traits.Str(desc="StudyInstanceUID written")


class DicomRunExport(SimpleInterface):
    """Write every ODI/NDI/FWF map of a run as its own DICOM series (one study per session).

    Series folders are ``<out_dir>/<param>_<desc>`` (e.g. ``od_nnmle``), numbered from
    ``FIRST_SERIES_NUMBER`` in estimator order (networks first, then the fit) and ODI, NDI, FWF.
    The fibre-direction map is not exported (a vector image, not a scalar map).
    """

    input_spec = _DicomRunExportInputSpec
    output_spec = _DicomRunExportOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        patient, study_uid = _patient_and_study(inputs)
        out_dirs = []
        for estimator, maps in zip(inputs.estimators, inputs.map_files, strict=True):
            for name in PARAMETERS:
                parameter = MAPS[name].label
                out_dir = Path(inputs.out_dir) / f"{parameter}_{estimator}"
                write_parametric_map_series(
                    maps[name],
                    out_dir,
                    parameter=parameter,
                    estimator=estimator,
                    series_number=FIRST_SERIES_NUMBER + len(out_dirs),
                    study_uid=study_uid,
                    patient=patient,
                )
                out_dirs.append(str(out_dir))
        self._results["out_dirs"] = out_dirs
        self._results["study_uid"] = study_uid
        return runtime
