#!/usr/bin/env python3
"""An "application" instrumented with the real OpenTelemetry Python SDK.

It sends a realistic mix of audit and ordinary spans and log records over
OTLP (gRPC or HTTP/protobuf) with the SDK's own batch processors and OTLP
exporters, and writes a JSON report of what it emitted and of what the
receiver acknowledged. The end-to-end tests of `otel-audit serve` run it in
the venv that `make venv` creates; see tests/e2e/README.md.

Every span and log record carries a unique `audit.event_id` attribute. An
export counts as acknowledged only when the SDK exporter returned SUCCESS
(gRPC OK / HTTP 2xx, after the exporter's own retries); the report lists the
span ids and event ids of every acknowledged export, and of every failed one.

Exit status: 0 every export was acknowledged and the flush finished in time;
1 some export failed or the flush timed out (the report is written anyway);
2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import uuid

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

EVENT_ID_KEY = "audit.event_id"

# Values the soc2-audit policy must strip or mask (see the README beside this file).
AUTHORIZATION = "Bearer eyJhbGciOiJIUzI1NiJ9.e2e-test-token"
COOKIE = "session=e2e-session-cookie"
API_KEY = "k-e2e-123"
VISA = "4111111111111111"
MASTERCARD = "5500000000000004"


def hex_span_id(span_id: int) -> str:
    return format(span_id, "016x")


def hex_trace_id(trace_id: int) -> str:
    return format(trace_id, "032x")


class Ledger:
    """Thread-safe record of what each export call carried and how it ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acked_span_ids: list[str] = []
        self.acked_span_event_ids: list[str] = []
        self.acked_log_event_ids: list[str] = []
        self.failed_span_ids: list[str] = []
        self.failed_log_event_ids: list[str] = []
        self.export_calls = {"traces": 0, "logs": 0}
        self.failures: list[dict] = []

    def spans(self, batch, ok: bool, error: str | None = None) -> None:
        ids = [hex_span_id(s.context.span_id) for s in batch]
        events = [str((s.attributes or {}).get(EVENT_ID_KEY, "")) for s in batch]
        with self._lock:
            self.export_calls["traces"] += 1
            if ok:
                self.acked_span_ids.extend(ids)
                self.acked_span_event_ids.extend(events)
            else:
                self.failed_span_ids.extend(ids)
                self.failures.append({"signal": "traces", "items": len(ids), "error": error})

    def logs(self, batch, ok: bool, error: str | None = None) -> None:
        events = [str((r.log_record.attributes or {}).get(EVENT_ID_KEY, "")) for r in batch]
        with self._lock:
            self.export_calls["logs"] += 1
            if ok:
                self.acked_log_event_ids.extend(events)
            else:
                self.failed_log_event_ids.extend(events)
                self.failures.append({"signal": "logs", "items": len(events), "error": error})


class _ExporterErrors(logging.Handler):
    """Collects what the SDK exporters log at WARNING and above, per thread,
    so that a failed export can be booked with the exporter's own reason."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        sink = getattr(self.local, "sink", None)
        if sink is not None:
            sink.append(record.getMessage())


EXPORTER_ERRORS = _ExporterErrors()


def recording(base: type, ledger: Ledger, signal: str) -> type:
    """A subclass of an SDK OTLP exporter that books every export's outcome."""
    book = ledger.spans if signal == "traces" else ledger.logs

    class Recording(base):  # type: ignore[misc, valid-type]
        def export(self, batch, *args, **kwargs):
            batch = list(batch)
            EXPORTER_ERRORS.local.sink = messages = []
            try:
                result = super().export(batch, *args, **kwargs)
            except Exception as error:  # the batch processor would swallow it; book it first
                book(batch, False, repr(error))
                raise
            finally:
                EXPORTER_ERRORS.local.sink = None
            ok = getattr(result, "name", None) == "SUCCESS"
            reason = f"exporter returned {getattr(result, 'name', result)}"
            book(batch, ok, None if ok else "; ".join([reason, *messages]))
            return result

    Recording.__name__ = f"Recording{base.__name__}"
    return Recording


