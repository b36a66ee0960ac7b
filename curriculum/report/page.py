"""The report page: one ``index.html`` of plain HTML and CSS (no script, nothing fetched from
the network); images and CSV files sit beside it and are referenced by relative names."""

from __future__ import annotations

import datetime
import html
from collections.abc import Iterable, Sequence
from typing import Any

from curriculum.ledger import Fate
from curriculum.report.collect import RunData
from curriculum.report.plotting import Figure
from curriculum.report.store_stats import RankedDocument, StoreStats
from curriculum.report.sweep import SweepInfo

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1240px; padding: 0 24px 48px; color: #222; }
h1 { margin: 24px 0 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin: 0 0 12px; }
figure { margin: 12px 0 24px; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 13px; } figcaption a { color: #1f77b4; }
.missing { background: #fff6e0; border-left: 4px solid #e0a800; padding: 6px 10px; }
.ok { color: #137333; font-weight: 600; } .failed { color: #c5221f; font-weight: 600; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { max-width: 560px; color: #333; }
pre { background: #f8f8f8; padding: 10px; overflow-x: auto; font-size: 12px; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 8px 24px; }
"""


def esc(value: Any) -> str:
    """HTML-escaped text of ``value``."""
    return html.escape(str(value), quote=True)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = (),
          text_columns: Sequence[int] = ()) -> str:
    """An HTML table; columns in ``numeric`` are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            css = ' class="num"' if i in numeric else ' class="text"' if i in text_columns else ""
            cells.append(f"<td{css}>{esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def missing(text: str) -> str:
    """A highlighted note saying what is missing."""
    return f'<p class="missing">{esc(text)}</p>'


def figure_html(figure: Figure) -> str:
    """An image with its caption and a link to its numbers, or the note saying what is missing."""
    parts = [f'<h3 id="{esc(figure.name)}">{esc(figure.title)}</h3>']
    if figure.image:
        link = f' <a href="{esc(figure.data)}">numbers (CSV)</a>' if figure.data else ""
        parts.append(f'<figure><img src="{esc(figure.image)}" alt="{esc(figure.title)}">'
                     f"<figcaption>{esc(figure.caption)}{link}</figcaption></figure>")
    else:
        parts.append(f"<p>{esc(figure.caption)}</p>")
    if figure.missing:
        parts.append(missing(figure.missing))
    return "<section>" + "\n".join(parts) + "</section>"


def _count_rows(run: RunData) -> list[tuple[Any, ...]]:
    stats = run.ledger
    names = run.info.stage_names()
    rows = []
    for s, stage in enumerate(stats.stages):
        label = f"{stage} ({names[int(stage)]})" if stage.isdigit() and int(stage) in names else stage
        for b, behavior in enumerate(stats.behaviors):
            cell = stats.cells[s, b]
            if not cell.any():
                continue
            emitted = int(cell[Fate.EMIT])
            mean = f"{stats.emitted_weight[s, b] / emitted:.3f}" if emitted else "-"
            rows.append((run.info.name, label, behavior, f"{emitted:,}", f"{int(cell[Fate.DEFER]):,}",
                         f"{int(cell[Fate.RELEASE]):,}", f"{int(cell[Fate.DROP]):,}",
                         f"{int(cell[Fate.SKIP]):,}", mean))
    return rows


def ledger_section(runs: list[RunData]) -> str:
    """``ledger --check`` status and the event counts by stage and behavior."""
    parts = ["<h3>Ledger check and counts</h3>"]
    for run in runs:
        if run.check is not None:
            css = "ok" if run.check.ok else "failed"
            parts.append(f'<p><b>{esc(run.info.name)}</b>: <span class="{css}">'
                         f"{esc(run.check.summary_line())}</span></p>")
            parts.extend(f"<pre>{esc(p)}</pre>" for p in run.check.problems[:5])
        else:
            parts.append(f"<p><b>{esc(run.info.name)}</b>: "
                         f"{missing(run.notes.get('ledger', 'no ledger'))}</p>")
    with_ledger = [run for run in runs if run.ledger is not None]
    if with_ledger:
        parts.append("<p>Events by stage (as metrics.csv logs it) and behavior ("
                     f"{esc('; '.join(sorted({r.behavior_source for r in with_ledger})))}):</p>")
        rows = [row for run in with_ledger for row in _count_rows(run)]
        parts.append(table(("run", "stage", "behavior", "emitted", "deferred", "released",
                            "dropped", "skipped", "mean weight"), rows, numeric=range(3, 9)))
        reasons = [(run.info.name, "drop", reason, f"{int(counts.sum()):,}")
                   for run in with_ledger for reason, counts in run.ledger.dropped.items()]
        reasons += [(run.info.name, "skip", reason, f"{count:,}")
                    for run in with_ledger for reason, count in run.ledger.skip_reasons.items()]
        parts.append(table(("run", "event", "reason", "documents"), reasons, numeric=(3,))
                     if reasons else "<p>No document was dropped or skipped.</p>")
    return "\n".join(parts)


def _ranked_table(documents: list[RankedDocument]) -> str:
    return table(("#", "score (sum)", "mean / step", "measurements", "row", "key", "shard", "text"),
                 [(i, f"{d.score_sum:+.3e}", f"{d.score_mean:+.3e}", d.count, d.row, d.key, d.shard,
                   d.text) for i, d in enumerate(documents, start=1)],
                 numeric=(0, 1, 2, 3, 4), text_columns=(7,))


def top_documents_section(stores: list[tuple[StoreStats, list[str]]], data_file: str | None) -> str:
    """Per store and behavior: the documents that pushed it most, and most against it."""
    parts = ['<h3 id="top_documents">Which documents pushed which behavior</h3>',
             "<p>Documents ranked by their summed measured attribution (In-Run Data Shapley, first "
             "order: the sum over the steps they were trained on of -lr &middot; "
             "&nabla;L<sub>probe</sub> &middot; &nabla;l<sub>doc</sub>). <i>Toward</i>: training "
             "on them lowered the behavior's probe loss most; <i>against</i>: raised it most."
             + (f' <a href="{esc(data_file)}">all of them (CSV)</a>' if data_file else "")
             + "</p>"]
    measured = [(s, users) for s, users in stores if s.measured_rows]
    if not measured:
        parts.append(missing("no attribution: no store holds measured scores, so there are no "
                             "top documents (train with data.attribution on)"))
        return "\n".join(parts)
    for stats, users in measured:
        parts.append(f"<p>Store <code>{esc(stats.path)}</code> (written by {esc(', '.join(users))}): "
                     f"{stats.measured_rows:,} of {stats.num_rows:,} documents measured "
                     f"({stats.measured_fraction:.1%}).</p>")
        for behavior in stats.behaviors:
            parts.append(f"<details open><summary>{esc(behavior)}</summary>")
            for direction, ranked in (("toward", stats.top[behavior]),
                                      ("against", stats.bottom[behavior])):
                parts.append(f"<p><b>{direction} {esc(behavior)}</b></p>")
                parts.append(_ranked_table(ranked) if ranked else
                             "<p>none measured in this direction</p>")
            parts.append("</details>")
    return "\n".join(parts)


def lineage_section(runs: list[RunData], sweeps: list[SweepInfo]) -> str:
    """Branch lineage of the runs that are branches, and the sweep tables and plots."""
    parts = ["<h2>Branches and sweeps</h2>"]
    branches = [run for run in runs if run.info.lineage]
    for run in branches:
        lineage = run.info.lineage or {}
        parts.append(f"<h3>Lineage of {esc(run.info.name)}</h3>")
        parts.append(table(("field", "value"), [(k, v) for k, v in lineage.items()]))
    for index, sweep in enumerate(sweeps):
        parts.append(f"<h3>Sweep {index + 1}: {esc(sweep.path)}</h3>")
        parts.append(table(sweep.header, sweep.rows, numeric=range(2, len(sweep.header))))
        if sweep.plot:
            parts.append(f'<figure><img src="{esc(sweep.plot)}" alt="sweep plot"><figcaption>Per '
                         "behavior, the branch-end probe loss against the step the branch started "
                         "from; dashed: the unbranched run at the same total step.</figcaption>"
                         "</figure>")
    if not branches and not sweeps:
        parts.append("<p>No run is a branch (no lineage.json) and no sweep directory was given.</p>")
    return "\n".join(parts)


def config_section(runs: list[RunData]) -> str:
    """Each run's resolved config and policy."""
    parts = ["<h2>Config and policy</h2>"]
    for run in runs:
        parts.append(f"<h3>{esc(run.info.name)} <small><code>{esc(run.info.path)}</code></small></h3>")
        if run.info.config_text is not None:
            parts.append(f"<details><summary>config.yaml</summary><pre>{esc(run.info.config_text)}"
                         "</pre></details>")
        else:
            parts.append(missing("no config.yaml in the run directory"))
        if run.info.policy_text is not None:
            parts.append(f"<details open><summary>policy.yaml</summary><pre>"
                         f"{esc(run.info.policy_text)}</pre></details>")
        else:
            parts.append(missing(run.notes.get("policy", "no policy.yaml")))
    return "\n".join(parts)


def notes_section(runs: list[RunData]) -> str:
    """What each run lacks, up front."""
    rows = [(run.info.name, note) for run in runs for note in run.notes.values()]
    if not rows:
        return "<p>Every run has metrics, a ledger, a policy and attribution.</p>"
    return "<p>Missing, and shown as such below:</p>" + table(("run", "what is missing"), rows)


def render_page(runs: list[RunData], figures: dict[str, Figure],
                stores: list[tuple[StoreStats, list[str]]], sweeps: list[SweepInfo],
                top_documents_file: str | None) -> str:
    """The whole page."""
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    run_list = table(("run", "directory", "last step"),
                     [(run.info.name, run.info.path, run.metrics.last_step()) for run in runs])
    sections = [
        "<h2>What the curriculum did</h2>",
        figure_html(figures["probe_loss"]), figure_html(figures["stream_mix"]),
        '<div class="grid">', figure_html(figures["spool"]), figure_html(figures["drops"]), "</div>",
        figure_html(figures["loss_weights"]), ledger_section(runs),
        "<h2>Attribution: which documents pushed which behavior</h2>",
        figure_html(figures["attribution_scores"]), figure_html(figures["measured_fraction"]),
        top_documents_section(stores, top_documents_file),
        lineage_section(runs, sweeps), config_section(runs),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>curriculum report: {esc(', '.join(r.info.name for r in runs))}</title>"
        f"<style>{STYLE}</style></head><body>\n"
        f"<h1>Curriculum report</h1><p class=\"sub\">{esc(generated)} &middot; "
        f"{len(runs)} run(s)</p>\n{run_list}\n{notes_section(runs)}\n"
        + "\n".join(sections) + "\n</body></html>\n")
