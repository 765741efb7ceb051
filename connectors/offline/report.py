"""The replay's HTML report: one self-contained file (inline CSS and SVG, no script, nothing fetched) with
the charts of the what-if summary and the same numbers in tables."""

from __future__ import annotations

from html import escape
from typing import Any

from connectors.offline.html import card, num, page, pct, table
from connectors.offline.report_accept import (
    accept_cards,
    accept_section,
    defect_capture_section,
    truth_section,
)
from connectors.web.svg import PALETTE, Series, bar_chart, line_chart

ROUTE_COLORS = {"accept": "#2ca02c", "query": "#1f77b4", "audit": "#9467bd", "skip": "#7f7f7f"}


def _time_label(text: str, same_day: bool) -> str:
    if len(text) < 16 or text[10] != "T":
        return text
    return text[11:16] if same_day else text[5:16].replace("T", " ")


def render_report(summary: dict[str, Any]) -> str:
    """The HTML page of a replay summary (as returned by :func:`connectors.offline.replay.replay`)."""
    parts = [_header(summary), _over_time(summary), _routes(summary), *_spend(summary)]
    parts += [
        _caps(summary),
        accept_section(summary),
        defect_capture_section(summary),
        truth_section(summary),
    ]
    parts += [_invalid(summary), _config(summary)]
    return page("selector replay report", parts)


def _header(s: dict[str, Any]) -> str:
    inp, t, rates = s["input"], s["time"], s["rates"]
    ratio = rates["label_vs_target"]
    caps = s["caps"]
    cards = [
        card(pct(rates["label"]), f"label rate (target {pct(rates['target'])})"),
        card(pct(ratio, 1), "realized / target", warn=ratio is not None and abs(ratio - 1) > 0.02),
        card(pct(rates["query"]), "query rate"),
        card(pct(rates["audit"], 3), f"audit rate (target {pct(rates['audit_target'], 3)})"),
        card(pct(rates["accept"], 1), "auto-accept rate"),
        card(f"{s['invalid']['total']}", "invalid records", warn=s["invalid"]["total"] > 0),
    ]
    short = s.get("shortfall")
    if short and short["labels"] > 0:
        why = ", ".join(f"{k} {v:g}" for k, v in short["by_reason"].items() if v > 0)
        cards.append(card(f"{short['labels']:g}", f"labels unspent ({why})", warn=True))
    cards += [
        card(f"{c['min_headroom']} / {c['cap']}", f"least {h} cap headroom", warn=c["reached"])
        for h, c in caps.items()
    ]
    cards += accept_cards(s)
    return (
        "<h1>selector replay: what-if report</h1>"
        f'<p class="sub">{escape(str(inp.get("source", "")))} · {inp["records"]} records, '
        f"{s['items']} decided · {escape(str(t['first']))} to {escape(str(t['last']))} · "
        f"config {escape(s['config']['hash'])}</p>"
        f'<div class="cards">{"".join(cards)}</div>'
    )


def _bucket_labels(s: dict[str, Any]) -> list[str]:
    buckets = s["over_time"]["buckets"]
    first, last = s["time"]["first"] or "", s["time"]["last"] or ""
    same_day = first[:10] == last[:10]
    return [_time_label(b["from"], same_day) for b in buckets]


def _over_time(s: dict[str, Any]) -> str:
    ot = s["over_time"]
    buckets = ot["buckets"]
    n = len(buckets)
    target = s["rates"]["target"]
    chart = line_chart(
        [
            Series("label rate (query + audit)", [b["label_rate"] for b in buckets], PALETTE[0]),
            Series("query rate", [b["query"] / b["items"] for b in buckets], PALETTE[4]),
            Series("cumulative label rate", _cumulative(buckets), PALETTE[1]),
            Series("target", [target] * n, "#333", dashed=True),
        ],
        title=f"Label rate per {ot['bucket_items']} items vs target",
        x_labels=_bucket_labels(s),
        y_format=lambda v: f"{v:.1%}",
        y_max=max([target * 2, *(b["label_rate"] or 0 for b in buckets)]),
        x_title="record time at the start of each bucket of items",
    )
    rows = [
        [
            str(b["first_item"]),
            str(b["items"]),
            str(b["labels"]),
            str(b["query"]),
            str(b["audit"]),
            pct(b["label_rate"]),
            b["from"],
            b["to"],
        ]
        for b in buckets
    ]
    rows_table = table(["first item", "items", "labels", "query", "audit", "label rate", "from", "to"], rows)
    return (
        "<h2>Query rate over time</h2>"
        + chart
        + f"<details><summary>{n} buckets of {ot['bucket_items']} items</summary>{rows_table}</details>"
    )


def _cumulative(buckets: list[dict[str, Any]]) -> list[float | None]:
    out: list[float | None] = []
    labels = items = 0
    for b in buckets:
        labels, items = labels + b["labels"], items + b["items"]
        out.append(labels / items if items else None)
    return out


def _routes(s: dict[str, Any]) -> str:
    routes, n = s["routes"], s["items"]
    names = list(routes)
    chart = bar_chart(
        names,
        [Series("items", [routes[r] for r in names], PALETTE[0])],
        title="Items per route",
        row_colors=[ROUTE_COLORS.get(r, PALETTE[0]) for r in names],
        value_format=lambda v: f"{v:g} ({v / n:.2%})" if n else f"{v:g}",
    )
    rows = [[r, str(routes[r]), pct(routes[r] / n if n else None)] for r in names]
    return "<h2>Routes</h2>" + chart + table(["route", "items", "share"], rows)


