"""Label Studio's side of the data, pure: the default labeling interface, a to-label record as a task with
its pre-annotation, and an annotation as a vote and a labels-topic message."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import quoteattr

import orjson

from selector.errors import ConfigError


def label_config(classes: list[str]) -> str:
    """The default labeling interface: the item's text and one single choice per class (XML-escaped)."""
    choices = "".join(f"    <Choice value={quoteattr(c)}/>\n" for c in classes)
    return (
        '<View>\n  <Text name="item" value="$text"/>\n'
        '  <Choices name="label" toName="item" choice="single" showInline="true">\n'
        f"{choices}  </Choices>\n</View>\n"
    )


def choices_names(config_xml: str) -> tuple[str, str]:
    """``(name, toName)`` of the first ``<Choices>`` of a labeling interface: where the class is chosen."""
    try:
        root = ET.fromstring(config_xml)
    except ET.ParseError as exc:
        raise ConfigError([f"'label_studio.label_config' is not valid XML: {exc}"]) from exc
    for el in root.iter("Choices"):
        if el.get("name") and el.get("toName"):
            return el.attrib["name"], el.attrib["toName"]
    raise ConfigError(["'label_studio.label_config' must have a <Choices name=... toName=...> for the class"])


def render_text(record: dict[str, Any]) -> str:
    """What the annotator reads: a string payload or its ``text``, else the payload as indented JSON."""
    payload = record.get("payload")
    if isinstance(payload, str):
        return payload
    if isinstance(payload, dict) and isinstance(payload.get("text"), str):
        return str(payload["text"])
    if payload is None:
        return f"item {record['id']}"
    return json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def task_for(record: dict[str, Any], classes: list[str], names: tuple[str, str]) -> dict[str, Any]:
    """The Label Studio task of one to-label record, with the predicted class as a pre-annotation."""
    data = {"text": render_text(record), "selector_id": record["id"]}
    data |= {k: record.get(k) for k in ("payload", "meta", "route", "score")}
    task: dict[str, Any] = {"data": data}
    predicted = record.get("predicted")
    if isinstance(predicted, int) and not isinstance(predicted, bool) and 0 <= predicted < len(classes):
        predicted = classes[predicted]
    if predicted in classes:
        choice = {
            "from_name": names[0],
            "to_name": names[1],
            "type": "choices",
            "value": {"choices": [predicted]},
        }
        prediction: dict[str, Any] = {
            "model_version": str(record.get("model") or "unknown"),
            "result": [choice],
        }
        score = record.get("score")
        if isinstance(score, int | float) and not isinstance(score, bool):
            prediction["score"] = float(score)
        task["predictions"] = [prediction]
    return task


def parse_time(text: Any) -> datetime:
    """A Label Studio timestamp (RFC 3339, ``Z`` or offset) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(str(text))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def iso(t: datetime) -> str:
    """RFC 3339 in UTC with microseconds (the label loop's later ``ts`` wins, so keep them)."""
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Vote:
    """What one annotation says, as the bridge last saw it; ``label`` None: no label of ours (skipped,
    unknown choice, or a task without ``selector_id``), with the reason in ``why``."""

    task: int
    item: str | None
    annotator: str
    label: str | None
    updated_at: datetime
    why: str = ""


def read_vote(
    task: dict[str, Any], annotation: dict[str, Any], from_name: str, classes: list[str], annotator: str
) -> Vote:
    """The vote of one annotation of a task (both as Label Studio serializes them)."""
    item = (task.get("data") or {}).get("selector_id")
    updated = parse_time(annotation.get("updated_at") or annotation.get("created_at"))
    tid = int(task.get("id") or annotation["task"])
    if not isinstance(item, str) or not item:
        return Vote(tid, None, annotator, None, updated, "task without selector_id")
    if annotation.get("was_cancelled"):
        return Vote(tid, item, annotator, None, updated, "skipped")
    chosen = [
        c
        for r in annotation.get("result") or []
        if r.get("type") == "choices" and r.get("from_name") == from_name
        for c in (r.get("value") or {}).get("choices") or []
    ]
    if len(chosen) != 1 or chosen[0] not in classes:
        return Vote(tid, item, annotator, None, updated, f"choice {chosen!r} is not one configured class")
    return Vote(tid, item, annotator, chosen[0], updated)


def label_message(item: str, label: str | None, annotator: str, ts: datetime) -> bytes:
    """A labels-topic message (``label`` None: a retraction)."""
    return orjson.dumps({"id": item, "label": label, "annotator": annotator, "ts": iso(ts)})
