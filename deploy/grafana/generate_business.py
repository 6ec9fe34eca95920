#!/usr/bin/env python3
"""Generates deploy/grafana/sluice-business.json, the Sluice business dashboard.

The operations dashboard (generate.py, sluice.json) reads Prometheus; this one reads the
data itself from PostgreSQL: the `events` table, `quarantine` and the ledger
(`sluice_files`, `sluice_batches`). Every query lives here once; scripts/check-deploy
fails when sluice-business.json is not what this script prints (run
`deploy/grafana/generate_business.py > deploy/grafana/sluice-business.json` after editing,
then copy it to charts/sluice/dashboards/), and tests/tests/business_dashboard.rs runs
every panel's SQL against a PostgreSQL loaded by the generator and a worker.

The datasource is the template variable ${DS_SLUICE_POSTGRES} (a Grafana PostgreSQL
datasource pointing at the pipeline's database, with a read-only user). The SQL uses only
Grafana's PostgreSQL macros $__timeFilter(col), $__timeFrom(), $__timeTo() and
$__timeGroupAlias(col, 1m); `--markdown` prints the panel/query table of
docs/operations.md.
"""
import json
import sys

DS = {"type": "grafana-postgresql-datasource", "uid": "${DS_SLUICE_POSTGRES}"}

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


