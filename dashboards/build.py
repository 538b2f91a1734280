#!/usr/bin/env python3
"""Builds orderflow's Grafana dashboards as code and writes them to dashboards/grafana/.

    python3 dashboards/build.py            rewrite dashboards/grafana/*.json
    python3 dashboards/build.py --check    exit 1, with a diff, if the committed JSON is not
                                           what this script generates
    python3 dashboards/build.py --queries  print every PromQL expression, one per line

The dashboards are built with Grafana's own builder library, grafana-foundation-sdk (PyPI),
pinned in dashboards/requirements.txt; without it the script exits 2 and says how to install it.
Every panel reads the Prometheus data source of the `datasource` variable (the provisioned one
has uid `prometheus`) and filters on the `role` label (serve, ingest, stage, project) that every
orderflow process puts on its series.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "grafana"
REQUIREMENTS = HERE / "requirements.txt"
SDK = "grafana-foundation-sdk"


def pinned_sdk() -> str:
    """The `grafana-foundation-sdk==…` line of requirements.txt, or the bare name."""
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith(SDK):
            return line
    return SDK


try:
    from grafana_foundation_sdk.builders import common as cb
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.builders import prometheus as prom
    from grafana_foundation_sdk.builders import stat, statetimeline, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common as cm
    from grafana_foundation_sdk.models import dashboard as dm
except ImportError as error:
    print(
        f"dashboards/build.py: the Grafana builder library is not installed ({error}).\n"
        f"Install it with:  python3 -m pip install -r dashboards/requirements.txt\n"
        f"             (or: pip install grafana-foundation-sdk, pinned as '{pinned_sdk()}')",
        file=sys.stderr,
    )
    sys.exit(2)


# --- shared pieces -----------------------------------------------------------------------

DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every query filters on the role variable; its "All" value is `.*`.
ROLE = 'role=~"$role"'
RATE = "1m"

# Every expression any panel uses, in order, for --queries.
QUERIES: list[str] = []


def q(expr: str, legend: str = "", instant: bool = False) -> tuple[str, str, bool]:
    return (expr, legend, instant)


def targets(queries: list[tuple[str, str, bool]]) -> list:
    built = []
    for index, (expr, legend, instant) in enumerate(queries):
        QUERIES.append(expr)
        target = prom.Dataquery().expr(expr).ref_id(chr(ord("A") + index)).datasource(DS)
        if legend:
            target = target.legend_format(legend)
        target = target.instant() if instant else target.range()
        built.append(target)
    return built


def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=color) for value, color in steps])
    )


GREEN = thresholds((None, "green"))


def series(
    title: str,
    description: str,
    queries: list[tuple[str, str, bool]],
    unit: str,
    width: int = 8,
    height: int = 8,
    stacked: bool = False,
    limit: tuple[float, str] | None = None,
) -> timeseries.Panel:
    """A time series panel; `limit` draws a dashed threshold line (value, colour)."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .targets(targets(queries))
        .unit(unit)
        .min(0)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(10)
        .show_points(cm.VisibilityMode.NEVER)
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
        )
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    if stacked:
        panel = panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    if limit is not None:
        value, color = limit
        panel = panel.thresholds(thresholds((None, "green"), (value, color))).thresholds_style(
            cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED)
        )
    else:
        panel = panel.thresholds(GREEN)
    return panel


