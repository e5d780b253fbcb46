// Runs the audit processor component under jco (Node), the second component
// host, for tests/jco.rs: the same cases through wasmtime and through this
// script must give byte-identical results.
//
//   node tests/jco/run.mjs <job.json> [<results.jsonl>]
//
// The job is {"cases": [case...]} (or a bare array of cases); a case is
//   {"name"?, "policy", "secrets": [[id, hex]...], "signal": "traces"|"logs",
//    "chain_events"?: bool, "request_b64" | "request_hex",
//    "received_at_unix_nano": "<u64>", "chain_id", "seq": "<u64>", "prev_hex"}
// For each case it calls configure, then process-traces or process-logs
// (or chain-events with the signal, when "chain_events" is true), and
// writes one JSON line (to the results file, else stdout), in order:
//   {"ok": {"info", "otlp_b64", "records_b64", "leaves_hex", "head", "stats"}}
//   {"err": {"tag": "decode"|"policy"|"invalid-context", "val"}}  (refused)
//   {"err": {"tag": "configure", "val"}}             (policy rejected)
//   {"trap": "<message>"}                            (the guest trapped)
// u64s are decimal strings. A malformed job exits 2 before any call.

import { readFileSync, writeFileSync } from 'node:fs';
import { _setArgs, _setEnv } from '@bytecodealliance/preview2-shim/cli';

// wasmtime gives the guest no environment and no arguments; neither does
// this host. (jco's default shim would pass Node's.) Set before the
// component is loaded, so no call can see anything else.
_setEnv({});
_setArgs([]);
const { processor } = await import('./transpiled/audit_processor.js');

const U64_MAX = (1n << 64n) - 1n;

class JobError extends Error {}

function u64(value, where) {
  if (typeof value !== 'string' || !/^(0|[1-9][0-9]*)$/.test(value)) {
    throw new JobError(`${where}: a u64 must be a decimal string, got ${JSON.stringify(value)}`);
  }
  const n = BigInt(value);
  if (n > U64_MAX) throw new JobError(`${where}: ${value} does not fit in a u64`);
  return n;
}

function str(value, where) {
  if (typeof value !== 'string') throw new JobError(`${where}: expected a string, got ${JSON.stringify(value)}`);
  return value;
}

function hexBytes(value, where) {
  str(value, where);
  if (!/^([0-9a-fA-F]{2})*$/.test(value)) throw new JobError(`${where}: not an even-length hex string`);
  return new Uint8Array(Buffer.from(value, 'hex'));
}

function b64Bytes(value, where) {
  str(value, where);
  // Buffer.from(..., 'base64') skips what it does not understand; insist on
  // canonical standard base64 so a typo cannot turn into different bytes.
  const bytes = Buffer.from(value, 'base64');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || bytes.toString('base64') !== value) {
    throw new JobError(`${where}: not canonical standard base64`);
  }
  return new Uint8Array(bytes);
}

// option<sender>: null is none; a record's fields are camelCase under jco.
function parseSender(s, at) {
  if (s === null || s === undefined) return undefined;
  if (typeof s !== 'object' || Array.isArray(s)) throw new JobError(`${at}: not an object or null`);
  if (!Array.isArray(s.certificate_sans)) throw new JobError(`${at}.certificate_sans: not an array`);
  return {
    protocol: str(s.protocol, `${at}.protocol`),
    address: str(s.address, `${at}.address`),
    tls: str(s.tls, `${at}.tls`),
    principal: str(s.principal, `${at}.principal`),
    certificateSubject: str(s.certificate_subject, `${at}.certificate_subject`),
    certificateSans: s.certificate_sans.map((san, j) => str(san, `${at}.certificate_sans[${j}]`)),
  };
}

