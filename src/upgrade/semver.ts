/**
 * Semantic versions (semver 2.0.0): parsing and precedence, for downgrade and minimum-version checks.
 * Build metadata (+…) is kept but ignored for precedence, as the spec says.
 */
import { UsError } from '../core/errors.js';

export interface SemVer {
  major: number;
  minor: number;
  patch: number;
  prerelease: Array<string | number>;
  text: string;
}

const RE = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$/;

export function isSemVer(s: string): boolean {
  return s.length <= 64 && RE.test(s);
}

export function parseSemVer(s: string): SemVer {
  const m = s.length <= 64 ? RE.exec(s) : null;
  if (!m) throw new UsError('US_ERR_CONFIG', `not a semantic version (like 1.2.3): ${JSON.stringify(s)}`);
  const num = (x: string) => {
    const n = Number(x);
    if (!Number.isSafeInteger(n)) throw new UsError('US_ERR_CONFIG', `version number too large in ${s}`);
    return n;
  };
  return {
    major: num(m[1]!),
    minor: num(m[2]!),
    patch: num(m[3]!),
    prerelease: m[4] ? m[4].split('.').map((p) => (/^\d+$/.test(p) ? num(p) : p)) : [],
    text: s,
  };
}

/** Negative if a < b, 0 if equal precedence, positive if a > b. */
export function compareSemVer(a: string | SemVer, b: string | SemVer): number {
  const x = typeof a === 'string' ? parseSemVer(a) : a;
  const y = typeof b === 'string' ? parseSemVer(b) : b;
  for (const k of ['major', 'minor', 'patch'] as const) if (x[k] !== y[k]) return x[k] < y[k] ? -1 : 1;
  // A version without pre-release ranks above one with (1.0.0-rc.1 < 1.0.0).
  if (!x.prerelease.length || !y.prerelease.length) return (y.prerelease.length ? 1 : 0) - (x.prerelease.length ? 1 : 0);
  for (let i = 0; i < Math.max(x.prerelease.length, y.prerelease.length); i++) {
    const p = x.prerelease[i];
    const q = y.prerelease[i];
    if (p === undefined) return -1;
    if (q === undefined) return 1;
    if (p === q) continue;
    if (typeof p === 'number' && typeof q === 'number') return p < q ? -1 : 1;
    if (typeof p === 'number') return -1; // numeric identifiers rank below alphanumeric ones
    if (typeof q === 'number') return 1;
    return p < q ? -1 : 1;
  }
  return 0;
}
