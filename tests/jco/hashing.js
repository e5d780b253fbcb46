// The component's one import under jco: the leaf hash (RFC 6962: SHA-256 of
// a 0x00 byte and the record), as wasmtime's host gives it.
import { createHash } from 'node:crypto';

export function leafHash(record) {
  return new Uint8Array(createHash('sha256').update(Uint8Array.of(0)).update(record).digest());
}