def single(
    title: str,
    description: str,
    expr: str,
    unit: str,
    width: int = 4,
    height: int = 5,
    steps: tuple[tuple[float | None, str], ...] = ((None, "green"),),
    decimals: float | None = None,
) -> stat.Panel:
    """A stat panel: the last value of one expression, with a sparkline."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .targets(targets([q(expr)]))
        .unit(unit)
        .span(width)
        .height(height)
        .thresholds(thresholds(*steps))
        .color_mode(cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .text_mode(cm.BigValueTextMode.VALUE)
        .justify_mode(cm.BigValueJustifyMode.AUTO)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .no_value("0")
    )
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel


def quantiles(metric: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99), legend: str = "") -> list:
    """histogram_quantile queries of `metric` (a histogram's base name) at each of `qs`."""
    group = f"le, {by}" if by else "le"
    out = []
    for quantile in qs:
        name = f"p{round(quantile * 100):d}"
        out.append(
            q(
                f"histogram_quantile({quantile}, sum by ({group}) (rate({metric}_bucket{{{ROLE}}}[{RATE}])))",
                f"{legend} {name}".strip() if legend else name,
            )
        )
    return out


def dashboard(title: str, uid: str, description: str, rows: list[tuple[str, list]]) -> dm.Dashboard:
    board = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["orderflow"])
        .editable()
        .timezone("browser")
        .time("now-1h", "now")
        .refresh("10s")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .link(
            db.DashboardLink("orderflow dashboards")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["orderflow"])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
        .with_variable(
            db.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .current(dm.VariableOption(text="Prometheus", value="prometheus"))
        )
        .with_variable(
            db.QueryVariable("role")
            .label("Role")
            .description("The role label every orderflow process puts on its series: serve, ingest, stage or project.")
            .datasource(DS)
            .query("label_values(orderflow_ready, role)")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(dm.VariableOption(text="All", value="$__all"))
        )
    )
    next_id = 1
    for row_title, panels in rows:
        board = board.with_row(db.Row(row_title).id(next_id))
        next_id += 1
        for panel in panels:
            board = board.with_panel(panel.id(next_id))
            next_id += 1
    return board.build()


# --- overview ----------------------------------------------------------------------------


