"""The accept side in the replay's HTML report: accept precision per predicted class, defect capture against
random sampling, and the outcomes per true class, for records that carry a ground-truth ``label``."""

from __future__ import annotations

from html import escape
from typing import Any

from connectors.offline.html import card, interval, pct, table
from connectors.web.svg import PALETTE, Series, bar_chart


def accept_cards(s: dict[str, Any]) -> list[str]:
    """Accept precision and defect capture, and a warning for every class whose precision's upper bound is
    under its accept threshold."""
    acc, dc = s.get("accept"), s.get("defect_capture")
    if not acc or not acc["with_label"]:
        return []
    out = [card(interval(acc["precision"], 2), "accept precision (95% interval)")]
    if dc and dc["items"]:
        worse = dc["capture"] < dc["random_capture"]
        out.append(
            card(pct(dc["capture"], 1), f"defect capture (random: {pct(dc['random_capture'], 1)})", worse)
        )
    out += [
        card(
            f"{name} {interval(v['precision'])}",
            f"accept precision of {name} is below its threshold {v['threshold']:g}: "
            "the threshold accepts items it should not",
            warn=True,
        )
        for name, v in acc["by_class"].items()
        if v["below_threshold"]
    ]
    return out


NO_LABEL = (
    '<p class="note">no record carried a ground-truth <code>label</code> field: add one (the true class '
    "name) to measure {what}</p>"
)

INTERVAL_NOTE = (
    '<p class="note">Counts are exact for the replayed records; the 95% interval (Wilson) is the range a new '
    "stream of the same size from the same process would show.</p>"
)


def accept_section(s: dict[str, Any]) -> str:
    """Accept precision per predicted class with its interval and threshold, and overall."""
    acc = s.get("accept")
    title = "<h2>Accept precision per predicted class</h2>"
    if not acc or not acc["with_label"]:
        return title + NO_LABEL.format(what="the precision of auto-accepted predictions")
    rows = [
        [
            name,
            f"{v['threshold']:g}",
            str(v["accepted"]),
            str(v["with_label"]),
            str(v["correct"]),
            str(v["wrong"]),
            interval(v["precision"], 2),
            "upper bound below threshold" if v["below_threshold"] else "",
        ]
        for name, v in acc["by_class"].items()
    ]
    p = acc["precision"]
    rows.append(
        [
            "all",
            "",
            str(acc["accepted"]),
            str(acc["with_label"]),
            str(acc["correct"]),
            str(acc["with_label"] - acc["correct"]),
            interval(p, 2),
            "",
        ]
    )
    head = ["predicted", "threshold", "accepted", "with label", "correct", "wrong", "precision [95%]", ""]
    return title + table(head, rows) + INTERVAL_NOTE


def defect_capture_section(s: dict[str, Any]) -> str:
    """Defects caught (labeled, accepted correctly) and missed, per defect class, against random sampling."""
    dc = s.get("defect_capture")
    title = "<h2>Defect capture</h2>"
    if not dc or not dc["items"]:
        return title + NO_LABEL.format(what="which defects were caught, against random sampling")
    by = {**dc["by_class"], "all defects": dc}
    names = [c for c in by if by[c]["items"]]
    chart = bar_chart(
        names,
        [
            Series("caught (labeled or accepted correctly)", [by[c]["capture"] for c in names], PALETTE[0]),
            Series(
                "random sampling at the same label rate", [by[c]["random_capture"] for c in names], "#aaa"
            ),
        ],
        title="Capture of each defect class vs random sampling at the same label rate",
        value_format=lambda v: f"{v:.1%}",
    )
    rows = [
        [
            c,
            str(v["items"]),
            str(v["caught"]),
            str(v["labeled"]),
            str(v["accepted_correctly"]),
            str(v["missed"]),
            str(v["accepted_wrongly"]),
            str(v["skipped"]),
            pct(v["capture"], 1),
            pct(v["random_capture"], 1),
        ]
        for c, v in by.items()
    ]
    head = [
        "true class",
        "items",
        "caught",
        "labeled",
        "accepted correctly",
        "missed",
        "accepted wrongly",
        "skipped",
        "capture",
        "random",
    ]
    return (
        title
        + chart
        + table(head, rows)
        + '<p class="note">A defect is caught when it was labeled or auto-accepted as its own class, '
        "missed when accepted as another class or skipped. Random: labeling a uniform share of the items at "
        f"the same label rate ({pct(dc['label_rate'])}) and accepting the rest by the same rule.</p>"
    )


def truth_section(s: dict[str, Any]) -> str:
    """Outcomes per true class, and each class's labeled share against random sampling (the enrichment)."""
    gt = s["ground_truth"]
    title = "<h2>Outcomes per true class</h2>"
    if not gt["items"]:
        return title + NO_LABEL.format(what="outcomes per true class")
    by = gt["by_class"]
    names = [c for c in by if by[c]["items"]]
    chart = bar_chart(
        names,
        [
            Series("labeled share of the class", [by[c]["recall"] for c in names], PALETTE[0]),
            Series("random sampling at the same budget", [by[c]["random_recall"] for c in names], "#aaa"),
        ],
        title="Labeled share of each true class vs random sampling at equal budget",
        value_format=lambda v: f"{v:.1%}",
    )
    rows = [
        [
            c,
            str(v["items"]),
            str(v.get("accepted_correctly", "-")),
            str(v.get("accepted_wrongly", "-")),
            str(v["labeled"]),
            str(v["queried"]),
            str(v.get("skipped", "-")),
            pct(v["recall"], 1),
            pct(v["random_recall"], 1),
            "-" if v["enrichment"] is None else f"{v['enrichment']:.2f}x",
        ]
        for c, v in by.items()
    ]
    head = [
        "true class",
        "items",
        "accepted correctly",
        "accepted wrongly",
        "labeled",
        "queried",
        "skipped",
        "labeled share",
        "random",
        "enrichment",
    ]
    unknown = gt["unknown_labels"]
    note = (
        f'<p class="note">labels not among the classes (ignored): {escape(str(unknown))}</p>'
        if unknown
        else ""
    )
    return (
        title
        + chart
        + table(head, rows)
        + f'<p class="note">{gt["items"]} items carry a label, {gt["labeled"]} of them were labeled; '
        "enrichment = share of the class among labeled items / its share among all items.</p>" + note
    )
