"""Copy the alert groups of deploy/prometheus/alerts.yml into the PrometheusRule of monitoring.yaml.

Run by ``make rules`` after editing alerts.yml (tests/deploy/test_k8s.py fails while they differ). Everything
in monitoring.yaml above the PrometheusRule's ``spec:`` (comments included) is kept as written.
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE.parent / "prometheus" / "alerts.yml"
MONITORING = HERE / "monitoring.yaml"
MARK = "spec:\n  groups:"


def main() -> None:
    text = MONITORING.read_text(encoding="utf-8")
    if text.count(MARK) != 1:
        raise SystemExit(f"{MONITORING}: expected one PrometheusRule '{MARK}' block at the end")
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    body = yaml.safe_dump({"spec": {"groups": groups}}, sort_keys=False, width=110)
    MONITORING.write_text(text[: text.index(MARK)] + body, encoding="utf-8")
    print(f"{MONITORING.name}: {sum(len(g['rules']) for g in groups)} rules from {ALERTS.name}")


if __name__ == "__main__":
    main()