def overview() -> dm.Dashboard:
    checkouts = [
        single(
            "Accepted checkouts/s",
            "rate(orderflow_checkouts_total{outcome=\"accepted\"}[1m]), summed: checkouts the ingest "
            "appended durably to the log and answered 202.",
            f'sum(rate(orderflow_checkouts_total{{outcome="accepted", {ROLE}}}[{RATE}]))',
            "reqps",
            decimals=1,
        ),
        single(
            "Completed orders/s",
            "rate(orderflow_orders_terminal_total{status=\"completed\"}[1m]), summed: orders the "
            "projector saw reach orders.completed.",
            f'sum(rate(orderflow_orders_terminal_total{{status="completed", {ROLE}}}[{RATE}]))',
            "ops",
            decimals=1,
        ),
        single(
            "Rejected orders/s",
            "rate(orderflow_orders_terminal_total{status=\"rejected\"}[1m]), summed: orders the "
            "projector saw reach orders.rejected (any stage, or the expiry sweeper).",
            f'sum(rate(orderflow_orders_terminal_total{{status="rejected", {ROLE}}}[{RATE}]))',
            "ops",
            decimals=2,
        ),
        single(
            "End-to-end p99",
            "histogram_quantile(0.99) of orderflow_order_lifetime_seconds over 1m: accepted_at to "
            "the terminal status, measured by the projector.",
            f"histogram_quantile(0.99, sum by (le) (rate(orderflow_order_lifetime_seconds_bucket{{{ROLE}}}[{RATE}])))",
            "s",
            steps=((None, "green"), (0.05, "orange"), (0.1, "red")),
        ),
        single(
            "DLQ depth",
            "sum of the orderflow_dlq_depth gauge: dead letters on the T.dlq topics not yet "
            "replayed (embedded log).",
            f"sum(orderflow_dlq_depth{{{ROLE}}})",
            "short",
            steps=((None, "green"), (1, "red")),
        ),
        single(
            "Dead-lettered (1h)",
            "increase(orderflow_stage_dead_lettered_total[1h]), summed: records the stage runners "
            "gave up on and appended to a T.dlq topic in the last hour.",
            f"sum(increase(orderflow_stage_dead_lettered_total{{{ROLE}}}[1h]))",
            "short",
            steps=((None, "green"), (1, "red")),
            decimals=0,
        ),
        series(
            "Checkouts/s by outcome",
            "rate(orderflow_checkouts_total[1m]) by outcome: accepted, and each kind of refusal "
            "the ingest answered without appending (rate_limited: over a [limits] budget; shed: "
            "over limits.max_backlog).",
            [q(f"sum by (outcome) (rate(orderflow_checkouts_total{{{ROLE}}}[{RATE}]))", "{{outcome}}")],
            "reqps",
        ),
        series(
            "Refused checkouts/s by reason",
            "rate(orderflow_checkouts_refused_total[1m]) by reason: the problem type the ingest "
            "answered with (malformed-request, unauthorized, invalid-request, rate-limited, …).",
            [
                q(
                    f"sum by (reason) (rate(orderflow_checkouts_refused_total{{{ROLE}}}[{RATE}]))",
                    "{{reason}}",
                )
            ],
            "reqps",
        ),
        series(
            "Terminal orders/s by status",
            "rate(orderflow_orders_terminal_total[1m]) by status (completed, rejected), counted by "
            "the projector.",
            [q(f"sum by (status) (rate(orderflow_orders_terminal_total{{{ROLE}}}[{RATE}]))", "{{status}}")],
            "ops",
            stacked=True,
        ),
        series(
            "Rejected orders/s by code",
            "rate(orderflow_orders_rejected_total[1m]) by rejection code (out_of_stock, "
            "payment_declined, …), counted by the stage that rejected.",
            [q(f"sum by (code) (rate(orderflow_orders_rejected_total{{{ROLE}}}[{RATE}]))", "{{code}}")],
            "ops",
            stacked=True,
        ),
        series(
            "Cancels and refunds/s",
            "Cancels the API accepted (orderflow_cancels_accepted_total), orders the stages ended "
            "cancelled, by the stage that found the cancel (orderflow_orders_cancelled_total), and "
            "refunds paid or refused by the provider (orderflow_refunds_total by outcome), rate "
            "over 1m.",
            [
                q(f"sum(rate(orderflow_cancels_accepted_total{{{ROLE}}}[{RATE}]))", "cancels accepted"),
                q(
                    f"sum by (stage) (rate(orderflow_orders_cancelled_total{{{ROLE}}}[{RATE}]))",
                    "cancelled at {{stage}}",
                ),
                q(
                    f"sum by (outcome) (rate(orderflow_refunds_total{{{ROLE}}}[{RATE}]))",
                    "refunds {{outcome}}",
                ),
            ],
            "ops",
        ),
        series(
            "End-to-end latency, accept → terminal",
            "p50/p95/p99 of orderflow_order_lifetime_seconds (histogram, rate over 1m): accepted_at "
            "to completed or rejected, measured by the projector.",
            quantiles("orderflow_order_lifetime_seconds"),
            "s",
            width=12,
            limit=(0.1, "red"),
        ),
        series(
            "Checkout answer time",
            "p50/p99 of orderflow_checkout_seconds (histogram, rate over 1m): the ingest's "
            "checkout handler, request to answer.",
            quantiles("orderflow_checkout_seconds", qs=(0.5, 0.99)),
            "s",
            width=12,
        ),
    ]
    dlq = [
        series(
            "DLQ depth by topic",
            "The orderflow_dlq_depth{topic} gauge: dead letters on each T.dlq topic that no "
            "`orderflow dlq replay` has put back yet.",
            [q(f"sum by (topic) (orderflow_dlq_depth{{{ROLE}}})", "{{topic}}")],
            "short",
            width=12,
        ),
        series(
            "Dead letters/s by stage",
            "rate(orderflow_stage_dead_lettered_total[1m]) by stage: records a stage's runner sent "
            "to T.dlq (retries exhausted, or a permanent error).",
            [q(f"sum by (stage) (rate(orderflow_stage_dead_lettered_total{{{ROLE}}}[{RATE}]))", "{{stage}}")],
            "ops",
            width=12,
        ),
    ]
    stages = [
        series(
            "Stage throughput",
            "rate(orderflow_stage_processed_total[1m]) by stage: records each stage's runner "
            "finished, whatever the outcome.",
            [q(f"sum by (stage) (rate(orderflow_stage_processed_total{{{ROLE}}}[{RATE}]))", "{{stage}}")],
            "ops",
        ),
        series(
            "Stage outcomes other than emitted",
            "rate(orderflow_stage_processed_total{outcome!=\"emitted\"}[1m]) by stage and outcome "
            "(rejected, no_output, dead_lettered, interrupted).",
            [
                q(
                    f'sum by (stage, outcome) (rate(orderflow_stage_processed_total{{outcome!="emitted", {ROLE}}}[{RATE}]))',
                    "{{stage}} {{outcome}}",
                )
            ],
            "ops",
        ),
        series(
            "Consumer lag",
            "The orderflow_stage_consumer_lag gauge summed over topics and partitions: records each "
            "consumer group has not committed yet (refreshed every 5 s); and the backlog the API "
            "reads (orderflow_ingest_backlog: the order stages' lag summed, every "
            "limits.backlog_check_ms): above limits.max_backlog new checkouts are refused 503 "
            "(outcome shed).",
            [
                q(f"sum by (stage) (orderflow_stage_consumer_lag{{{ROLE}}})", "{{stage}}"),
                q(f"max(orderflow_ingest_backlog{{{ROLE}}})", "API's backlog reading (all order stages)"),
            ],
            "short",
        ),
        series(
            "Stage processing latency p99",
            "histogram_quantile(0.99) of orderflow_stage_process_seconds by stage over 1m: one "
            "record's process call.",
            [
                q(
                    f"histogram_quantile(0.99, sum by (le, stage) (rate(orderflow_stage_process_seconds_bucket{{{ROLE}}}[{RATE}])))",
                    "{{stage}}",
                )
            ],
            "s",
        ),
        series(
            "Stage batch time p99",
            "histogram_quantile(0.99) of orderflow_stage_batch_seconds by stage over 1m: a whole "
            "batch, from poll to commit.",
            [
                q(
                    f"histogram_quantile(0.99, sum by (le, stage) (rate(orderflow_stage_batch_seconds_bucket{{{ROLE}}}[{RATE}])))",
                    "{{stage}}",
                )
            ],
            "s",
        ),
        series(
            "Stage commit wait p99",
            "histogram_quantile(0.99) of orderflow_stage_commit_seconds by stage over 1m: the wait "
            "for the log to take a batch's outputs and offsets (on Kafka, the broker's "
            "acknowledgement).",
            [
                q(
                    f"histogram_quantile(0.99, sum by (le, stage) (rate(orderflow_stage_commit_seconds_bucket{{{ROLE}}}[{RATE}])))",
                    "{{stage}}",
                )
            ],
            "s",
        ),
        series(
            "Stage flush p99",
            "histogram_quantile(0.99) of orderflow_stage_flush_seconds by stage over 1m: a "
            "stage's own writes before a commit (the projector's order views, hot views and "
            "webhook messages), during which it processes nothing.",
            [
                q(
                    f"histogram_quantile(0.99, sum by (le, stage) (rate(orderflow_stage_flush_seconds_bucket{{{ROLE}}}[{RATE}])))",
                    "{{stage}}",
                )
            ],
            "s",
        ),
        series(
            "Stage wait p99",
            "histogram_quantile(0.99) of orderflow_stage_wait_seconds by stage over 1m: from the "
            "moment an order's status was stamped (by the stage before, or the API) to this "
            "stage taking it up: where each hop queues (the append and commit before it, the "
            "poll, the batch). Across hosts it includes their clock difference.",
            [
                q(
                    f"histogram_quantile(0.99, sum by (le, stage) (rate(orderflow_stage_wait_seconds_bucket{{{ROLE}}}[{RATE}])))",
                    "{{stage}}",
                )
            ],
            "s",
        ),
        series(
            "Kafka record wait p99",
            "histogram_quantile(0.99) of orderflow_kafka_record_wait_seconds by stage over 1m: "
            "from the producer's send of a record to the stage's poll (linger, broker, fetch "
            "wait, backlog). Kafka log only.",
            [
                q(
                    f"histogram_quantile(0.99, sum by (le, stage) (rate(orderflow_kafka_record_wait_seconds_bucket{{{ROLE}}}[{RATE}])))",
                    "{{stage}}",
                )
            ],
            "s",
        ),
        series(
            "Stage failures/s by kind",
            "rate(orderflow_stage_failed_total[1m]) by stage and kind (retryable, permanent, "
            "unavailable): each failed attempt.",
            [
                q(
                    f"sum by (stage, kind) (rate(orderflow_stage_failed_total{{{ROLE}}}[{RATE}]))",
                    "{{stage}} {{kind}}",
                )
            ],
            "ops",
        ),
    ]
    http = [
        series(
            "HTTP requests/s by route",
            "rate(orderflow_http_requests_total[1m]) by matched route (such as /v1/checkouts, "
            "/v1/orders/{id}).",
            [q(f"sum by (route) (rate(orderflow_http_requests_total{{{ROLE}}}[{RATE}]))", "{{route}}")],
            "reqps",
        ),
        series(
            "HTTP 5xx ratio by route",
            "rate of orderflow_http_requests_total{status=~\"5..\"} over all requests, by route, "
            "over 1m (the alert fires above 1 %).",
            [
                # "or … * 0": a route with no 5xx yet shows 0, not a gap.
                q(
                    f'(sum by (route) (rate(orderflow_http_requests_total{{status=~"5..", {ROLE}}}[{RATE}])) '
                    f"or sum by (route) (rate(orderflow_http_requests_total{{{ROLE}}}[{RATE}])) * 0) "
                    f"/ sum by (route) (rate(orderflow_http_requests_total{{{ROLE}}}[{RATE}]))",
                    "{{route}}",
                )
            ],
            "percentunit",
            limit=(0.01, "red"),
        ),
        series(
            "HTTP 4xx ratio by route",
            "rate of orderflow_http_requests_total{status=~\"4..\"} over all requests, by route, "
            "over 1m: refused requests (auth, validation, idempotency, rate limit).",
            [
                # "or … * 0": a route with no 4xx yet shows 0, not a gap.
                q(
                    f'(sum by (route) (rate(orderflow_http_requests_total{{status=~"4..", {ROLE}}}[{RATE}])) '
                    f"or sum by (route) (rate(orderflow_http_requests_total{{{ROLE}}}[{RATE}])) * 0) "
                    f"/ sum by (route) (rate(orderflow_http_requests_total{{{ROLE}}}[{RATE}]))",
                    "{{route}}",
                )
            ],
            "percentunit",
        ),
        series(
            "HTTP latency p99 by route",
            "histogram_quantile(0.99) of orderflow_http_request_duration_seconds by route over 1m.",
            [
                q(
                    f"histogram_quantile(0.99, sum by (le, route) (rate(orderflow_http_request_duration_seconds_bucket{{{ROLE}}}[{RATE}])))",
                    "{{route}}",
                )
            ],
            "s",
            width=12,
        ),
        series(
            "Problems/s by type",
            "rate(orderflow_http_problems_total[1m]) by RFC 9457 problem type the API answered "
            "(/problems/unauthorized, /problems/unavailable, …).",
            [q(f"sum by (type) (rate(orderflow_http_problems_total{{{ROLE}}}[{RATE}]))", "{{type}}")],
            "reqps",
            width=12,
        ),
    ]
    pricing = [
        series(
            "Processes by pricing tables version",
            "count by version of orderflow_pricing_tables == 1: how many processes price with each "
            "version of the tables (orders record theirs in totals.version). More than one line "
            "for minutes: processes have different table files (an alert fires).",
            [q(f"count by (version) (orderflow_pricing_tables{{{ROLE}}} == 1)", "{{version}}")],
            "short",
        ),
        series(
            "Pricing table reloads by outcome",
            "increase(orderflow_pricing_reloads_total[5m]) by outcome: tables swapped in (ok) or "
            "refused (invalid: the log names the file and entry), by the route or the "
            "pricing-reload chore.",
            [
                q(
                    f"sum by (outcome) (increase(orderflow_pricing_reloads_total{{{ROLE}}}[5m]))",
                    "{{outcome}}",
                )
            ],
            "short",
        ),
        series(
            "Quotes/s",
            "rate(orderflow_quotes_total[1m]): carts priced by POST /v1/quotes.",
            [q(f"sum(rate(orderflow_quotes_total{{{ROLE}}}[{RATE}]))", "quotes")],
            "reqps",
        ),
    ]
    return dashboard(
        "orderflow / Overview",
        "orderflow-overview",
        "Checkouts in, orders out: accepted, completed and rejected rates, end-to-end latency, "
        "dead letters, the stages, the HTTP API and the pricing tables.",
        [
            ("Checkouts and orders", checkouts),
            ("Dead letters", dlq),
            ("Stages", stages),
            ("HTTP API", http),
            ("Pricing", pricing),
        ],
    )


