#!/usr/bin/env python3
"""Generates deploy/grafana/sluice.json, the Sluice Grafana dashboard.

Every query lives here once; docs/observability.md lists them and
scripts/check-deploy fails when sluice.json is not what this script prints
(run `deploy/grafana/generate.py > deploy/grafana/sluice.json` after editing,
then copy it to charts/sluice/dashboards/).

Only metric names from docs/metrics.md (worker, generator, operator) and `up` are used.
The datasource is the template variable ${DS_PROMETHEUS}; `$namespace` and `$pipeline`
filter on the labels the chart's PodMonitor (or the example scrape config) attaches.
Where those labels are absent (a plain local scrape) the `.*` default still matches.
"""
import json
import sys

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SEL = 'namespace=~"$namespace", pipeline=~"$pipeline"'

panels = []
_next_id = [1]
_y = [0]


def _id():
    i = _next_id[0]
    _next_id[0] += 1
    return i


def row(title):
    panels.append({"type": "row", "title": title, "id": _id(), "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": _y[0]}, "panels": []})
    _y[0] += 1


def panel(title, targets, unit="short", x=0, w=12, h=8, kind="timeseries", description="",
          stack=False, thresholds=None):
    """targets: list of (expr, legend)."""
    p = {
        "type": kind,
        "title": title,
        "id": _id(),
        "description": description,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": _y[0]},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i),
             "range": True, "instant": False}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if not stack else 30,
            "showPoints": "never", "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        }
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "textMode": "auto"}
    if thresholds:
        p["fieldConfig"]["defaults"]["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}] + [{"color": c, "value": v} for v, c in thresholds],
        }
    panels.append(p)
    return p


def next_line(h=8):
    _y[0] += h


