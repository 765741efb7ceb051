"""`selector label-studio`: a bridge between the to-label topic, a Label Studio project and the labels topic.

Flows:

- **to-label → tasks.** The to-label topic is consumed in the group ``<kafka.group_id>-label-studio``. Each
  record becomes a task (``data``: ``text``, a readable rendering of the payload, and ``selector_id``,
  ``payload``, ``meta``, ``route``, ``score``) with the model's answer as a pre-annotation (a prediction:
  ``model_version``, ``score`` the informativeness, a ``choices`` result with the predicted class), imported
  in batches (``POST /api/projects/{id}/import``). Per polled batch:

  1. records that are not JSON objects with a string ``id`` become dead letters (stage ``label-studio``), and
     one whose task cannot be built or JSON-encoded too (stage ``encode``, reason ``encode_error``): the
     others of the batch go on;
  2. items that already have a task (the map ``selector_id → task id`` is read from the project at start and
     kept as tasks are imported) are skipped;
  3. the others are imported and Label Studio confirms them; a batch it refuses (HTTP 400) is retried one
     task at a time, and a task it still refuses is dead-lettered (reason ``rejected``);
  4. the dead letters are acknowledged by Kafka;
  5. the offsets are committed.

- **annotations → labels.** A webhook (``POST /webhook`` on ``webhook_host:webhook_port``, registered in the
  project at start for ``ANNOTATION_CREATED``, ``ANNOTATION_UPDATED`` and ``ANNOTATIONS_DELETED``) turns an
  annotation into ``{id, label, annotator, ts}`` keyed by the item id (``ts``: the annotation's
  ``updated_at``; ``annotator``: the user's email, else the user id), and a deleted (or skipped) annotation
  into the same message with ``label: null``, a retraction. The webhook answers 200 only once Kafka
  acknowledged the message. An annotation whose choice is not a configured class, or on a task without a
  ``selector_id``, is logged and counted (``ignored``), not produced: it is not a label of ours, and Label
  Studio keeps it. Every ``poll_interval_s`` (and once at start, over the whole project) the tasks updated
  since the last poll are listed with their annotations, and whatever changed since it was last seen
  (annotation id → ``updated_at``) is produced: this catches what the webhook missed while the bridge was
  down or unreachable, including deletions of annotations the bridge had seen.

Guarantees: a to-label record is never lost (offsets commit after Label Studio confirmed its task); it never
becomes two tasks while one bridge serves the project (the map), but a redelivery after an import whose
answer was lost re-reads the project's tasks first. An annotation's label is never lost (the webhook, else
the next poll); it may be produced twice (after a restart every annotation is produced again, or when the
webhook and a poll race), which the label loop ignores. A deletion is retracted when the webhook reports it
or a poll finds a seen annotation gone; one made while the bridge was down is not seen (Label Studio keeps
no trace of it). Run one bridge per project.

Authentication: a personal access token or a legacy token (:mod:`connectors.label_studio.api`). The tasks
and votes are built by :mod:`connectors.label_studio.tasks`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError

from connectors.kafka.clients import make_consumer, make_producer, prepare_topics, redact, secrets_of
from connectors.kafka.delivery import Outgoing, dead_letter, deliver, refused_to_dead_letter
from connectors.label_studio.api import LabelStudioClient, LabelStudioError, LabelStudioUnavailableError
from connectors.label_studio.tasks import (
    Vote,
    choices_names,
    label_config,
    label_message,
    parse_time,
    read_vote,
    task_for,
)
from selector.config import Config
from selector.errors import ConfigError, SelectorError
from selector.messages.timestamps import rfc3339
from selector.messages.to_label import ToLabelRecord, read_to_label

log = logging.getLogger(__name__)

WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
POLL_OVERLAP_S = 60.0
"""Polls re-list tasks updated this long before the last one seen: a transaction that commits late is not
missed, and what was already seen produces nothing."""
IMPORT_BATCH = 500
PAGE_SIZE = 100


@dataclass
class _Change:
    """Messages to deliver and the state and counters they bring once acknowledged."""

    outgoing: list[Outgoing]
    seen: dict[int, Vote | None]
    counts: Counter[str]


class LabelStudioBridge:
    """Keep a Label Studio project and the to-label and labels topics in step until :meth:`request_stop`."""

    def __init__(self, config: Config, servers: str, client: LabelStudioClient | None = None) -> None:
        ls = config.label_studio
        if ls.token is None and client is None:
            raise ConfigError(["'label_studio.token' is required: a personal access token or a legacy token"])
        self.config = config
        self.servers = servers
        self.client = client or LabelStudioClient(ls.url, ls.token.get_secret_value() if ls.token else "")
        self.label_config = ls.label_config or label_config(config.classes)
        self.names = choices_names(self.label_config)
        self.project_id: int | None = None
        self.tasks_imported = self.duplicates_skipped = self.labels_produced = 0
        self.retractions = self.ignored = self.dead_letters = 0
        self.polls = 0
        """completed polls of the project's annotations (the first reads the whole project)"""
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the webhook thread and the polls share the state and the producer
        self._tasks: dict[str, int] = {}
        self._seen: dict[int, Vote] = {}
        self._by_task: dict[int, set[int]] = {}
        self._users: dict[int, str] = {}
        self._watermark: datetime | None = None
        self._secrets = secrets_of(config)
        self._producer: Any = None
        self._server: ThreadingHTTPServer | None = None

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def webhook_url(self) -> str:
        ls = self.config.label_studio
        port = self._server.server_address[1] if self._server else ls.webhook_port
        return ls.webhook_url or f"http://{ls.webhook_host}:{port}/webhook"

    def run(self, duration_s: float | None = None) -> None:
        """Serve the webhook, import to-label records and poll annotations until stopped."""
        cfg = self.config
        ends = None if duration_s is None else time.monotonic() + duration_s
        if cfg.kafka.create_topics:
            prepare_topics(cfg, self.servers)
        self._producer = make_producer(cfg, self.servers)
        consumer = make_consumer(cfg, self.servers, group_id=f"{cfg.kafka.group_id}-label-studio")
        try:
            self.project_id = self.ensure_project()
            self._server = self._serve_webhook()
            self.ensure_webhook()
            self.poll()  # the whole project: the task map, and every annotation
            consumer.subscribe([cfg.topics.to_label])
            next_poll = time.monotonic() + cfg.label_studio.poll_interval_s
            while not self._stop.is_set() and (ends is None or time.monotonic() < ends):
                polled = consumer.poll(timeout_ms=500, max_records=IMPORT_BATCH)
                records = [r for batch in polled.values() for r in batch]
                if records:
                    self._import_until_done(records)
                    try:
                        consumer.commit()
                    except CommitFailedError as exc:  # rebalanced meanwhile: redelivered, then skipped
                        log.warning(
                            "offsets not committed (%s); the records will be skipped as duplicates", exc
                        )
                if time.monotonic() >= next_poll:
                    self._poll_safely()
                    next_poll = time.monotonic() + cfg.label_studio.poll_interval_s
        finally:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
            consumer.close(autocommit=False)
            self._producer.close(timeout=5)

    # -- the project and the webhook ------------------------------------------------------------------------

    def ensure_project(self) -> int:
        """The id of the project titled ``label_studio.project``, created with the label config if missing."""
        title = self.config.label_studio.project
        page: dict[str, Any] = self.client.call(
            "GET", "/api/projects/", query={"title": title, "page_size": 100}
        )
        while True:
            for project in page.get("results", []):
                if project.get("title") == title:
                    with contextlib.suppress(ConfigError):  # the project's own interface names the choice
                        self.names = choices_names(str(project.get("label_config") or ""))
                    return int(project["id"])
            if not page.get("next"):
                break
            nxt = urllib.parse.urlparse(page["next"])
            page = self.client.call("GET", nxt.path, query=dict(urllib.parse.parse_qsl(nxt.query)))
        created = self.client.call(
            "POST", "/api/projects/", {"title": title, "label_config": self.label_config}
        )
        log.info("created Label Studio project %r (id %s)", title, created["id"])
        return int(created["id"])

    def ensure_webhook(self) -> int:
        """Register the webhook in the project, reusing (and if need be fixing) one with the same URL."""
        want = {
            "url": self.webhook_url,
            "project": self.project_id,
            "send_payload": True,
            "send_for_all_actions": False,
            "is_active": True,
            "actions": list(WEBHOOK_ACTIONS),
        }
        hooks = self.client.call("GET", "/api/webhooks/", query={"project": self.project_id})
        for hook in hooks if isinstance(hooks, list) else hooks.get("results", []):
            if hook.get("url") == want["url"] and hook.get("project") == self.project_id:
                same = all(
                    hook.get(k) == want[k] for k in ("send_payload", "send_for_all_actions", "is_active")
                )
                if not same or set(hook.get("actions") or ()) != set(WEBHOOK_ACTIONS):
                    self.client.call("PATCH", f"/api/webhooks/{hook['id']}/", want)
                return int(hook["id"])
        return int(self.client.call("POST", "/api/webhooks/", want)["id"])

    def _serve_webhook(self) -> ThreadingHTTPServer:
        ls = self.config.label_studio
        server = ThreadingHTTPServer((ls.webhook_host, ls.webhook_port), _webhook_handler(self))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="label-studio-webhook", daemon=True).start()
        log.info("Label Studio webhook listening on %s:%d", *server.server_address[:2])
        return server

    def on_webhook(self, event: dict[str, Any]) -> None:
        """Produce the labels one webhook call carries (returns once Kafka acknowledged them)."""
        project = event.get("project")
        pid = project.get("id") if isinstance(project, dict) else project
        if pid is not None and pid != self.project_id:
            return
        action = event.get("action")
        with self._lock:
            change = _Change([], {}, Counter())
            if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
                self._see(change, event["task"], event["annotation"])
            elif action == "ANNOTATIONS_DELETED":
                for ann in event.get("annotations") or []:
                    self._gone(change, int(ann["id"]), datetime.now(UTC))
            self._apply(change)

    # -- to-label records into tasks ------------------------------------------------------------------------

    def _import_until_done(self, records: list[ConsumerRecord]) -> None:
        delay = 1.0
        while True:
            try:
                self.import_records(records)
                return
            except LabelStudioUnavailableError as exc:
                if self._stop.is_set():
                    raise
                log.warning("%s; retrying the batch in %.0f s", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
                self._load_tasks()  # an import whose answer was lost may have created its tasks

    def import_records(self, records: list[ConsumerRecord]) -> None:
        """Steps 1 to 4 of the module docstring (the caller commits the offsets)."""
        cfg = self.config
        at = rfc3339(time.time())
        dlq: list[Outgoing] = []
        fresh: dict[str, tuple[ConsumerRecord, dict[str, Any]]] = {}
        for rec in records:
            read = read_to_label(rec.value)
            if not isinstance(read, ToLabelRecord):
                dlq.append(self._dead(rec, read.reason, read.message, at))
                continue
            rid = read.id
            if rid in self._tasks or rid in fresh:
                self.duplicates_skipped += 1
            else:
                try:  # one odd record must not stop the batch: built and encoded alone
                    task = task_for(read.value, cfg.classes, self.names)
                    orjson.dumps(task)
                except Exception as exc:
                    why = f"cannot build or encode its task: {type(exc).__name__}: {exc}"
                    dlq.append(self._dead(rec, "encode_error", why, at, stage="encode"))
                    continue
                fresh[rid] = (rec, task)
        items = list(fresh)
        for start in range(0, len(items), IMPORT_BATCH):
            chunk = items[start : start + IMPORT_BATCH]
            try:
                self._import([fresh[i][1] for i in chunk], chunk)
            except LabelStudioError as exc:
                if exc.status != 400:
                    raise
                for rid in chunk:  # find the task Label Studio refuses; import the others
                    try:
                        self._import([fresh[rid][1]], [rid])
                    except LabelStudioError as one:
                        if one.status != 400:
                            raise
                        dlq.append(self._dead(fresh[rid][0], "rejected", str(one), at))
        if dlq:
            refused = refused_to_dead_letter(
                cfg.topics.dead_letter, rfc3339(time.time()), cfg.kafka.max_request_size
            )
            deliver(
                self._producer, dlq, cfg.kafka.outage_deadline_s, self._undeliverable("dead letters"), refused
            )
            self.dead_letters += len(dlq)

    def _import(self, tasks: list[dict[str, Any]], items: list[str]) -> None:
        answer = self.client.call(
            "POST", f"/api/projects/{self.project_id}/import", tasks, {"return_task_ids": "true"}, retry=False
        )
        ids = answer.get("task_ids")
        if ids is None and "import" in answer:  # Label Studio Enterprise imports in the background
            ids = self._await_import(int(answer["import"]))
        if ids is None or len(ids) != len(items):
            self._load_tasks()
        else:
            self._tasks.update(zip(items, (int(i) for i in ids), strict=True))
        self.tasks_imported += len(items)

    def _await_import(self, import_id: int) -> list[int] | None:
        while True:
            state = self.client.call("GET", f"/api/projects/{self.project_id}/imports/{import_id}/")
            if state.get("status") == "completed":
                return list(state.get("task_ids") or []) or None
            if state.get("status") == "failed":
                raise LabelStudioError(
                    "POST", f"/api/projects/{self.project_id}/import", 400, state.get("error")
                )
            self._stop.wait(0.5)

    def _load_tasks(self) -> None:
        for task in self._tasks_pages(include="id,data"):
            item = (task.get("data") or {}).get("selector_id")
            if isinstance(item, str):
                self._tasks[item] = int(task["id"])

    def _dead(
        self, rec: ConsumerRecord, reason: str, message: str, at: str, stage: str = "label-studio"
    ) -> Outgoing:
        topic = self.config.topics.dead_letter
        secrets = self._secrets + self.client.secrets()
        return dead_letter(
            topic, rec, stage, reason, message, at, secrets, self.config.kafka.max_request_size
        )

    def _undeliverable(self, what: str) -> Any:
        return lambda exc: (
            f"{what} of the Label Studio bridge undeliverable: {redact(str(exc), self._secrets)}"
        )

    # -- annotations into labels ----------------------------------------------------------------------------

    def poll(self) -> None:
        """Produce what changed in the tasks updated since the last poll (the first: every task)."""
        filters = None
        if self._watermark is not None:
            since = (self._watermark - timedelta(seconds=POLL_OVERLAP_S)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            after = {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime"}
            filters = {"conjunction": "and", "items": [{**after, "value": since}]}
        newest = self._watermark
        for task in self._tasks_pages(
            include="id,data,updated_at,annotations,result,completed_by,was_cancelled", filters=filters
        ):
            item = (task.get("data") or {}).get("selector_id")
            if isinstance(item, str):
                self._tasks[item] = int(task["id"])
            updated = parse_time(task["updated_at"])
            with self._lock:
                change = _Change([], {}, Counter())
                for annotation in task.get("annotations") or []:
                    self._see(change, task, annotation)
                present = {int(a["id"]) for a in task.get("annotations") or []}
                for gone in self._by_task.get(int(task["id"]), set()) - present:
                    if self._seen[gone].updated_at <= updated:  # else the webhook saw it after this listing
                        self._gone(change, gone, updated)
                self._apply(change)
            newest = updated if newest is None else max(newest, updated)
        self._watermark = newest
        self.polls += 1

    def _poll_safely(self) -> None:
        try:
            self.poll()
        except LabelStudioUnavailableError as exc:
            log.warning("annotations not polled: %s", exc)

    def _tasks_pages(self, include: str, filters: dict[str, Any] | None = None) -> Any:
        query = {"ordering": ["tasks:id"], **({"filters": filters} if filters else {})}
        page = 1
        while True:
            try:
                answer = self.client.call(
                    "GET",
                    "/api/tasks/",
                    query={
                        "project": self.project_id,
                        "fields": "all",
                        "include": include,
                        "page": page,
                        "page_size": PAGE_SIZE,
                        "query": json.dumps(query),
                    },
                )
            except LabelStudioError as exc:
                if exc.status == 404 and page > 1:  # "Invalid page": the listing shrank meanwhile
                    return
                raise
            tasks = answer.get("tasks") or []
            yield from tasks
            if len(tasks) < PAGE_SIZE:
                return
            page += 1

    def _annotator(self, annotation: dict[str, Any]) -> str:
        who = annotation.get("completed_by")
        if isinstance(who, dict):
            return str(who.get("email") or who.get("id"))
        if not isinstance(who, int):
            return "unknown"
        if who not in self._users:
            try:
                user = self.client.call("GET", f"/api/users/{who}/")
                self._users[who] = str(user.get("email") or who)
            except LabelStudioError as exc:
                log.warning("annotator %d kept as an id: %s", who, exc)
                return str(who)
        return self._users[who]

    def _current(self, change: _Change, annotation: int) -> Vote | None:
        return change.seen[annotation] if annotation in change.seen else self._seen.get(annotation)

    def _see(self, change: _Change, task: dict[str, Any], annotation: dict[str, Any]) -> None:
        aid = int(annotation["id"])
        vote = read_vote(task, annotation, self.names[0], self.config.classes, self._annotator(annotation))
        before = self._current(change, aid)
        if before is not None and before.updated_at >= vote.updated_at:
            return
        change.seen[aid] = vote
        if vote.label is not None and vote.item is not None:
            change.outgoing.append(self._message(vote.item, vote.label, vote.annotator, vote.updated_at))
            change.counts["labels_produced"] += 1
            return
        log.info("annotation %d on task %d produces no label: %s", aid, vote.task, vote.why)
        if before is not None and before.label is not None and before.item is not None:
            change.outgoing.append(self._message(before.item, None, before.annotator, vote.updated_at))
            change.counts["retractions"] += 1
        if vote.why != "skipped":
            change.counts["ignored"] += 1

    def _gone(self, change: _Change, annotation: int, at: datetime) -> None:
        before = self._current(change, annotation)
        if before is None:
            return
        change.seen[annotation] = None
        if before.label is None or before.item is None:
            return
        ts = max(at, before.updated_at + timedelta(milliseconds=1))
        candidates = self._by_task.get(before.task, set()) | set(change.seen)
        also = [
            v
            for a in sorted(candidates - {annotation})
            if (v := self._current(change, a)) is not None
            and v.label is not None
            and (v.item, v.annotator) == (before.item, before.annotator)
        ]
        if also:  # the annotator's other annotation of the item stands
            change.outgoing.append(self._message(before.item, also[-1].label, before.annotator, ts))
            change.counts["labels_produced"] += 1
        else:
            change.outgoing.append(self._message(before.item, None, before.annotator, ts))
            change.counts["retractions"] += 1

    def _message(self, item: str, label: str | None, annotator: str, ts: datetime) -> Outgoing:
        return (self.config.topics.labels, item.encode(), label_message(item, label, annotator, ts), None)

    def _apply(self, change: _Change) -> None:
        """Deliver the change's messages, then (once acknowledged) remember what they say."""
        if change.outgoing:
            deliver(
                self._producer,
                change.outgoing,
                self.config.kafka.outage_deadline_s,
                self._undeliverable("labels"),
            )
        for aid, vote in change.seen.items():
            old = self._seen.pop(aid, None)
            if old is not None:
                self._by_task.get(old.task, set()).discard(aid)
            if vote is not None:
                self._seen[aid] = vote
                self._by_task.setdefault(vote.task, set()).add(aid)
        self.labels_produced += change.counts["labels_produced"]
        self.retractions += change.counts["retractions"]
        self.ignored += change.counts["ignored"]


def _webhook_handler(bridge: LabelStudioBridge) -> type[BaseHTTPRequestHandler]:
    class WebhookHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.split("?")[0].rstrip("/") != "/webhook":
                self._answer(404, b"not found")
                return
            try:
                event = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            except (orjson.JSONDecodeError, ValueError):
                self._answer(400, b"not JSON")
                return
            try:
                bridge.on_webhook(event if isinstance(event, dict) else {})
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("ignored a malformed webhook call: %s", exc)
                self._answer(400, b"malformed")
            except SelectorError as exc:  # not acknowledged: the next poll produces it
                log.error("webhook not handled: %s", exc)
                self._answer(503, b"not delivered")
            else:
                self._answer(200, b"ok")

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("webhook: " + format, *args)  # noqa: G003 (http.server hands us its format)

    return WebhookHandler
