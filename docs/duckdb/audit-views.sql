-- DuckDB views over an otel-audit store: the tables `otel-audit sql` has,
-- `audit_spans` and `audit_logs`, read straight from the segments, so the
-- same SQL runs in DuckDB (docs/auditors.md). Replace 'audit-data' with the
-- store directory (the `auditstore` exporter's `directory`), then:
--   duckdb -init docs/duckdb/audit-views.sql
-- Times are UTC. These views read; they do not verify: run
-- `otel-audit verify` for that, or answer with `otel-audit evidence`.
SET TimeZone = 'UTC';

-- A typed value (chain format §1.3) as the text `attributes['k']` gives:
-- strings as they are, ints in decimal, bools and doubles as JSON writes
-- them, bytes in base64, arrays and maps as their typed JSON.
CREATE OR REPLACE MACRO otel_audit_text(typed) AS
    CASE WHEN json_keys(typed)[1] IN ('a', 'm') THEN CAST(typed AS VARCHAR)
         ELSE json_extract_string(typed, '$.' || json_keys(typed)[1]) END;

-- An attribute object as MAP(VARCHAR, VARCHAR).
CREATE OR REPLACE MACRO otel_audit_map(attributes) AS
    map_from_entries(list_transform(
        map_entries(coalesce(json_transform(attributes, '"MAP(VARCHAR, JSON)"'), MAP {})),
        lambda e: {'key': e.key, 'value': otel_audit_text(e.value)}));

-- Unix nanoseconds (a decimal string) as a timestamp (DuckDB's TIMESTAMPTZ,
-- which NOW() compares with, holds microseconds).
CREATE OR REPLACE MACRO otel_audit_time(nanos) AS
    make_timestamp(CAST(nanos AS BIGINT) // 1000) AT TIME ZONE 'UTC';

-- Every complete record of every chain. A segment's last line while
-- `serve` writes it is skipped (ignore_errors), as `otel-audit sql` does.
CREATE OR REPLACE VIEW otel_audit_records AS
SELECT * FROM read_json('audit-data/*/seg-*.jsonl',
    format = 'newline_delimited', ignore_errors = true,
    columns = {chain: 'STRUCT(id VARCHAR, seq VARCHAR)', received_at: 'VARCHAR', span: 'JSON', log: 'JSON',
               resource: 'JSON', scope: 'JSON', sender: 'JSON'});

CREATE OR REPLACE VIEW audit_spans AS
SELECT
    coalesce(otel_audit_time(span->>'start_time_unix_nano'), CAST(received_at AS TIMESTAMPTZ)) AS timestamp,
    CAST(received_at AS TIMESTAMPTZ) AS received_at,
    chain.id AS chain,
    CAST(chain.seq AS BIGINT) AS seq,
    span->>'name' AS name,
    otel_audit_map(span->'attributes') AS attributes,
    CAST(span->'attributes' AS VARCHAR) AS attributes_typed,
    otel_audit_map(resource->'attributes') AS resource,
    scope->>'name' AS scope_name,
    span->>'trace_id' AS trace_id,
    span->>'span_id' AS span_id,
    span->>'parent_span_id' AS parent_span_id,
    CAST(span->'kind' AS INTEGER) AS kind,
    CAST(span->'status'->'code' AS INTEGER) AS status_code,
    otel_audit_time(span->>'start_time_unix_nano') AS start_time,
    otel_audit_time(span->>'end_time_unix_nano') AS end_time,
    CAST(sender AS VARCHAR) AS sender
FROM otel_audit_records WHERE span IS NOT NULL;

CREATE OR REPLACE VIEW audit_logs AS
SELECT
    coalesce(otel_audit_time(log->>'time_unix_nano'), otel_audit_time(log->>'observed_time_unix_nano'),
             CAST(received_at AS TIMESTAMPTZ)) AS timestamp,
    CAST(received_at AS TIMESTAMPTZ) AS received_at,
    chain.id AS chain,
    CAST(chain.seq AS BIGINT) AS seq,
    log->>'event_name' AS name,
    otel_audit_map(log->'attributes') AS attributes,
    CAST(log->'attributes' AS VARCHAR) AS attributes_typed,
    otel_audit_map(resource->'attributes') AS resource,
    scope->>'name' AS scope_name,
    log->>'trace_id' AS trace_id,
    log->>'span_id' AS span_id,
    CAST(log->'severity_number' AS INTEGER) AS severity_number,
    log->>'severity_text' AS severity_text,
    otel_audit_text(log->'body') AS body,
    CAST(sender AS VARCHAR) AS sender
FROM otel_audit_records WHERE log IS NOT NULL;