def quantiles(metric, extra="", by=""):
    sel = SEL + (", " + extra if extra else "")
    grp = "le" + (", " + by if by else "")
    return [
        (f'histogram_quantile({q}, sum by ({grp}) (rate({metric}_bucket{{{sel}}}[5m])))', f"p{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    ]


# ── Overview ───────────────────────────────────────────────────────────────
row("Overview")
panel("Ingest rate", [(f'sum(rate(sluice_worker_rows_total{{{SEL}, outcome="loaded"}}[1m]))', "rows/s")],
      unit="rowsps", kind="stat", x=0, w=6, h=4, description="Rows committed to `events` per second, all workers.")
panel("Rejected share (5m)",
      [(f'sum(rate(sluice_worker_rows_total{{{SEL}, outcome="rejected"}}[5m])) / '
        f'clamp_min(sum(rate(sluice_worker_rows_total{{{SEL}, outcome=~"loaded|rejected"}}[5m])), 1e-9)', "share")],
      unit="percentunit", kind="stat", x=6, w=6, h=4, thresholds=[(0.02, "orange"), (0.05, "red")],
      description="Share of rows sent to quarantine over the last 5 minutes.")
panel("Lag", [(f'max(sluice_worker_lag_seconds{{{SEL}}})', "lag")], unit="s", kind="stat", x=12, w=6, h=4,
      thresholds=[(30, "orange"), (120, "red")],
      description="Age of the oldest landing file not yet committed (max over workers).")
panel("Workers up", [(f'sum(up{{job="sluice-worker", {SEL}}})', "up")], kind="stat", x=18, w=6, h=4,
      description="Worker scrape targets that answer (`up`).")
next_line(4)

row("Throughput")
panel("Ingest rate by outcome", [(f'sum by (outcome) (rate(sluice_worker_rows_total{{{SEL}}}[1m]))', "{{outcome}}")],
      unit="rowsps", x=0, stack=True,
      description="Rows committed per second: loaded (in events), rejected (in quarantine), deduplicated (skipped).")
panel("Rejected rate by reason",
      [(f'sum by (reason) (rate(sluice_worker_rejected_rows_total{{{SEL}}}[5m])) > 0', "{{reason}}")],
      unit="rowsps", x=12, stack=True, description="Rows sent to quarantine per second, by reason code.")
next_line()
panel("Files settled by outcome", [(f'sum by (outcome) (rate(sluice_worker_files_total{{{SEL}}}[5m]))', "{{outcome}}")],
      unit="ops", x=0, description="Files per second: loaded, failed (set aside), skipped (another worker had it).")
panel("Batches by outcome", [(f'sum by (outcome) (rate(sluice_worker_batches_total{{{SEL}}}[5m]))', "{{outcome}}")],
      unit="ops", x=12, description="Batches per second: committed, replayed/recovered after a restart, empty.")
next_line()

row("Backlog and lag")
panel("Backlog files", [(f'max(sluice_worker_backlog_files{{{SEL}}})', "files")], x=0, w=8,
      description="Landing files not yet committed (all workers list the same volume: max).")
panel("Backlog bytes", [(f'max(sluice_worker_backlog_bytes{{{SEL}}})', "bytes")], unit="bytes", x=8, w=8)
panel("Lag", [(f'max(sluice_worker_lag_seconds{{{SEL}}})', "lag")], unit="s", x=16, w=8,
      description="Age of the oldest uncommitted landing file; 0 when the backlog is empty.")
next_line()

row("Latency")
panel("File landed → committed", quantiles("sluice_worker_file_latency_seconds"), unit="s", x=0, w=8,
      description="From a file's modification time to the commit of its rows.")
panel("Batch duration", quantiles("sluice_worker_batch_duration_seconds"), unit="s", x=8, w=8,
      description="From the start of parsing a batch to its commit being recorded.")
panel("Commit latency (COMMIT)", quantiles("sluice_worker_db_duration_seconds", 'phase="commit"'), unit="s", x=16, w=8,
      description="Time spent in PostgreSQL's COMMIT per batch.")
next_line()
panel("COPY latency", quantiles("sluice_worker_db_duration_seconds", 'phase="copy"'), unit="s", x=0, w=8,
      description="Ledger insert + COPY of rows and rejects + batch record, per batch.")
panel("Parse duration", quantiles("sluice_worker_parse_duration_seconds"), unit="s", x=8, w=8)
panel("Checkpoint write (fsync)", quantiles("sluice_worker_checkpoint_write_duration_seconds"), unit="s", x=16, w=8)
next_line()

row("Database")
panel("Database errors by operation",
      [(f'sum by (operation) (rate(sluice_worker_db_errors_total{{{SEL}}}[5m]))', "{{operation}}")],
      unit="ops", x=0, w=8, description="PostgreSQL errors per second (connect errors are retried with backoff).")
panel("Workers with a database connection",
      [(f'sum(sluice_worker_db_up{{{SEL}}})', "connected"), (f'count(sluice_worker_db_up{{{SEL}}})', "workers")],
      x=8, w=8)
panel("After-commit errors", [(f'sum(rate(sluice_worker_after_commit_errors_total{{{SEL}}}[5m]))', "errors/s")],
      unit="ops", x=16, w=8, description="Failures to archive, delete or set aside committed files (retried).")
next_line()

row("Per worker")
panel("Rows loaded per worker",
      [(f'sum by (instance, pod) (rate(sluice_worker_rows_total{{{SEL}, outcome="loaded"}}[1m]))', "{{pod}} {{instance}}")],
      unit="rowsps", x=0, w=8)
panel("Lag per worker", [(f'max by (instance, pod) (sluice_worker_lag_seconds{{{SEL}}})', "{{pod}} {{instance}}")],
      unit="s", x=8, w=8)
panel("Time since last commit per worker",
      [(f'time() - max by (instance, pod) (sluice_worker_last_commit_timestamp_seconds{{{SEL}}} > 0)', "{{pod}} {{instance}}")],
      unit="s", x=16, w=8)
next_line()
panel("Batch p95 per worker",
      [(f'histogram_quantile(0.95, sum by (le, instance, pod) (rate(sluice_worker_batch_duration_seconds_bucket{{{SEL}}}[5m])))',
        "{{pod}} {{instance}}")], unit="s", x=0, w=8)
panel("Database errors per worker",
      [(f'sum by (instance, pod) (rate(sluice_worker_db_errors_total{{{SEL}}}[5m]))', "{{pod}} {{instance}}")],
      unit="ops", x=8, w=8)
panel("Worker up", [(f'up{{job="sluice-worker", {SEL}}}', "{{pod}} {{instance}}")], x=16, w=8)
next_line()

row("Generator")
panel("Generator events by type",
      [(f'sum by (event_type) (rate(sluice_generator_events_total{{{SEL}}}[1m]))', "{{event_type}}")],
      unit="ops", x=0, w=8, stack=True)
panel("Generator bad rows by kind",
      [(f'sum by (kind) (rate(sluice_generator_bad_rows_total{{{SEL}}}[5m]))', "{{kind}}")], unit="ops", x=8, w=8)
panel("Generator files and bytes",
      [(f'sum(rate(sluice_generator_files_total{{{SEL}}}[1m]))', "files/s"),
       (f'sum(rate(sluice_generator_bytes_total{{{SEL}}}[1m]))', "bytes/s")], unit="short", x=16, w=8)
next_line()
panel("Generator backpressure",
      [(f'sum(rate(sluice_generator_backpressure_seconds_total{{{SEL}}}[5m]))', "paused share"),
       (f'max(sluice_generator_backpressure_paused{{{SEL}}})', "paused now")], unit="short", x=0, w=12,
      description="Share of time the generator waited because the landing directory was full.")
next_line()

row("Operator")
panel("Reconcile errors by reason",
      [('sum by (reason) (rate(sluice_operator_reconcile_errors_total[5m]))', "{{reason}}")], unit="ops", x=0, w=8)
panel("Reconciliations",
      [('sum(rate(sluice_operator_reconciliations_total[5m]))', "reconciles/s"),
       ('max(sluice_operator_leader)', "leader")], x=8, w=8)
panel("Reconcile duration",
      [(f'histogram_quantile({q}, sum by (le) (rate(sluice_operator_reconcile_duration_seconds_bucket[5m])))',
        f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)], unit="s", x=16, w=8)
next_line()


def query_var(name, label, metric):
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": f"label_values({metric}, {name})", "refId": f"{name}-query"},
        "definition": f"label_values({metric}, {name})",
        "includeAll": True, "allValue": ".*", "multi": True, "refresh": 2, "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


dashboard = {
    "title": "Sluice",
    "uid": "sluice-overview",
    "description": "Sluice exactly-once ingestion: throughput, rejects, backlog, lag, latency, database, "
                   "per-worker, generator and operator. Queries: docs/observability.md.",
    "tags": ["sluice"],
    "editable": True,
    "graphTooltip": 1,
    "schemaVersion": 39,
    "version": 1,
    "refresh": "10s",
    "time": {"from": "now-30m", "to": "now"},
    "timezone": "",
    "annotations": {"list": []},
    "links": [],
    "templating": {"list": [
        {"name": "DS_PROMETHEUS", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": ""},
        query_var("namespace", "Namespace", "sluice_worker_rows_total"),
        query_var("pipeline", "Pipeline", "sluice_worker_rows_total"),
    ]},
    "panels": panels,
}

if sys.argv[1:] == ["--markdown"]:
    # The panel/query table of docs/observability.md.
    section = ""
    for p in panels:
        if p["type"] == "row":
            section = p["title"]
            print(f"\n**{section}**\n")
            print("| panel | query (legend) |")
            print("|---|---|")
            continue
        pipe = "\\|"
        qs = "<br>".join("`" + t["expr"].replace("|", pipe) + "` (" + t["legendFormat"] + ")" for t in p["targets"])
        print(f"| {p['title']} | {qs} |")
else:
    json.dump(dashboard, sys.stdout, indent=2)
    sys.stdout.write("\n")