def make_exporters(args, ledger: Ledger):
    compression_name = args.compression
    if args.protocol == "grpc":
        from grpc import Compression as GrpcCompression

        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        compression = GrpcCompression.Gzip if compression_name == "gzip" else GrpcCompression.NoCompression
        common = dict(
            endpoint=args.endpoint,
            # https:// speaks TLS with the SDK's OTEL_EXPORTER_OTLP_CERTIFICATE
            # (and CLIENT_CERTIFICATE / CLIENT_KEY for mutual TLS).
            insecure=not args.endpoint.startswith("https://"),
            headers=tuple(args.header),
            timeout=args.timeout,
            compression=compression,
        )
        spans = recording(OTLPSpanExporter, ledger, "traces")(**common)
        logs = recording(OTLPLogExporter, ledger, "logs")(**common)
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = args.endpoint.rstrip("/")
        compression = HttpCompression.Gzip if compression_name == "gzip" else HttpCompression.NoCompression
        common = dict(headers=dict(args.header), timeout=args.timeout, compression=compression)
        spans = recording(OTLPSpanExporter, ledger, "traces")(endpoint=f"{base}/v1/traces", **common)
        logs = recording(OTLPLogExporter, ledger, "logs")(endpoint=f"{base}/v1/logs", **common)
    return spans, logs


class App:
    """Emits one round of traffic at a time and remembers what it emitted."""

    def __init__(self, tracer_provider: TracerProvider, logger_provider: LoggerProvider, run_id: str):
        self.tracer = tracer_provider.get_tracer("identity.audit", "1.4.0")
        self.http_tracer = tracer_provider.get_tracer("e2e.http.server", "0.1.0")
        self.logger = logger_provider.get_logger("config.audit", "2.0.0")
        self.chatter = logger_provider.get_logger("e2e.app", "0.1.0")
        self.run_id = run_id
        self.audit_spans: list[dict] = []
        self.ordinary_spans: list[dict] = []
        self.audit_logs: list[dict] = []
        self.ordinary_logs: list[dict] = []
        self._n = 0

    def _event_id(self, round_no: int, label: str) -> str:
        self._n += 1
        return f"{self.run_id}-{round_no:06d}-{self._n:07d}-{label}"

    def _span(self, tracer, name: str, kind: SpanKind, attributes: dict, round_no: int, label: str,
              audit: bool, parent=None, status: StatusCode = StatusCode.UNSET):
        event_id = self._event_id(round_no, label)
        attributes = {**attributes, EVENT_ID_KEY: event_id}
        context = set_span_in_context(parent) if parent is not None else None
        span = tracer.start_span(name, context=context, kind=kind, attributes=attributes)
        if status is not StatusCode.UNSET:
            span.set_status(Status(status))
        ctx = span.get_span_context()
        entry = {
            "span_id": hex_span_id(ctx.span_id),
            "trace_id": hex_trace_id(ctx.trace_id),
            "name": name,
            "event_id": event_id,
        }
        if parent is not None:
            entry["parent_span_id"] = hex_span_id(parent.get_span_context().span_id)
        if audit:
            entry["action"] = attributes["audit.action"]
        (self.audit_spans if audit else self.ordinary_spans).append(entry)
        return span

    def _log(self, logger, round_no: int, label: str, audit: bool, severity: SeverityNumber, body: str,
             attributes: dict, parent=None, event_name: str | None = None) -> None:
        event_id = self._event_id(round_no, label)
        attributes = {**attributes, EVENT_ID_KEY: event_id}
        context = set_span_in_context(parent) if parent is not None else None
        logger.emit(
            timestamp=time.time_ns(),
            severity_number=severity,
            severity_text=severity.name,
            body=body,
            attributes=attributes,
            context=context,
            event_name=event_name,
        )
        entry = {"event_id": event_id, "body": body, "severity": severity.name}
        if parent is not None:
            ctx = parent.get_span_context()
            entry["trace_id"] = hex_trace_id(ctx.trace_id)
            entry["span_id"] = hex_span_id(ctx.span_id)
        if audit:
            entry["action"] = attributes["audit.action"]
        (self.audit_logs if audit else self.ordinary_logs).append(entry)

    def round(self, r: int) -> None:
        # An ordinary health check: dropped by the policy.
        span = self._span(self.http_tracer, "GET /healthz", SpanKind.SERVER, {
            "http.request.method": "GET",
            "http.route": "/healthz",
            "url.path": "/healthz",
            "http.response.status_code": 200,
        }, r, "healthz", audit=False)
        span.end()

        # An audit span: an admin changes a user's role. It carries request
        # credentials the policy must delete; its child db.query names the
        # same user but is not an audit record.
        role = self._span(self.tracer, "user.role.update", SpanKind.SERVER, {
            "enduser.id": "alice@example.com",
            "enduser.role": "admin",
            "enduser.ip": "203.0.113.7",
            "audit.action": "role_update",
            "audit.result": "success",
            "audit.target": f"user:bob-{r}@example.com",
            "audit.target_user": f"bob-{r}@example.com",
            "audit.old_value": "viewer",
            "audit.new_value": "admin",
            "audit.resource_type": "user",
            "http.request.header.authorization": AUTHORIZATION,
            "http.request.header.cookie": COOKIE,
        }, r, "role-update", audit=True, status=StatusCode.OK)
        query = self._span(self.tracer, "db.query", SpanKind.CLIENT, {
            "db.system.name": "postgresql",
            "db.operation.name": "UPDATE",
            "db.query.text": "UPDATE users SET role = $1 WHERE email = $2",
            "enduser.id": "alice@example.com",
        }, r, "db-query", audit=False, parent=role)
        query.end()
        role.end()

        # An audit span whose free-text note holds card numbers (masked by the
        # policy) and whose attributes have every OTLP value type.
        refund = self._span(self.tracer, "payment.refund", SpanKind.INTERNAL, {
            "enduser.id": "carol@example.com",
            "audit.action": "refund",
            "audit.result": "success",
            "audit.target": f"payment:pay-{r:06d}",
            "audit.amount": 12.5,
            "audit.attempt": 1,
            "audit.manual": False,
            "audit.items": ["sku-1", "sku-2"],
            "audit.note": f"refund to visa {VISA}, mastercard {MASTERCARD}",
        }, r, "refund", audit=True, status=StatusCode.OK)
        refund.end()

        # An audit span from an older SDK that sets only user.id: the policy
        # copies it to enduser.id.
        login = self._span(self.tracer, "login", SpanKind.INTERNAL, {
            "user.id": "dave",
            "audit.action": "login",
            "audit.result": "failure" if r % 2 else "success",
        }, r, "login", audit=True)
        login.end()

        # An ordinary request span; inside it, a structured audit log record
        # from the logs SDK (kept, its x-api-key deleted) and debug chatter
        # (dropped).
        request = self._span(self.http_tracer, "PUT /api/config/retention", SpanKind.SERVER, {
            "http.request.method": "PUT",
            "http.route": "/api/config/{key}",
            "http.response.status_code": 204,
        }, r, "config-request", audit=False)
        self._log(self.logger, r, "config-change", True, SeverityNumber.INFO,
                  "retention changed from 90d to 365d", {
                      "audit.action": "config_change",
                      "audit.changed_by": "ops-bot",
                      "audit.result": "success",
                      "audit.target": "config:retention_days",
                      "audit.old_value": "90d",
                      "audit.new_value": "365d",
                      "enduser.id": "ops-bot",
                      "http.request.header.x-api-key": API_KEY,
                  }, parent=request, event_name="audit.config_change")
        self._log(self.chatter, r, "chatter", False, SeverityNumber.DEBUG,
                  f"cache miss ratio high (round {r})", {
                      "cache.name": "sessions",
                      "cache.miss_ratio": 0.42,
                  }, parent=request)
        request.end()


