"""``selector replay --compare A.json B.json``: two replay summaries' key figures side by side.

The figures: the rates (query, audit, accept, skip), labels spent against the budget and the shortfall,
accept precision overall and per predicted class with 95% intervals, defect capture, accepted wrongly per
true class, each reserved share binding or not, and the configuration keys that differ (only those), each
with the difference B - A where a difference means something (percentage points for rates). Printed as
aligned text, or written as one self-contained HTML page.

Two summaries are comparable when they replayed the same records (the same input ``digest``). Summaries of
one source whose record counts differ (a topic that grew, a file appended to) are compared with a warning;
anything else is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Literal

from connectors.offline.html import interval, page, pct, table
from connectors.offline.recorded import ReplayUsageError

Kind = Literal["rate", "number", "interval", "value"]

REQUIRED = ("input", "config", "items", "routes", "rates", "spend", "shortfall")
"""Top-level keys every replay summary has."""


@dataclass(frozen=True)
class Row:
    """One figure of both summaries: how to show it (``kind``) and its value in A and in B."""

    section: str
    name: str
    kind: Kind
    a: Any
    b: Any


def load_summary(path: str) -> dict[str, Any]:
    """Read a replay summary (the JSON ``selector replay`` prints).

    Raises:
        ReplayUsageError: the file cannot be read, is not JSON, or is not a replay summary.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ReplayUsageError(f"--compare: cannot read {path!r}: {reason}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplayUsageError(
            f"--compare: {path!r} is not a replay summary (not JSON: {exc.msg} at line {exc.lineno}); "
            "give the JSON that 'selector replay' prints on stdout"
        ) from exc
    missing = [k for k in REQUIRED if not isinstance(data, dict) or k not in data]
    if missing:
        raise ReplayUsageError(
            f"--compare: {path!r} is not a replay summary (missing {', '.join(map(repr, missing))}); "
            "give the JSON that 'selector replay' prints on stdout"
        )
    return dict(data)