def panel(title, sql, fmt, kind, unit="short", x=0, w=12, h=8, description="", stack=False, options=None):
    """One panel with one SQL target; fmt is Grafana's `format`: time_series or table."""
    assert fmt in ("time_series", "table"), fmt
    p = {
        "type": kind,
        "title": title,
        "id": _id(),
        "description": description,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": _y[0]},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": options or {},
        "targets": [{"datasource": DS, "refId": "A", "editorMode": "code", "format": fmt,
                     "rawQuery": True, "rawSql": sql}],
    }
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {
            "drawStyle": "bars" if stack else "line", "lineWidth": 1, "fillOpacity": 60 if stack else 10,
            "showPoints": "never", "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        }
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    panels.append(p)
    return p


def next_line(h=8):
    _y[0] += h


# Revenue of one row: quantity is 0 only for views, so purchases carry all of it.
REVENUE = "price * quantity"

row("Traffic and revenue (by event time)")
panel("Rows per minute",
      """SELECT $__timeGroupAlias(event_time, 1m), count(*) AS "rows"
FROM events
WHERE $__timeFilter(event_time)
GROUP BY 1
ORDER BY 1""",
      "time_series", "timeseries", unit="short", x=0, w=12,
      description="Valid rows stored in `events`, by the minute of their event_time "
                  "(when the event happened, not when it was loaded).")
panel("Revenue per minute",
      f"""SELECT $__timeGroupAlias(event_time, 1m), sum({REVENUE}) AS "revenue"
FROM events
WHERE event_type = 'purchase' AND $__timeFilter(event_time)
GROUP BY 1
ORDER BY 1""",
      "time_series", "timeseries", unit="currencyUSD", x=12, w=12,
      description="sum(price × quantity) of purchase events, by the minute of their event_time.")
next_line()
panel("Revenue by category",
      f"""SELECT category, sum({REVENUE}) AS "revenue", count(*) AS "purchases", sum(quantity) AS "units"
FROM events
WHERE event_type = 'purchase' AND $__timeFilter(event_time)
GROUP BY category
ORDER BY revenue DESC, category""",
      "table", "bargauge", unit="currencyUSD", x=0, w=12,
      options={"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
               "reduceOptions": {"calcs": [], "fields": "/^revenue$/", "values": True}},
      description="Purchase revenue per product category in the time range, largest first.")
panel("Funnel: view → cart → purchase",
      """SELECT s.stage, count(e.event_type) AS "events", count(DISTINCT e.session_id) AS "sessions"
FROM (VALUES (1, 'view'), (2, 'add_to_cart'), (3, 'purchase')) AS s(step, stage)
LEFT JOIN events e ON e.event_type = s.stage AND $__timeFilter(e.event_time)
GROUP BY s.step, s.stage
ORDER BY s.step""",
      "table", "bargauge", unit="short", x=12, w=12,
      options={"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
               "reduceOptions": {"calcs": [], "fields": "/^sessions$/", "values": True}},
      description="Events and distinct sessions at each step in the time range. The sessions "
                  "bar is the funnel; the table view also shows event counts.")
next_line()

row("Quality and files (by commit time)")
panel("Quarantine by reason",
      """SELECT $__timeGroupAlias(quarantined_at, 1m), reason AS "metric", count(*) AS "rows"
FROM quarantine
WHERE $__timeFilter(quarantined_at)
GROUP BY 1, 2
ORDER BY 1, 2""",
      "time_series", "timeseries", unit="short", x=0, w=12, stack=True,
      description="Rows sent to quarantine per minute, by reason code, on the time they were "
                  "committed (a rejected row may have no readable event_time).")
panel("Slowest files",
      """WITH b AS (
  SELECT batch_id, pipeline, worker_id, files, committed_at,
         extract(epoch from committed_at - lag(committed_at) OVER (
           PARTITION BY pipeline, worker_id ORDER BY committed_at)) AS "gap_s"
  FROM sluice_batches
  WHERE committed_at BETWEEN $__timeFrom()::timestamptz - interval '1 hour' AND $__timeTo()
)
SELECT f.file_name AS "file", f.pipeline, f.worker_id AS "worker", f.outcome,
       b.gap_s AS "batch_seconds", b.files AS "batch_files",
       f.file_size AS "bytes", f.rows_loaded, f.rows_rejected, f.parts, f.committed_at
FROM sluice_files f
JOIN b ON b.batch_id = f.batch_id
WHERE $__timeFilter(f.committed_at)
ORDER BY b.gap_s DESC NULLS LAST, f.file_size DESC, f.file_name
LIMIT 20""",
      "table", "table", unit="short", x=12, w=12,
      description="Files whose batch took longest. The ledger stores commit times, not when a "
                  "file landed or when its batch started: batch_seconds is the time since the "
                  "same worker's previous commit, an upper bound on the batch's work (idle time "
                  "waiting for files counts too; empty for a worker's first batch).")
next_line()


dashboard = {
    "title": "Sluice business",
    "uid": "sluice-business",
    "description": "What the ingested e-commerce events say: rows and revenue per minute, revenue by "
                   "category, the view → cart → purchase funnel, quarantine by reason and the slowest "
                   "files, read from PostgreSQL. Queries: docs/operations.md#business-dashboard.",
    "tags": ["sluice"],
    "editable": True,
    "graphTooltip": 1,
    "schemaVersion": 39,
    "version": 1,
    "refresh": "1m",
    "time": {"from": "now-6h", "to": "now"},
    "timezone": "",
    "annotations": {"list": []},
    "links": [{"title": "Sluice operations", "type": "dashboards", "tags": ["sluice"], "asDropdown": False}],
    "templating": {"list": [
        {"name": "DS_SLUICE_POSTGRES", "label": "PostgreSQL", "type": "datasource",
         "query": "grafana-postgresql-datasource", "current": {}, "hide": 0, "refresh": 1, "regex": ""},
    ]},
    "panels": panels,
}

if sys.argv[1:] == ["--markdown"]:
    # The panel/query table of docs/operations.md.
    for p in panels:
        if p["type"] == "row":
            print(f"\n**{p['title']}**\n")
            print("| panel | format | SQL |")
            print("|---|---|---|")
            continue
        t = p["targets"][0]
        sql = " ".join(t["rawSql"].split()).replace("|", "\\|")
        print(f"| {p['title']} | {t['format']} | `{sql}` |")
else:
    json.dump(dashboard, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