# --- hot path ----------------------------------------------------------------------------


def process_panels() -> list:
    return [
        series(
            "Memory",
            "orderflow_process_resident_memory_bytes per process (what the host gives it), "
            "orderflow_allocator_resident_bytes (pages the allocator holds) and "
            "orderflow_allocator_allocated_bytes (bytes in live allocations): a resident line "
            "that climbs while allocated stays flat is the allocator keeping freed pages; both "
            "climbing is data the process keeps.",
            [
                q(f"sum by (instance) (orderflow_process_resident_memory_bytes{{{ROLE}}})", "resident {{instance}}"),
                q(f"sum by (instance) (orderflow_allocator_resident_bytes{{{ROLE}}})", "allocator resident {{instance}}"),
                q(f"sum by (instance) (orderflow_allocator_allocated_bytes{{{ROLE}}})", "allocated {{instance}}"),
            ],
            "bytes",
            width=12,
        ),
        series(
            "CPU",
            "rate(orderflow_process_cpu_seconds_total[1m]) per process: cores in use (user and "
            "system time, counted in whole seconds).",
            [q(f"sum by (instance) (rate(orderflow_process_cpu_seconds_total{{{ROLE}}}[{RATE}]))", "{{instance}}")],
            "short",
            width=12,
        ),
    ]


