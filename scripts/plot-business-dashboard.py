#!/usr/bin/env python3
"""Draws docs/business-dashboard.png from the business dashboard's query results.

Grafana itself is not installable here (no Debian package, and the PyPI/npm names are not
the server), so this is not a Grafana render: it plots what each panel's SQL returned in
tests/tests/business_dashboard.rs (generated data loaded by a real worker into a real
PostgreSQL), laid out like deploy/grafana/sluice-business.json.

    SLUICE_BUSINESS_DASHBOARD_DUMP=/tmp/business.json \\
        cargo test -p sluice-tests --test business_dashboard
    scripts/plot-business-dashboard.py /tmp/business.json docs/business-dashboard.png

Needs matplotlib (pip install matplotlib).
"""
import datetime as dt
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def col(panel, name):
    i = panel["columns"].index(name)
    return [r[i] for r in panel["rows"]]


def times(panel):
    return [dt.datetime.fromtimestamp(float(t), dt.timezone.utc) for t in col(panel, "time")]


def minute_labels(ts):
    return [t.strftime("%H:%M") for t in ts]


def main(src, dst):
    d = json.load(open(src))
    expected = {"Rows per minute", "Revenue per minute", "Revenue by category",
                "Funnel: view → cart → purchase", "Quarantine by reason", "Slowest files"}
    if set(d) != expected:
        sys.exit(f"panels {sorted(d)} are not the ones this script draws: {sorted(expected)}")
    fig, axes = plt.subplots(3, 2, figsize=(15, 13))
    fig.suptitle("Sluice business — each panel's SQL run against PostgreSQL "
                 "(generated data; plotted, not a Grafana render)", fontsize=13)

    p = d["Rows per minute"]
    ax = axes[0][0]
    ts = times(p)
    ax.bar(minute_labels(ts), [int(v) for v in col(p, "rows")], color="#5794F2")
    ax.set_title("Rows per minute (event time, UTC)")
    ax.set_ylabel("rows")

    p = d["Revenue per minute"]
    ax = axes[0][1]
    ts = times(p)
    ax.bar(minute_labels(ts), [float(v) for v in col(p, "revenue")], color="#73BF69")
    ax.set_title("Revenue per minute (purchases, price × quantity)")
    ax.set_ylabel("revenue")

    p = d["Revenue by category"]
    ax = axes[1][0]
    cats = col(p, "category")[::-1]
    ax.barh(cats, [float(v) for v in col(p, "revenue")][::-1], color="#FADE2A")
    ax.set_title("Revenue by category")
    ax.set_xlabel("revenue")

    p = d["Funnel: view → cart → purchase"]
    ax = axes[1][1]
    stages = col(p, "stage")[::-1]
    sessions = [int(v) for v in col(p, "sessions")][::-1]
    events = [int(v) for v in col(p, "events")][::-1]
    y = range(len(stages))
    ax.barh([i + 0.2 for i in y], sessions, height=0.4, label="sessions", color="#B877D9")
    ax.barh([i - 0.2 for i in y], events, height=0.4, label="events", color="#8AB8FF")
    ax.set_yticks(list(y), stages)
    for i, (s, e) in enumerate(zip(sessions, events)):
        ax.text(s, i + 0.2, f" {s}", va="center", fontsize=8)
        ax.text(e, i - 0.2, f" {e}", va="center", fontsize=8)
    ax.set_title("Funnel: view → cart → purchase")
    ax.legend(loc="lower right")

    p = d["Quarantine by reason"]
    ax = axes[2][0]
    by = defaultdict(dict)
    for t, reason, n in zip(times(p), col(p, "metric"), col(p, "rows")):
        by[reason][t] = int(n)
    all_t = sorted({t for r in by.values() for t in r})
    bottom = [0] * len(all_t)
    for reason in sorted(by):
        vals = [by[reason].get(t, 0) for t in all_t]
        ax.bar(minute_labels(all_t), vals, bottom=bottom, label=reason)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_title("Quarantine by reason (commit time, UTC)")
    ax.set_ylabel("rows")
    ax.legend(fontsize=7, ncol=2)

    p = d["Slowest files"]
    ax = axes[2][1]
    ax.axis("off")
    shown = ["file", "batch_seconds", "batch_files", "bytes", "rows_loaded", "rows_rejected"]
    cells = []
    for r in p["rows"][:12]:
        row = dict(zip(p["columns"], r))
        secs = row["batch_seconds"]
        cells.append([row["file"][:44], "—" if secs is None else f"{float(secs):.3f}",
                      row["batch_files"], row["bytes"], row["rows_loaded"], row["rows_rejected"]])
    table = ax.table(cellText=cells, colLabels=shown, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.auto_set_column_width(list(range(len(shown))))
    ax.set_title(f"Slowest files (top {len(cells)} of {len(p['rows'])} shown)")

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(dst, dpi=90)
    print(f"wrote {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot-business-dashboard.py RESULTS.json OUT.png")
    main(sys.argv[1], sys.argv[2])
