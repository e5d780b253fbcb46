#!/usr/bin/env python3
"""The auditor's question, filled in with the real OpenTelemetry Python SDK.

An application's audit events over 200 days, sent over OTLP/gRPC with the
SDK's batch processors and exporters: role changes (some older than 90
days, some failed), failed logins, an administrator's configuration change
and an ordinary span the soc2 policy drops; failed logins also as log
records. Each span starts at the time the event happened (the SDK's
`start_time`), which is what `audit_spans.timestamp` must show.

Writes a JSON report: every event sent, with its start time in Unix
nanoseconds and its attributes, so the tests (tests/sql.rs) compute the
answer they expect from it. Exit status 0 when every export was
acknowledged, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

DAY_NS = 86_400 * 1_000_000_000

# (days ago, span name, attributes). user.id becomes enduser.id (the policy's
# `attributes` insert action); audit.result is required by the policy.
EVENTS = [
    (1.5, "user.role.update", {"user.id": "alice", "audit.action": "role_update", "audit.target_user": "bob",
                               "audit.old_value": "viewer", "audit.new_value": "editor", "audit.result": "success"}),
    (2.0, "user.login", {"user.id": "mallory", "audit.action": "login", "audit.result": "failure"}),
    (3.25, "user.login", {"user.id": "mallory", "audit.action": "login", "audit.result": "failure"}),
    (4.0, "config.update", {"user.id": "root", "audit.action": "config_change", "audit.result": "success",
                            "audit.target": "retention"}),
    (5.0, "user.role.update", {"user.id": "carol", "audit.action": "role_update", "audit.target_user": "dave",
                               "audit.old_value": "editor", "audit.new_value": "admin", "audit.result": "failure"}),
    (10.0, "user.role.update", {"user.id": "alice", "audit.action": "role_update", "audit.target_user": "erin",
                                "audit.old_value": "admin", "audit.new_value": "viewer", "audit.result": "success"}),
    (30.5, "user.login", {"user.id": "bob", "audit.action": "login", "audit.result": "success"}),
    (45.0, "user.role.update", {"user.id": "root", "audit.action": "role_update", "audit.target_user": "carol",
                                "audit.old_value": "viewer", "audit.new_value": "admin", "audit.result": "success"}),
    (89.0, "user.role.update", {"user.id": "alice", "audit.action": "role_update", "audit.target_user": "frank",
                                "audit.old_value": "none", "audit.new_value": "viewer", "audit.result": "success"}),
    (91.0, "user.role.update", {"user.id": "alice", "audit.action": "role_update", "audit.target_user": "grace",
                                "audit.old_value": "viewer", "audit.new_value": "editor", "audit.result": "success"}),
    (120.0, "user.role.update", {"user.id": "root", "audit.action": "role_update", "audit.target_user": "alice",
                                 "audit.old_value": "editor", "audit.new_value": "admin", "audit.result": "success"}),
    (200.0, "user.role.update", {"user.id": "root", "audit.action": "role_update", "audit.target_user": "bob",
                                 "audit.old_value": "none", "audit.new_value": "viewer", "audit.result": "failure"}),
    (0.5, "GET /health", {"http.route": "/health"}),  # not audit-relevant: the policy drops it
]

# Failed logins also as log records: (days ago, body, attributes).
LOGS = [
    (2.0, "login failed", {"user.id": "mallory", "audit.action": "login", "audit.result": "failure"}),
    (3.25, "login failed", {"user.id": "mallory", "audit.action": "login", "audit.result": "failure"}),
    (95.0, "login failed", {"user.id": "trent", "audit.action": "login", "audit.result": "failure"}),
]


class Acked:
    """Wraps an exporter: counts what it exported and whether each call succeeded."""

    def __init__(self, inner) -> None:
        self.inner, self.failures = inner, 0

    def export(self, batch, *args, **kwargs):
        result = self.inner.export(batch, *args, **kwargs)
        if getattr(result, "name", None) != "SUCCESS":
            self.failures += 1
        return result

    def __getattr__(self, name):
        return getattr(self.inner, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="OTLP/gRPC endpoint, e.g. http://127.0.0.1:4317")
    parser.add_argument("--out", required=True, help="where the JSON report is written")
    args = parser.parse_args()

    now = time.time_ns()
    resource = Resource.create({"service.name": "accounts", "deployment.environment": "e2e"})
    spans_out = Acked(OTLPSpanExporter(endpoint=args.endpoint, insecure=True))
    logs_out = Acked(OTLPLogExporter(endpoint=args.endpoint, insecure=True))
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(spans_out))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(logs_out))
    tracer = tracer_provider.get_tracer("accounts.audit", "1.0")
    logger = logger_provider.get_logger("accounts.audit", "1.0")

    report = {"spans": [], "logs": []}
    for days, name, attributes in EVENTS:
        start = now - int(days * DAY_NS)
        span = tracer.start_span(name, attributes=attributes, start_time=start)
        span.end(end_time=start + 25_000_000)
        report["spans"].append({"start_time_unix_nano": start, "name": name, "attributes": attributes})
    for days, body, attributes in LOGS:
        at = now - int(days * DAY_NS)
        logger.emit(timestamp=at, observed_timestamp=now, severity_number=SeverityNumber.WARN,
                    severity_text="WARN", body=body, attributes=attributes)
        report["logs"].append({"time_unix_nano": at, "body": body, "attributes": attributes})

    flushed = tracer_provider.force_flush(30_000) and logger_provider.force_flush(30_000)
    tracer_provider.shutdown()
    logger_provider.shutdown()
    report["failures"] = spans_out.failures + logs_out.failures
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return 0 if flushed and report["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
