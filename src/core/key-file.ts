/**
 * The pair's shared key file: heartbeat frames and the channels to the partner (replication, clone,
 * upgrade) are authenticated with it. Reads and checks it; owns nothing else. In core because the HA
 * layer and the layers above it that open those channels each read it.
 */
import { readFileSync, statSync } from 'node:fs';
import { UsError } from './errors.js';

/** Reads the pair's shared key: a root-only file holding hex (≥ 32 digits) or raw bytes (≥ 16). */
export function readKeyFile(path: string): Buffer {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new UsError('US_ERR_NOT_FOUND', `heartbeat key file ${path}: ${(e as Error).message}`);
  }
  if ((st.mode & 0o077) !== 0) throw new UsError('US_ERR_CONFIG', `heartbeat key file ${path} must be readable by root only (mode 0600), it is ${(st.mode & 0o777).toString(8)}`);
  const raw = readFileSync(path);
  const text = raw.toString('latin1').trim();
  const key = /^[0-9a-fA-F]{32,}$/.test(text) && text.length % 2 === 0 ? Buffer.from(text, 'hex') : raw;
  if (key.length < 16) throw new UsError('US_ERR_CONFIG', `heartbeat key file ${path}: key shorter than 16 bytes`);
  return key;
}