def readiness() -> statetimeline.Panel:
    expr = f"min by (instance, dependency) (orderflow_ready{{{ROLE}}})"
    return (
        statetimeline.Panel()
        .title("Readiness by dependency")
        .description(
            "The orderflow_ready{dependency} gauge per process: 1 when its log (dependency=log) "
            "or stock ledger (dependency=ledger) answers, as /readyz checks."
        )
        .datasource(DS)
        .targets(targets([q(expr, "{{instance}} {{dependency}}")]))
        .span(24)
        .height(6)
        .min(0)
        .max(1)
        .thresholds(thresholds((None, "red"), (1, "green")))
        .mappings(
            [
                dm.ValueMap(
                    options={
                        "0": dm.ValueMappingResult(text="not ready", color="red", index=0),
                        "1": dm.ValueMappingResult(text="ready", color="green", index=1),
                    }
                )
            ]
        )
        .show_value(cm.VisibilityMode.NEVER)
        .merge_values(True)
        .fill_opacity(80)
        .legend(cb.VizLegendOptions().show_legend(False).display_mode(cm.LegendDisplayMode.LIST).placement(cm.LegendPlacement.BOTTOM))
    )


def hot_path() -> dm.Dashboard:
    stock = [
        series(
            "Stock available, low-stock SKUs",
            "The orderflow_stock_available{sku} gauge (lowest value any process reports): only "
            "SKUs whose available stock went under the low-stock threshold.",
            [q(f"min by (sku) (orderflow_stock_available{{{ROLE}}})", "{{sku}}")],
            "short",
            width=12,
        ),
        series(
            "Ledger holds in memory",
            "The orderflow_ledger_holds_in_memory gauge per process: stock holds the embedded "
            "ledger keeps in memory.",
            [q(f"sum by (instance) (orderflow_ledger_holds_in_memory{{{ROLE}}})", "{{instance}}")],
            "short",
            width=6,
        ),
        series(
            "Reservations expired/s",
            "rate(orderflow_reservations_expired_total[1m]), summed: holds the expiry sweeper "
            "released and rejected because their TTL ran out.",
            [q(f"sum(rate(orderflow_reservations_expired_total{{{ROLE}}}[{RATE}]))", "expired")],
            "ops",
            width=6,
        ),
    ]
    redis = [
        series(
            "Redis script latency p99 by script",
            "histogram_quantile(0.99) of orderflow_redis_script_seconds by script over 1m: one "
            "Lua script call (stock ledger, idempotency, coupons), client side.",
            [
                q(
                    f"histogram_quantile(0.99, sum by (le, script) (rate(orderflow_redis_script_seconds_bucket{{{ROLE}}}[{RATE}])))",
                    "{{script}}",
                )
            ],
            "s",
        ),
        series(
            "Redis script calls/s by script",
            "rate(orderflow_redis_script_seconds_count[1m]) by script: Lua script calls made "
            "against Redis.",
            [
                q(
                    f"sum by (script) (rate(orderflow_redis_script_seconds_count{{{ROLE}}}[{RATE}]))",
                    "{{script}}",
                )
            ],
            "ops",
        ),
        series(
            "Open WebSockets",
            "The orderflow_websockets_open gauge per process: order status WebSockets "
            "(/v1/orders/{id}/ws) open now.",
            [q(f"sum by (instance) (orderflow_websockets_open{{{ROLE}}})", "{{instance}}")],
            "short",
        ),
    ]
    log = [
        series(
            "Log commit latency",
            "p50/p99 of orderflow_log_commit_seconds (histogram, rate over 1m): one group commit "
            "of the segment log's writer thread, write and fsync.",
            quantiles("orderflow_log_commit_seconds", qs=(0.5, 0.99)),
            "s",
        ),
        series(
            "Log commits/s",
            "rate(orderflow_log_commit_seconds_count[1m]), summed: group commits (fsyncs) of the "
            "segment log's writer.",
            [q(f"sum(rate(orderflow_log_commit_seconds_count{{{ROLE}}}[{RATE}]))", "commits")],
            "ops",
        ),
        series(
            "Log bytes written",
            "rate(orderflow_log_commit_bytes_sum[1m]) (bytes/s, left axis), and _sum/_count of "
            "the same metric (mean bytes per group commit, right axis).",
            [
                q(f"sum(rate(orderflow_log_commit_bytes_sum{{{ROLE}}}[{RATE}]))", "bytes/s"),
                q(
                    f"sum(rate(orderflow_log_commit_bytes_sum{{{ROLE}}}[{RATE}])) "
                    f"/ sum(rate(orderflow_log_commit_bytes_count{{{ROLE}}}[{RATE}]))",
                    "bytes per commit",
                ),
            ],
            "Bps",
        ).override_by_query(
            "B",
            [
                dm.DynamicConfigValue(id_val="unit", value="bytes"),
                dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
            ],
        ),
        series(
            "Log segments",
            "The orderflow_log_segments gauge per process: segment files on disk across all "
            "topic partitions.",
            [q(f"sum by (instance) (orderflow_log_segments{{{ROLE}}})", "{{instance}}")],
            "short",
        ),
        series(
            "Log memory: read cache and index",
            "The orderflow_log_cache_bytes and orderflow_log_index_bytes gauges per process: "
            "bytes of recent records the segment log keeps decoded for readers, and bytes of "
            "its index (four a kept record, in 64 KiB chunks).",
            [
                q(f"sum by (instance) (orderflow_log_cache_bytes{{{ROLE}}})", "cache {{instance}}"),
                q(f"sum by (instance) (orderflow_log_index_bytes{{{ROLE}}})", "index {{instance}}"),
            ],
            "bytes",
        ),
        series(
            "Log records trimmed/s",
            "rate(orderflow_log_trimmed_total[1m]), summed: what retention removed from the "
            "segment log.",
            [q(f"sum(rate(orderflow_log_trimmed_total{{{ROLE}}}[{RATE}]))", "trimmed")],
            "ops",
        ),
    ]
    store = [
        series(
            "Embedded store commit latency",
            "p50/p99 of orderflow_embedded_commit_seconds (histogram, rate over 1m): one group "
            "commit of the redb writer thread.",
            quantiles("orderflow_embedded_commit_seconds", qs=(0.5, 0.99)),
            "s",
        ),
        series(
            "Embedded store writes per commit",
            "orderflow_embedded_commit_group_size _sum/_count over 1m: mean writes the redb "
            "writer groups into one commit.",
            [
                q(
                    f"sum(rate(orderflow_embedded_commit_group_size_sum{{{ROLE}}}[{RATE}])) "
                    f"/ sum(rate(orderflow_embedded_commit_group_size_count{{{ROLE}}}[{RATE}]))",
                    "writes per commit",
                )
            ],
            "short",
        ),
        series(
            "Writer threads busy",
            "rate(orderflow_embedded_commit_seconds_sum[1m]) and "
            "rate(orderflow_log_commit_seconds_sum[1m]) per process: the share of time the "
            "embedded stores' writer and the segment log's writer spend committing. Each is one "
            "thread every store or log write of the process waits for: near 100 % it is the "
            "process's limit, and every hop that writes waits longer (BENCHMARKS.md).",
            [
                q(
                    f"sum by (instance) (rate(orderflow_embedded_commit_seconds_sum{{{ROLE}}}[{RATE}]))",
                    "stores {{instance}}",
                ),
                q(
                    f"sum by (instance) (rate(orderflow_log_commit_seconds_sum{{{ROLE}}}[{RATE}]))",
                    "log {{instance}}",
                ),
            ],
            "percentunit",
            limit=(0.8, "orange"),
        ),
        series(
            "Data directory disk used",
            "The orderflow_data_dir_bytes gauge per process: bytes under the data directory "
            "(segment log and redb file).",
            [q(f"sum by (instance) (orderflow_data_dir_bytes{{{ROLE}}})", "{{instance}}")],
            "bytes",
        ),
    ]
    return dashboard(
        "orderflow / Hot path",
        "orderflow-hot-path",
        "What the checkout hot path leans on: stock and the ledger, Redis scripts, WebSockets, "
        "the segment log, the embedded store, disk and readiness.",
        [
            ("Stock and ledger", stock),
            ("Redis and WebSockets", redis),
            ("Segment log", log),
            ("Embedded store and disk", store),
            ("Process: CPU and memory", process_panels()),
            ("Readiness", [readiness()]),
        ],
    )