def call_with_timeout(fn, seconds: float) -> bool:
    """Runs fn in a daemon thread; False if it did not return within seconds."""
    done = threading.Event()
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except Exception as error:  # noqa: BLE001 - reported, not raised
            box["error"] = repr(error)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(seconds):
        return False
    return "error" not in box and box.get("value") is not False


def parse_header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"header must be KEY=VALUE, got {text!r}")
    return key.strip().lower(), value.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--endpoint", required=True,
                        help="grpc: http://127.0.0.1:PORT; http: base URL http://127.0.0.1:PORT "
                             "(/v1/traces and /v1/logs are appended)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of traffic (default 20)")
    parser.add_argument("--duration", type=float, default=None,
                        help="keep sending rounds for this many seconds instead of --rounds")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds to sleep between rounds (default 0)")
    parser.add_argument("--out", required=True, help="JSON report to write")
    parser.add_argument("--service", default="e2e-sdk-app", help="resource service.name")
    parser.add_argument("--run-id", default=None, help="prefix of every event id (default: random)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="exporter timeout per export call in seconds, retries included (default 5)")
    parser.add_argument("--flush-timeout", type=float, default=15.0,
                        help="give up on force_flush + shutdown after this many seconds (default 15)")
    parser.add_argument("--batch-size", type=int, default=64, help="max_export_batch_size (default 64)")
    parser.add_argument("--schedule-delay-ms", type=float, default=200.0,
                        help="batch processors' schedule delay (default 200)")
    parser.add_argument("--compression", choices=["none", "gzip"], default="none")
    parser.add_argument("--header", type=parse_header, action="append", default=[],
                        help="KEY=VALUE export header, repeatable (e.g. X-Audit-Pipeline=soc2)")
    args = parser.parse_args(argv)
    if args.rounds < 0 or args.batch_size < 1 or args.timeout <= 0:
        parser.error("--rounds must be >= 0, --batch-size >= 1, --timeout > 0")

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="sdk_app %(levelname)s %(name)s: %(message)s")
    logging.getLogger("opentelemetry").addHandler(EXPORTER_ERRORS)
    started = time.monotonic()
    run_id = args.run_id or uuid.uuid4().hex[:12]
    ledger = Ledger()
    span_exporter, log_exporter = make_exporters(args, ledger)

    resource = Resource.create({
        "service.name": args.service,
        "service.version": "1.0.0",
        "service.instance.id": run_id,
        "deployment.environment.name": "e2e",
    })
    batch = dict(
        schedule_delay_millis=args.schedule_delay_ms,
        max_export_batch_size=args.batch_size,
        max_queue_size=max(2048, args.batch_size * 4),
        export_timeout_millis=args.timeout * 1000,
    )
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter, **batch))
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter, **batch))

    app = App(tracer_provider, logger_provider, run_id)
    rounds = 0
    while True:
        if args.duration is not None:
            if time.monotonic() - started >= args.duration:
                break
        elif rounds >= args.rounds:
            break
        app.round(rounds)
        rounds += 1
        if args.interval > 0:
            time.sleep(args.interval)

    deadline = time.monotonic() + args.flush_timeout

    def remaining() -> float:
        return max(0.0, deadline - time.monotonic())

    flushed = (call_with_timeout(tracer_provider.force_flush, remaining())
               and call_with_timeout(logger_provider.force_flush, remaining()))
    shut_down = (call_with_timeout(tracer_provider.shutdown, remaining())
                 and call_with_timeout(logger_provider.shutdown, remaining()))

    emitted_spans = len(app.audit_spans) + len(app.ordinary_spans)
    emitted_logs = len(app.audit_logs) + len(app.ordinary_logs)
    with ledger._lock:  # the exporters may still be running after a timeout
        report = {
            "protocol": args.protocol,
            "endpoint": args.endpoint,
            "service": args.service,
            "run_id": run_id,
            "event_id_key": EVENT_ID_KEY,
            "rounds": rounds,
            "audit_spans": app.audit_spans,
            "ordinary_spans": app.ordinary_spans,
            "audit_logs": app.audit_logs,
            "ordinary_logs": app.ordinary_logs,
            "acked_span_ids": list(ledger.acked_span_ids),
            "acked_span_event_ids": list(ledger.acked_span_event_ids),
            "acked_log_event_ids": list(ledger.acked_log_event_ids),
            "failed_span_ids": list(ledger.failed_span_ids),
            "failed_log_event_ids": list(ledger.failed_log_event_ids),
            "failed_exports": len(ledger.failures),
            "failures": list(ledger.failures),
            "export_calls": dict(ledger.export_calls),
            "flush_ok": bool(flushed and shut_down),
            "duration_s": round(time.monotonic() - started, 3),
        }
    unaccounted_spans = emitted_spans - len(report["acked_span_ids"]) - len(report["failed_span_ids"])
    unaccounted_logs = emitted_logs - len(report["acked_log_event_ids"]) - len(report["failed_log_event_ids"])
    report["unexported_spans"] = unaccounted_spans
    report["unexported_logs"] = unaccounted_logs

    tmp = f"{args.out}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)

    ok = report["failed_exports"] == 0 and report["flush_ok"] and unaccounted_spans == 0 and unaccounted_logs == 0
    print(
        f"sdk_app: {args.protocol} {rounds} rounds: spans {len(report['acked_span_ids'])}/{emitted_spans} acked, "
        f"logs {len(report['acked_log_event_ids'])}/{emitted_logs} acked, "
        f"{report['failed_exports']} failed exports, flush {'ok' if report['flush_ok'] else 'TIMED OUT'} "
        f"({report['duration_s']} s)",
        file=sys.stderr,
    )
    sys.stderr.flush()
    if not report["flush_ok"]:
        # Exporter threads may still be blocked in a network call: don't wait for them.
        os._exit(1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