def _spend_rows(spend: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [
        [
            name,
            str(v["items"]),
            str(v["labels"]),
            str(v["query"]),
            str(v["audit"]),
            str(v["accept"]),
            pct(v["share"], 1),
            pct(v["reserved_share"], 1),
            pct(v["label_rate"]),
        ]
        for name, v in spend.items()
    ]


SPEND_HEAD = ["", "items", "labels", "query", "audit", "accept", "share of labels", "reserved", "label rate"]


def _spend(s: dict[str, Any]) -> list[str]:
    spend = s["spend"]
    out = []
    for key, title, what in (
        ("by_class", "Spend per predicted class", "predicted class"),
        ("by_segment", "Spend per segment", "segment"),
    ):
        data = spend[key]
        if not data:
            out.append(f'<h2>{title}</h2><p class="note">no items</p>')
            continue
        names = list(data)
        chart = bar_chart(
            names,
            [
                Series("queries", [data[k]["query"] for k in names], PALETTE[0]),
                Series("audits", [data[k]["audit"] for k in names], PALETTE[3]),
            ],
            title=f"Labels per {what}",
        )
        out.append(f"<h2>{title}</h2>" + chart + table(SPEND_HEAD, _spend_rows(data)))
    mech = spend["by_mechanism"]
    names = list(mech)
    chart = bar_chart(
        names,
        [Series("labels", [mech[m]["labels"] for m in names], PALETTE[2])],
        title="Labels per selection mechanism",
    )
    rows = [[m, str(v["labels"]), pct(v["share"], 1)] for m, v in mech.items()]
    out.append(
        "<h2>Spend per mechanism</h2>" + chart + table(["selected by", "labels", "share of labels"], rows)
    )
    return out


def _caps(s: dict[str, Any]) -> str:
    caps = s["caps"]
    if not caps:
        return '<h2>Cap headroom</h2><p class="note">no hard caps configured</p>'
    buckets = s["over_time"]["buckets"]
    series = []
    for i, (h, c) in enumerate(caps.items()):
        used = [
            None if b["min_headroom"][h] is None or not c["cap"] else 1 - b["min_headroom"][h] / c["cap"]
            for b in buckets
        ]
        series.append(Series(f"{h} cap", used, PALETTE[i % len(PALETTE)]))
    series.append(Series("cap", [1.0] * len(buckets), "#333", dashed=True))
    chart = line_chart(
        series,
        title="Peak share of each cap in use (labels in the sliding window / cap), per bucket",
        x_labels=_bucket_labels(s),
        y_format=lambda v: f"{v:.0%}",
        y_max=1.0,
        x_title="record time at the start of each bucket of items",
    )
    rows = [
        [
            h,
            str(c["cap"]),
            f"{c['window_s']:g} s",
            str(c["max_in_window"]),
            str(c["min_headroom"]),
            num(c["reached"]),
            c["first_reached"] or "-",
        ]
        for h, c in caps.items()
    ]
    head = ["horizon", "cap", "window", "peak labels in window", "least headroom", "reached", "first reached"]
    return "<h2>Cap headroom</h2>" + chart + table(head, rows)


def _invalid(s: dict[str, Any]) -> str:
    inv = s["invalid"]
    if not inv["total"]:
        return '<h2>Invalid records</h2><p class="note">none</p>'
    by = table(["reason", "records"], [[r, str(k)] for r, k in inv["by_reason"].items()])
    ex = table(
        ["where", "reason", "message"], [[e["where"], e["reason"], e["message"]] for e in inv["examples"]]
    )
    return (
        f"<h2>Invalid records</h2>{by}<details><summary>first {len(inv['examples'])}</summary>{ex}</details>"
    )


CONFIG_SKIP = ("accept", "reserved", "settings", "class_shares", "segment_shares", "exploration")
"""Keys of the summary's ``config`` shown in their own rows (or, for ``settings``, folded away)."""


def config_rows(c: dict[str, Any]) -> list[list[str]]:
    """The configuration table: the accept side, then the budget, then each reserved share and whether it
    was binding."""
    rows: list[list[str]] = []
    a = c.get("accept")
    if a:
        rows.append(["accept.default_threshold", num(a["default_threshold"])])
        rows += [
            [f"accept.thresholds.{k}", num(v)]
            for k, v in a["thresholds"].items()
            if v != a["default_threshold"]
        ]
        rows.append(["accept.committee_agreement", num(a["committee_agreement"])])
    rows += [
        [k, num(v) if not isinstance(v, dict | list) else str(v)]
        for k, v in c.items()
        if k not in CONFIG_SKIP
    ]
    for name, p in c.get("reserved", {}).items():
        state = "binding" if p["binding"] else "not binding"
        rows.append(
            [
                f"reserved {name}",
                f"{p['share']:g} of the budget: {state} ({p['labels']} labels, {p['unspent_labels']:g} "
                f"of {p['target_labels']:g} unspent, {p['eligible_items']} eligible items)",
            ]
        )
    return rows


def _config(s: dict[str, Any]) -> str:
    c = s["config"]
    extra = ""
    if "settings" in c:
        rows = [[k, num(v) if not isinstance(v, dict | list) else str(v)] for k, v in c["settings"].items()]
        extra = f"<details><summary>every decision setting</summary>{table(['key', 'value'], rows)}</details>"
    note = (
        '<p class="note">A reserved share is binding when the pool spent its whole share (it had more '
        "eligible items than its share bought); not binding when it lost credit for want of eligible "
        "items.</p>"
    )
    return "<h2>Configuration replayed</h2>" + table(["key", "value"], config_rows(c)) + note + extra