def check_inputs(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Whether A and B replayed the same records; returns a warning when they replayed one source whose
    record count differs.

    Raises:
        ReplayUsageError: the summaries replayed different inputs.
    """
    ia, ib = a["input"], b["input"]
    if ia.get("digest") is not None and ia.get("digest") == ib.get("digest"):
        return None
    same_source = ia.get("source") == ib.get("source")
    counts = f"A {ia.get('records')} records, B {ib.get('records')}"
    if same_source and ia.get("records") != ib.get("records"):
        return (
            f"the inputs' record counts differ ({counts}) though both replayed {ia.get('source')!r}: "
            "the figures are over different records"
        )
    if same_source and (ia.get("digest") is None or ib.get("digest") is None):
        return None  # a summary from before digests: the source is all there is to go by
    what = "other records" if same_source else f"A {ia.get('source')!r}, B {ib.get('source')!r}"
    raise ReplayUsageError(
        f"--compare: the summaries replayed different inputs ({what}; {counts}; digests "
        f"{ia.get('digest')} and {ib.get('digest')}): replay the same input with both configurations"
    )


ROUTES = ("query", "audit", "accept", "skip")

CAPTURE: tuple[tuple[str, Kind, str], ...] = (
    ("capture", "rate", "caught / defects"),
    ("random_capture", "rate", "random sampling, same label rate"),
    ("caught", "number", "caught"),
    ("labeled", "number", "labeled"),
    ("accepted_correctly", "number", "accepted correctly"),
    ("missed", "number", "missed"),
    ("accepted_wrongly", "number", "accepted wrongly"),
    ("skipped", "number", "skipped"),
)

MISSING = "(unset)"
"""How a configuration key one summary does not have is shown."""


def _per_class(s: dict[str, Any], key: str, *path: str) -> dict[str, Any]:
    section = s.get(key) or {}
    out: dict[str, Any] = {}
    for name, entry in (section.get("by_class") or {}).items():
        value = entry
        for p in path:
            value = value.get(p) if isinstance(value, dict) else None
        out[name] = value
    return out


def _union(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [*a, *(k for k in b if k not in a)]


def rows(a: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    """The figures compared, in display order."""
    out: list[Row] = [Row("replay", "items decided", "number", a["items"], b["items"])]
    out += [Row("rates", f"{r} rate", "rate", a["rates"].get(r), b["rates"].get(r)) for r in ROUTES]
    out.append(
        Row("rates", "label rate (query + audit)", "rate", a["rates"].get("label"), b["rates"].get("label"))
    )
    out += [
        Row("budget", "labels spent", "number", a["spend"]["labels"], b["spend"]["labels"]),
        Row("budget", "labels budgeted (items x rate)", "number", _budgeted(a), _budgeted(b)),
        Row(
            "budget",
            "shortfall (labels unspent)",
            "number",
            a["shortfall"]["labels"],
            b["shortfall"]["labels"],
        ),
    ]
    pa, pb = a.get("accept") or {}, b.get("accept") or {}
    out.append(
        Row("accept precision [95%]", "all classes", "interval", pa.get("precision"), pb.get("precision"))
    )
    ca, cb = _per_class(a, "accept", "precision"), _per_class(b, "accept", "precision")
    out += [
        Row("accept precision [95%]", name, "interval", ca.get(name), cb.get(name)) for name in _union(ca, cb)
    ]
    da, db = a.get("defect_capture") or {}, b.get("defect_capture") or {}
    out += [Row("defect capture", label, kind, da.get(key), db.get(key)) for key, kind, label in CAPTURE]
    ka, kb = _per_class(a, "defect_capture", "capture"), _per_class(b, "defect_capture", "capture")
    out += [Row("defect capture", f"caught / {n}", "rate", ka.get(n), kb.get(n)) for n in _union(ka, kb)]
    wa, wb = (
        _per_class(a, "ground_truth", "accepted_wrongly"),
        _per_class(b, "ground_truth", "accepted_wrongly"),
    )
    if any(v is not None for v in (*wa.values(), *wb.values())):
        out += [
            Row("accepted wrongly (true class)", n, "number", wa.get(n), wb.get(n)) for n in _union(wa, wb)
        ]
    ra, rb = a["config"].get("reserved") or {}, b["config"].get("reserved") or {}
    out += [
        Row("reserved shares", n, "value", _binding(ra.get(n)), _binding(rb.get(n))) for n in _union(ra, rb)
    ]
    sa, sb = settings_pair(a, b)
    out += [
        Row("configuration (keys that differ)", k, "value", sa.get(k, MISSING), sb.get(k, MISSING))
        for k in sorted(set(sa) | set(sb))
        if sa.get(k, MISSING) != sb.get(k, MISSING)
    ]
    return out


def _binding(pool: dict[str, Any] | None) -> str:
    if pool is None:
        return MISSING
    state = "binding" if pool["binding"] else "not binding"
    return f"{pool['share']:g}: {state}, {pool['labels']} labels"


def _budgeted(s: dict[str, Any]) -> float:
    return round(float(s["items"]) * float(s["rates"]["target"]), 3)


def settings_pair(a: dict[str, Any], b: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both summaries' decision settings as flat keys (``config.settings``); when one summary predates them,
    both ``config`` tables flattened the way that one has them, so the same keys are set side by side."""
    if all("settings" in s["config"] for s in (a, b)):
        return dict(a["config"]["settings"]), dict(b["config"]["settings"])
    return _legacy(a["config"]), _legacy(b["config"])


LEGACY_KEYS = (
    "classes",
    "measure",
    "rate",
    "audit_rate",
    "exploration",
    "controller",
    "caps",
    "class_shares",
    "segment_shares",
    "seed",
)
"""The ``config`` table of summaries written before ``config.settings``."""


def _legacy(c: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k in LEGACY_KEYS:
        v = c.get(k)
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        elif k in c:
            flat[k] = v
    return flat


def fmt(kind: Kind, v: Any) -> str:
    """One cell: a rate as a percentage, an interval with its bounds, a number, or a setting as JSON."""
    if v is None:
        return "-"
    if kind == "rate":
        return pct(v)
    if kind == "interval":
        return interval(v, 2)
    if kind == "number":
        return str(int(v)) if float(v).is_integer() else f"{v:.2f}"
    return v if isinstance(v, str) else json.dumps(v)


def diff(kind: Kind, a: Any, b: Any) -> str:
    """B - A: percentage points for rates and precisions, a signed number for counts, nothing for settings."""
    if kind == "interval":
        a, b = (x.get("estimate") if isinstance(x, dict) else None for x in (a, b))
    if kind == "value" or a is None or b is None:
        return ""
    d = float(b) - float(a)
    if kind in ("rate", "interval"):
        return f"{100 * d:+.2f} pp" if round(100 * d, 2) else "0.00 pp"
    if d.is_integer():
        return f"{int(d):+d}" if d else "0"
    return f"{d:+.2f}"


def _cells(r: Row) -> list[str]:
    """A row as shown: its name, A, B and B - A."""
    return [r.name, fmt(r.kind, r.a), fmt(r.kind, r.b), diff(r.kind, r.a, r.b)]


def _title(path: str, s: dict[str, Any]) -> str:
    inp = s["input"]
    return (
        f"{path} (config {s['config'].get('hash')}, {inp.get('source', '?')}, {inp.get('records')} records)"
    )


def render_text(paths: tuple[str, str], a: dict[str, Any], b: dict[str, Any]) -> str:
    """The comparison as aligned text: one block per section, columns A, B and B - A."""
    table_rows = rows(a, b)
    cells = [_cells(r) for r in table_rows]
    width = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(("", "A", "B", "B - A"))]
    lines = [f"A: {_title(paths[0], a)}", f"B: {_title(paths[1], b)}"]
    section = None
    for r, c in zip(table_rows, cells, strict=True):
        if r.section != section:
            section = r.section
            lines += [
                "",
                section,
                "  " + "  ".join(h.rjust(w) for h, w in zip(("", "A", "B", "B - A"), width, strict=True)),
            ]
        lines.append(
            "  "
            + c[0].ljust(width[0])
            + "".join("  " + x.rjust(w) for x, w in zip(c[1:], width[1:], strict=True))
        )
    if not any(r.section.startswith("configuration") for r in table_rows):
        lines += ["", "configuration: no decision setting differs"]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def render_html(paths: tuple[str, str], a: dict[str, Any], b: dict[str, Any], warning: str | None) -> str:
    """The comparison as a self-contained HTML page: the same sections as tables."""
    parts = [
        "<h1>selector replay: two configurations compared</h1>",
        f'<p class="sub">A: {escape(_title(paths[0], a))}<br>B: {escape(_title(paths[1], b))}</p>',
    ]
    if warning:
        parts.append(f'<div class="cards"><div class="card warn"><span>{escape(warning)}</span></div></div>')
    by_section: dict[str, list[list[str]]] = {}
    for r in rows(a, b):
        by_section.setdefault(r.section, []).append(_cells(r))
    for section, body in by_section.items():
        parts.append(f"<h2>{escape(section)}</h2>" + table(["", "A", "B", "B - A"], body))
    parts.append("<h2>Configurations</h2>" + table(["key", "A", "B"], _config_table(a, b)))
    return page("selector replay: compare", parts)


def _config_table(a: dict[str, Any], b: dict[str, Any]) -> list[list[str]]:
    sa, sb = settings_pair(a, b)
    return [[k, fmt("value", sa.get(k, MISSING)), fmt("value", sb.get(k, MISSING))] for k in _union(sa, sb)]


def compare(paths: tuple[str, str], report: str | None) -> tuple[str, str | None]:
    """Load and check both summaries; write the HTML page to ``report`` if given; return the text and the
    warning about the inputs, if any.

    Raises:
        ReplayUsageError: a file is not a replay summary, the summaries replayed different inputs, or the
            report's directory does not exist.
    """
    a, b = (load_summary(p) for p in paths)
    warning = check_inputs(a, b)
    if report is not None:
        target = Path(report)
        if not target.resolve().parent.is_dir():
            raise ReplayUsageError(f"--report: directory of {report!r} does not exist")
        target.write_text(render_html(paths, a, b, warning), encoding="utf-8")
    return render_text(paths, a, b), warning
