"""Figures and tables of attribution: measured vs estimated scores per behavior, the fraction of
the corpus measured over time, and the documents that pushed each behavior most."""

from __future__ import annotations

from pathlib import Path

from curriculum.report.collect import RunData
from curriculum.report.metrics import MEASURED_FRACTION
from curriculum.report.plotting import Figure, run_color, save, subplots, write_csv
from curriculum.report.store_stats import StoreStats


def distinct_stores(runs: list[RunData]) -> list[tuple[StoreStats, list[str]]]:
    """Each store once, with the runs that used it (the demo's runs share one store)."""
    seen: dict[Path, tuple[StoreStats, list[str]]] = {}
    for run in runs:
        if run.store is not None:
            seen.setdefault(run.store.path, (run.store, []))[1].append(run.info.name)
    return list(seen.values())


def scores_figure(runs: list[RunData], out: Path) -> Figure:
    """Per behavior, histograms of measured mean scores and of kNN estimates."""
    name, title = "attribution_scores", "Measured vs estimated attribution"
    caption = ("Per behavior: how many documents have each attribution score, measured (filled: "
               "mean per scored step) and estimated by kNN for the unmeasured (outline); right of "
               "0 = training on it lowered that behavior's probe loss. Ends hold the 0.5% tails.")
    stores = [(s, users) for s, users in distinct_stores(runs) if s.measured_rows]
    if not stores:
        return Figure(name, title, caption, None, None,
                      "no attribution: no store with measured scores (turn on data.attribution)")
    behaviors = list(dict.fromkeys(b for s, _ in stores for b in s.behaviors))
    figure, axes = subplots(len(behaviors))
    rows = []
    for ax, behavior in zip(axes, behaviors, strict=True):
        for index, (stats, users) in enumerate(stores):
            if behavior not in stats.behaviors:
                continue
            edges = stats.histogram_edges[behavior]
            label = f"store of {', '.join(users)}"
            measured, estimated = stats.measured_histogram[behavior], stats.estimated_histogram[behavior]
            ax.stairs(measured, edges, fill=True, alpha=0.45, color=run_color(index),
                      label=f"measured ({label})")
            if estimated.any():
                ax.stairs(estimated, edges, color=run_color(index), lw=1.2,
                          label=f"estimated ({label})")
            rows += [(str(stats.path), behavior, kind, float(lo), float(hi), int(n))
                     for kind, counts in (("measured", measured), ("estimated", estimated))
                     for lo, hi, n in zip(edges[:-1].tolist(), edges[1:].tolist(), counts.tolist(),
                                          strict=True)]
        ax.axvline(0, color="#888888", lw=0.8)
        ax.set_title(behavior, fontsize=10)
        ax.set_xlabel("attribution score")
        ax.set_ylabel("documents")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
        ax.legend(fontsize=7)
    return Figure(name, title, caption, save(figure, out, name),
                  write_csv(out, name, ("store", "behavior", "kind", "score_from", "score_to",
                                        "documents"), rows))


def measured_fraction_figure(runs: list[RunData], out: Path) -> Figure:
    """The fraction of the corpus measured over steps (logged by the attribution callback), and
    the store's final fraction as a marker."""
    name, title = "measured_fraction", "Fraction of the corpus measured"
    caption = ("Share of the corpus with at least one measured attribution score, over steps "
               f"(metrics.csv column {MEASURED_FRACTION}); a dot marks what the store holds at "
               "the end (a shared store counts every run that wrote it).")
    figure, (ax,) = subplots(1, width=7.0, height=3.0)
    rows, drawn = [], False
    for index, run in enumerate(runs):
        series = run.metrics.series.get(MEASURED_FRACTION)
        if series is not None:
            ax.plot(series.steps, series.values, color=run_color(index), label=run.info.name)
            rows += [(run.info.name, "metrics.csv", int(s), float(v))
                     for s, v in zip(series.steps.tolist(), series.values.tolist(), strict=True)]
            drawn = True
        if run.store is not None and run.store.measured_rows:
            step = run.metrics.last_step()
            ax.plot([step], [run.store.measured_fraction], "o", color=run_color(index))
            rows.append((run.info.name, "store at the end", step, run.store.measured_fraction))
            drawn = True
    if not drawn:
        import matplotlib.pyplot as plt

        plt.close(figure)
        return Figure(name, title, caption, None, None,
                      "no attribution: nothing measured and no measured-fraction column")
    ax.set_xlabel("step")
    ax.set_ylabel("fraction measured")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    missing = ", ".join(run.info.name for run in runs if MEASURED_FRACTION not in run.metrics.series)
    return Figure(name, title, caption, save(figure, out, name),
                  write_csv(out, name, ("run", "source", "step", "fraction_measured"), rows),
                  f"no {MEASURED_FRACTION} column in: {missing}" if missing else "")


def write_top_documents(stores: list[tuple[StoreStats, list[str]]], out: Path) -> str | None:
    """``top_documents.csv``: every ranked document of every store."""
    rows = []
    for stats, _ in stores:
        for direction, table in (("toward", stats.top), ("against", stats.bottom)):
            for behavior, documents in table.items():
                rows += [(str(stats.path), behavior, direction, rank, d.row, d.key, d.shard,
                          d.score_sum, d.score_mean, d.count, d.text)
                         for rank, d in enumerate(documents, start=1)]
    if not rows:
        return None
    return write_csv(out, "top_documents", ("store", "behavior", "direction", "rank", "row", "key",
                                            "shard", "score_sum", "score_mean", "measurements",
                                            "text"), rows)


def fill_text(stats: StoreStats, documents: dict[int, object]) -> None:
    """Copy key, shard and snippet into the ranked documents of ``stats``."""
    for table in (stats.top, stats.bottom):
        for ranked in table.values():
            for item in ranked:
                document = documents.get(item.row)
                if document is not None:
                    item.key, item.shard, item.text = document.key, document.shard, document.text


def ranked_rows(stats: StoreStats) -> list[int]:
    """Rows of every ranked document of a store."""
    return sorted({d.row for table in (stats.top, stats.bottom) for ranked in table.values()
                   for d in ranked})
