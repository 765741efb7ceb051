"""The replay's HTML report: one self-contained file (inline CSS and SVG, no script, nothing fetched) with
the charts of the what-if summary and the same numbers in tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from connectors.web.svg import PALETTE, Series, bar_chart, line_chart

ROUTE_COLORS = {"accept": "#2ca02c", "query": "#1f77b4", "audit": "#9467bd", "skip": "#7f7f7f"}

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 980px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 32px;
  border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #555; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.card b { display: block; font-size: 20px; } .card span { color: #555; font-size: 12px; }
.warn b { color: #c0392b; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f5f5f5; } td:first-child, th:first-child { text-align: left; }
details { margin: 6px 0; } summary { cursor: pointer; color: #1f5f9f; }
.note { color: #555; font-size: 13px; }
"""


def _pct(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}%}"


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _card(value: str, label: str, warn: bool = False) -> str:
    return (
        f'<div class="card{" warn" if warn else ""}"><b>{escape(value)}</b><span>{escape(label)}</span></div>'
    )


def _time_label(text: str, same_day: bool) -> str:
    if len(text) < 16 or text[10] != "T":
        return text
    return text[11:16] if same_day else text[5:16].replace("T", " ")


def render_report(summary: dict[str, Any]) -> str:
    """The HTML page of a replay summary (as returned by :func:`connectors.offline.replay.replay`)."""
    parts = [_header(summary), _over_time(summary), _routes(summary), *_spend(summary)]
    parts += [_caps(summary), _ground_truth(summary), _invalid(summary), _config(summary)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>selector replay report</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def _header(s: dict[str, Any]) -> str:
    inp, t, rates = s["input"], s["time"], s["rates"]
    ratio = rates["label_vs_target"]
    caps = s["caps"]
    cards = [
        _card(_pct(rates["label"]), f"label rate (target {_pct(rates['target'])})"),
        _card(_pct(ratio, 1), "realized / target", warn=ratio is not None and abs(ratio - 1) > 0.02),
        _card(_pct(rates["query"]), "query rate"),
        _card(_pct(rates["audit"], 3), f"audit rate (target {_pct(rates['audit_target'], 3)})"),
        _card(_pct(rates["accept"], 1), "auto-accept rate"),
        _card(f"{s['invalid']['total']}", "invalid records", warn=s["invalid"]["total"] > 0),
    ]
    short = s.get("shortfall")
    if short and short["labels"] > 0:
        why = ", ".join(f"{k} {v:g}" for k, v in short["by_reason"].items() if v > 0)
        cards.append(_card(f"{short['labels']:g}", f"labels unspent ({why})", warn=True))
    cards += [
        _card(f"{c['min_headroom']} / {c['cap']}", f"least {h} cap headroom", warn=c["reached"])
        for h, c in caps.items()
    ]
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
            _pct(b["label_rate"]),
            b["from"],
            b["to"],
        ]
        for b in buckets
    ]
    table = _table(["first item", "items", "labels", "query", "audit", "label rate", "from", "to"], rows)
    return (
        "<h2>Query rate over time</h2>"
        + chart
        + f"<details><summary>{n} buckets of {ot['bucket_items']} items</summary>{table}</details>"
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
    rows = [[r, str(routes[r]), _pct(routes[r] / n if n else None)] for r in names]
    return "<h2>Routes</h2>" + chart + _table(["route", "items", "share"], rows)


def _spend_rows(spend: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [
        [
            name,
            str(v["items"]),
            str(v["labels"]),
            str(v["query"]),
            str(v["audit"]),
            str(v["accept"]),
            _pct(v["share"], 1),
            _pct(v["reserved_share"], 1),
            _pct(v["label_rate"]),
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
        out.append(f"<h2>{title}</h2>" + chart + _table(SPEND_HEAD, _spend_rows(data)))
    mech = spend["by_mechanism"]
    names = list(mech)
    chart = bar_chart(
        names,
        [Series("labels", [mech[m]["labels"] for m in names], PALETTE[2])],
        title="Labels per selection mechanism",
    )
    rows = [[m, str(v["labels"]), _pct(v["share"], 1)] for m, v in mech.items()]
    out.append(
        "<h2>Spend per mechanism</h2>" + chart + _table(["selected by", "labels", "share of labels"], rows)
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
            _num(c["reached"]),
            c["first_reached"] or "-",
        ]
        for h, c in caps.items()
    ]
    head = ["horizon", "cap", "window", "peak labels in window", "least headroom", "reached", "first reached"]
    return "<h2>Cap headroom</h2>" + chart + _table(head, rows)


def _ground_truth(s: dict[str, Any]) -> str:
    gt = s["ground_truth"]
    if not gt["items"]:
        return (
            '<h2>Defect capture</h2><p class="note">no record carried a ground-truth <code>label</code> '
            "field: add one (the true class name) to measure capture against random sampling</p>"
        )
    by = gt["by_class"]
    names = [c for c in by if by[c]["items"]]
    chart = bar_chart(
        names,
        [
            Series("labeled share of the class (recall)", [by[c]["recall"] for c in names], PALETTE[0]),
            Series("random sampling at the same budget", [by[c]["random_recall"] for c in names], "#aaa"),
        ],
        title="Capture of each true class vs random sampling at equal budget",
        value_format=lambda v: f"{v:.1%}",
    )
    rows = [
        [
            c,
            str(v["items"]),
            str(v["labeled"]),
            str(v["queried"]),
            _pct(v["recall"], 1),
            _pct(v["random_recall"], 1),
            "-" if v["enrichment"] is None else f"{v['enrichment']:.2f}x",
        ]
        for c, v in by.items()
    ]
    head = ["true class", "items", "labeled", "queried", "recall", "random recall", "enrichment"]
    unknown = gt["unknown_labels"]
    note = (
        f'<p class="note">labels not among the classes (ignored): {escape(str(unknown))}</p>'
        if unknown
        else ""
    )
    return (
        "<h2>Defect capture</h2>"
        + chart
        + _table(head, rows)
        + f'<p class="note">{gt["items"]} items carry a label, {gt["labeled"]} of them were labeled; '
        "enrichment = share of the class among labeled items / its share among all items.</p>" + note
    )


def _invalid(s: dict[str, Any]) -> str:
    inv = s["invalid"]
    if not inv["total"]:
        return '<h2>Invalid records</h2><p class="note">none</p>'
    by = _table(["reason", "records"], [[r, str(k)] for r, k in inv["by_reason"].items()])
    ex = _table(
        ["where", "reason", "message"], [[e["where"], e["reason"], e["message"]] for e in inv["examples"]]
    )
    return (
        f"<h2>Invalid records</h2>{by}<details><summary>first {len(inv['examples'])}</summary>{ex}</details>"
    )


def _config(s: dict[str, Any]) -> str:
    rows = [[k, _num(v) if not isinstance(v, dict | list) else str(v)] for k, v in s["config"].items()]
    return "<h2>Configuration replayed</h2>" + _table(["key", "value"], rows)