# --- output ------------------------------------------------------------------------------

DASHBOARDS = {
    "overview.json": overview,
    "hot-path.json": hot_path,
}


def render() -> dict[str, str]:
    QUERIES.clear()
    return {
        name: json.dumps(build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def installed_sdk() -> str | None:
    try:
        from importlib.metadata import version

        return version(SDK)
    except Exception:  # noqa: BLE001 - only used for a hint
        return None


def check(rendered: dict[str, str]) -> int:
    problems = []
    for name, text in rendered.items():
        path = OUT_DIR / name
        rel = path.relative_to(HERE.parent)
        if not path.exists():
            problems.append(f"{rel} is missing")
            continue
        committed = path.read_text()
        if committed != text:
            diff = list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"{rel} (committed)",
                    f"{rel} (generated)",
                )
            )
            shown = "".join(diff[:200])
            more = f"\n… {len(diff) - 200} more diff lines\n" if len(diff) > 200 else ""
            problems.append(f"{rel} differs from what dashboards/build.py generates:\n{shown}{more}")
    for path in sorted(OUT_DIR.glob("*.json")):
        if path.name not in rendered:
            problems.append(f"{path.relative_to(HERE.parent)} is not generated by dashboards/build.py (remove it)")
    if not problems:
        print(f"dashboards/build.py --check: {len(rendered)} dashboards match dashboards/grafana/")
        return 0
    for problem in problems:
        print(problem, file=sys.stderr)
    print("Run `python3 dashboards/build.py` and commit dashboards/grafana/.", file=sys.stderr)
    pinned = pinned_sdk()
    have = installed_sdk()
    if have is not None and "==" in pinned and pinned.split("==", 1)[1] != have:
        print(
            f"Note: {SDK} {have} is installed but {pinned} is pinned; "
            "install the pinned version (python3 -m pip install -r dashboards/requirements.txt).",
            file=sys.stderr,
        )
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description="Build orderflow's Grafana dashboards.")
    parser.add_argument("--check", action="store_true", help="exit 1 if dashboards/grafana/ is stale")
    parser.add_argument("--queries", action="store_true", help="print every PromQL expression")
    args = parser.parse_args()
    rendered = render()
    if args.queries:
        seen = set()
        for expr in QUERIES:
            if expr not in seen:
                seen.add(expr)
                print(expr)
        return 0
    if args.check:
        return check(rendered)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        path = OUT_DIR / name
        if path.exists() and path.read_text() == text:
            print(f"unchanged {path.relative_to(HERE.parent)}")
        else:
            path.write_text(text)
            print(f"wrote     {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