function parseCase(c, i) {
  const at = `case ${i}${c && typeof c.name === 'string' ? ` (${c.name})` : ''}`;
  if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new JobError(`${at}: not an object`);
  if (c.signal !== 'traces' && c.signal !== 'logs') {
    throw new JobError(`${at}: signal must be "traces" or "logs", got ${JSON.stringify(c.signal)}`);
  }
  if (c.chain_events !== undefined && typeof c.chain_events !== 'boolean') {
    throw new JobError(`${at}: chain_events must be a boolean, got ${JSON.stringify(c.chain_events)}`);
  }
  if (!Array.isArray(c.secrets)) throw new JobError(`${at}: secrets must be an array of [id, hex]`);
  const secrets = c.secrets.map((pair, j) => {
    if (!Array.isArray(pair) || pair.length !== 2) throw new JobError(`${at}: secrets[${j}] must be [id, hex]`);
    return [str(pair[0], `${at}: secrets[${j}][0]`), hexBytes(pair[1], `${at}: secrets[${j}][1]`)];
  });
  const hasHex = c.request_hex !== undefined;
  const hasB64 = c.request_b64 !== undefined;
  if (hasHex === hasB64) throw new JobError(`${at}: give exactly one of request_hex and request_b64`);
  const request = hasHex ? hexBytes(c.request_hex, `${at}: request_hex`) : b64Bytes(c.request_b64, `${at}: request_b64`);
  return {
    policy: str(c.policy, `${at}: policy`),
    secrets,
    signal: c.signal,
    chainEvents: c.chain_events === true,
    request,
    ctx: {
      receivedAtUnixNano: u64(c.received_at_unix_nano, `${at}: received_at_unix_nano`),
      head: {
        chainId: str(c.chain_id, `${at}: chain_id`),
        seq: u64(c.seq, `${at}: seq`),
        prev: hexBytes(c.prev_hex, `${at}: prev_hex`),
      },
      sender: parseSender(c.sender, `${at}: sender`),
    },
  };
}

const hex = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
const b64 = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');

function u64Out(value, what) {
  if (typeof value !== 'bigint') throw new TypeError(`${what} is a ${typeof value}, not a BigInt`);
  return value.toString();
}

// A result error thrown by jco's bindings is a ComponentError carrying the
// WIT value as .payload; anything else is a trap (or a binding bug).
function payload(e) {
  if (e instanceof Error && Object.prototype.hasOwnProperty.call(e, 'payload')) return { found: true, value: e.payload };
  return { found: false };
}

function runCase(c) {
  let info;
  try {
    info = processor.configure(c.policy, c.secrets);
  } catch (e) {
    const p = payload(e);
    if (p.found && typeof p.value === 'string') return { err: { tag: 'configure', val: p.value } };
    return { trap: `configure: ${e?.stack ?? e}` };
  }
  let out;
  try {
    // A WIT enum is its case name as a string under jco.
    if (c.chainEvents) out = processor.chainEvents(c.signal, c.request, c.ctx);
    else if (c.signal === 'traces') out = processor.processTraces(c.request, c.ctx);
    else out = processor.processLogs(c.request, c.ctx);
  } catch (e) {
    const p = payload(e);
    if (p.found && p.value && typeof p.value.tag === 'string' && typeof p.value.val === 'string') {
      return { err: { tag: p.value.tag, val: p.value.val } };
    }
    return { trap: `${c.chainEvents ? `chain-events(${c.signal})` : `process-${c.signal}`}: ${e?.stack ?? e}` };
  }
  return {
    ok: {
      info: {
        digest: info.digest,
        pipeline: info.pipeline,
        key_id: info.keyId ?? null,
        rules: info.rules.map((r) => [r.id, r.description]),
      },
      otlp_b64: b64(out.otlp),
      records_b64: out.records.map(b64),
      leaves_hex: hex(out.leaves),
      head: { chain_id: out.head.chainId, seq: u64Out(out.head.seq, 'head.seq'), prev_hex: hex(out.head.prev) },
      stats: {
        received: u64Out(out.stats.received, 'stats.received'),
        kept: u64Out(out.stats.kept, 'stats.kept'),
        dropped: u64Out(out.stats.dropped, 'stats.dropped'),
        redacted: u64Out(out.stats.redacted, 'stats.redacted'),
        violations: u64Out(out.stats.violations, 'stats.violations'),
        rule_hits: Array.from(out.stats.ruleHits, (h, i) => u64Out(h, `stats.rule_hits[${i}]`)),
      },
    },
  };
}

function main() {
  const [jobPath, outPath] = process.argv.slice(2);
  if (!jobPath) throw new JobError('usage: node run.mjs <job.json> [<results.jsonl>]');
  const job = JSON.parse(readFileSync(jobPath, 'utf8'));
  const raw = Array.isArray(job) ? job : job?.cases;
  if (!Array.isArray(raw)) throw new JobError(`${jobPath}: expected {"cases": [...]} or an array of cases`);
  // Validate every case before the first call.
  const cases = raw.map(parseCase);
  const lines = cases.map((c) => JSON.stringify(runCase(c)));
  const text = lines.length ? `${lines.join('\n')}\n` : '';
  if (outPath) writeFileSync(outPath, text);
  else process.stdout.write(text);
}

try {
  main();
} catch (e) {
  process.stderr.write(`run.mjs: ${e instanceof JobError ? e.message : (e?.stack ?? e)}\n`);
  process.exit(2);
}
