"""Group report: the participants' tissue summaries side by side, linking each participant report.

Built from ``group_tissue_stats.tsv`` (long format, written by the group level): one row per
run, tissue, estimator and parameter with the run's entities (``participant_id``, ``ses``, ...)
and its ``mean``, ``sd`` and ``n_voxels``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from noddi_bids.atomic import atomic_target
from noddi_bids.reports import figures
from noddi_bids.reports import html as page
from noddi_bids.tissue.stats import TISSUE_PARAMETERS
from noddi_bids.vocabulary import ESTIMATORS, PARAMETERS, TISSUES

LOGGER = logging.getLogger("noddi_bids.reports")
#: Name of the group table read (in the derivatives folder).
GROUP_TABLE = "group_tissue_stats.tsv"
#: Group figure, also written on its own (``figures/`` is in ``.bidsignore``).
GROUP_FIGURE = Path("figures") / "group_tissue_stats.svg"
#: Columns of the long table that are values, not entities.
_VALUES = ("tissue", "estimator", "parameter", "n_voxels", "mean", "sd")


def participant_reports(output_dir: Path, participant_id: str) -> list[Path]:
    """List the reports of a participant: ``sub-<label>.html`` and per-session ones."""
    output_dir = Path(output_dir)
    found = [output_dir / f"{participant_id}.html"]
    found += sorted(output_dir.glob(f"{participant_id}_ses-*.html"))
    return [path for path in found if path.is_file()]


def read_group_table(output_dir: Path) -> pd.DataFrame:
    """Read ``group_tissue_stats.tsv`` (``n/a`` as missing).

    Raises
    ------
    FileNotFoundError
        If the group level has not written the table yet.
    ValueError
        If the table lacks one of the columns the report needs.
    """
    path = Path(output_dir) / GROUP_TABLE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no group table; run the group level first.")
    table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
    missing = [c for c in ("participant_id", *_VALUES[:3], "mean") if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}.")
    return table


def write_group_report(output_dir: Path) -> Path:
    """Write the group HTML report and its figure from ``group_tissue_stats.tsv``.

    Parameters
    ----------
    output_dir : Path
        Derivatives folder holding ``group_tissue_stats.tsv`` and the participant reports.

    Returns
    -------
    Path
        ``output_dir/group_report.html`` (the figure is embedded and also written to
        ``output_dir/figures/group_tissue_stats.svg``), both written atomically.
    """
    output_dir = Path(output_dir)
    table = read_group_table(output_dir)
    svg = figures.group_figure(table, TISSUE_PARAMETERS)
    with atomic_target(output_dir / GROUP_FIGURE) as temporary:
        temporary.write_text(svg, encoding="utf-8")
    participants = list(dict.fromkeys(table["participant_id"]))
    estimators = list(dict.fromkeys(table["estimator"]))
    tissues = [t for t in TISSUES if t in set(table["tissue"])]
    caption = (
        "Mean of each parameter within each tissue: one point per participant run and estimator "
        "(" + ", ".join(f"{figures.estimator_name(e)} = desc-{e}" for e in estimators) + "); "
        "black bars: group mean \u00b1 sample SD. CSF: FWF only."
    )
    body = [
        page.section(
            "figure",
            "Tissue means across participants",
            page.figure_html(svg, page.SVG, caption, "group tissue means"),
        ),
        page.section("summary", "Group summary", _summary_html(table)),
        page.section("participants", "Participants", _participants_html(output_dir, table)),
    ]
    nav = [("#figure", "Figure"), ("#summary", "Summary"), ("#participants", "Participants")]
    subtitle = (
        f"{len(participants)} participant(s); tissues {', '.join(tissues)}; estimators "
        + ", ".join(figures.estimator_label(e) for e in estimators)
    )
    text = page.render_page("noddi-bids group report", subtitle, nav, "\n".join(body))
    path = page.write_html(text, output_dir / "group_report.html")
    LOGGER.info("Group report: %s", path)
    return path


def _summary_html(table: pd.DataFrame) -> str:
    grouped = table.groupby(["tissue", "estimator", "parameter"], sort=False)["mean"]
    summary = grouped.agg(n="count", mean="mean", sd="std").reset_index()
    order = {
        "tissue": summary["tissue"].map({t: i for i, t in enumerate(TISSUES)}),
        "parameter": summary["parameter"].map({p: i for i, p in enumerate(PARAMETERS)}),
    }
    known = dict.fromkeys([*ESTIMATORS, *summary["estimator"]])
    estimators = {e: i for i, e in enumerate(known)}
    summary = summary.assign(
        _tissue=order["tissue"],
        _estimator=summary["estimator"].map(estimators),
        _parameter=order["parameter"],
    )
    summary = summary.sort_values(["_tissue", "_estimator", "_parameter"], na_position="last")
    rows = [
        (
            record["tissue"],
            figures.estimator_label(record["estimator"]),
            figures.PARAMETER_NAMES.get(record["parameter"], record["parameter"]),
            str(record["n"]),
            f"{record['mean']:.3f}",
            "-" if pd.isna(record["sd"]) else f"{record['sd']:.3f}",
        )
        for record in summary.to_dict("records")
    ]
    header = ["tissue", "estimator", "parameter", "runs", "mean", "SD"]
    note = "<p>Mean and sample SD (ddof 1) of the per-run tissue means.</p>"
    return note + page.table_html(header, rows, numeric=[3, 4, 5])


def _participants_html(output_dir: Path, table: pd.DataFrame) -> str:
    entities = [c for c in table.columns if c not in _VALUES]
    runs = table[entities].drop_duplicates()
    rows = []
    for participant_id in dict.fromkeys(runs["participant_id"]):
        reports = participant_reports(output_dir, participant_id)
        links = " ".join(
            f'<a href="{page.escape(path.name)}">{page.escape(path.name)}</a>' for path in reports
        )
        count = int((runs["participant_id"] == participant_id).sum())
        rows.append(
            f'<tr><td>{page.escape(participant_id)}</td><td class="number">{count}</td>'
            f"<td>{links or 'no report found'}</td></tr>"
        )
    head = "<tr><th>participant</th><th>runs</th><th>report</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
