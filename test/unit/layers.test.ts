/**
 * The layers of src/ (README, Layout) are true: a module imports modules of its own layer or of
 * lower ones, never of a higher one. Reads every .ts under src/, takes its relative imports (static
 * `import … from`, `export … from`, `import '…'` and dynamic `import('…')`) and ranks both ends by
 * their top folder. Every folder under src/ must have a rank, so a new one is placed on purpose.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';

/**
 * Lowest first. `pair` is the layer of what a board does in each role (being carved out of
 * replication and mgmt). `sim`, the simulated chassis, may use every layer of the product; only
 * `cli` (its demo, chassis, load and hlr commands) may use it.
 */
const LAYERS = ['core', 'config', 'hw', 'store', 'guest', 'ha', 'replication', 'upgrade', 'pair', 'mgmt', 'sim', 'cli'] as const;

/** Ambient declarations (.d.ts for untyped packages): nothing imports them, they import no layer. */
const AMBIENT = ['types'] as const;

interface SourceFile {
  /** Path from the package root, with forward slashes: src/<layer>/… */
  path: string;
  /** Its relative import specifiers, as written. */
  imports: string[];
}

/** The relative module specifiers a TypeScript source imports or re-exports, in order. */
function relativeImports(text: string): string[] {
  const specifiers: string[] = [];
  const pattern = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]*)\1/g;
  for (const m of text.matchAll(pattern)) specifiers.push(m[2]!);
  return specifiers;
}

/** The rank of a path under src/ (ambient declarations below every layer), or undefined. */
function rankOf(path: string): number | undefined {
  const parts = path.split('/');
  if (parts[0] !== 'src' || parts.length < 3) return undefined;
  if ((AMBIENT as readonly string[]).includes(parts[1]!)) return -1;
  const i = (LAYERS as readonly string[]).indexOf(parts[1]!);
  return i < 0 ? undefined : i;
}

/** One line per import that reaches a higher layer, or a place outside the layers. */
function layerViolations(files: readonly SourceFile[]): string[] {
  const found: string[] = [];
  for (const f of files) {
    const own = rankOf(f.path);
    if (own === undefined) { found.push(`${f.path}: not in a layer folder`); continue; }
    for (const spec of f.imports) {
      const target = posix.normalize(posix.join(posix.dirname(f.path), spec));
      const rank = rankOf(target);
      if (rank === undefined) found.push(`${f.path} imports ${spec}: outside the layers of src/`);
      else if (rank > own) found.push(`${f.path} imports ${spec}: ${target.split('/')[1]} is above ${f.path.split('/')[1]}`);
    }
  }
  return found;
}

function sourcesUnder(dir: string): SourceFile[] {
  const files: SourceFile[] = [];
  for (const e of readdirSync(join(PACKAGE_ROOT, dir), { withFileTypes: true })) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory()) files.push(...sourcesUnder(path));
    else if (e.name.endsWith('.ts')) files.push({ path, imports: relativeImports(readFileSync(join(PACKAGE_ROOT, path), 'utf8')) });
  }
  return files;
}

describe('layers of src/', () => {
  it('no module imports a higher layer', () => {
    const files = sourcesUnder('src');
    assert.ok(files.length > 50, `read the sources (${files.length} files)`);
    assert.deepEqual(layerViolations(files), []);
  });

  it('every folder under src/ has a layer', () => {
    const folders = readdirSync(join(PACKAGE_ROOT, 'src'), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    const placed: readonly string[] = [...LAYERS, ...AMBIENT];
    for (const f of folders) assert.ok(placed.includes(f), `src/${f}/ is not placed in LAYERS (test/unit/layers.test.ts)`);
  });

  it('finds every kind of relative import, and only those', () => {
    const text = [
      "import { a } from '../core/errors.js';",
      "import type { B } from './b.js';",
      "export { c } from \"../hw/c.js\";",
      "import '../store/side-effect.js';",
      "const d = await import('../ha/d.js');",
      "import {\n  e,\n} from '../guest/e.js';",
      "import { z } from 'zod';",
      "import { readFileSync } from 'node:fs';",
    ].join('\n');
    assert.deepEqual(relativeImports(text), ['../core/errors.js', './b.js', '../hw/c.js', '../store/side-effect.js', '../ha/d.js', '../guest/e.js']);
  });

  it('names the file and the import of an upward import', () => {
    assert.deepEqual(layerViolations([
      { path: 'src/ha/membership-process.ts', imports: ['../core/footprint.js', './frame.js', '../hw/links/udp.js'] },
      { path: 'src/cli/demo.ts', imports: ['../sim/hlr.js', '../mgmt/ipc.js'] },
      { path: 'src/sim/chassis/board.ts', imports: ['../../mgmt/paths.js'] },
    ]), []);
    assert.deepEqual(layerViolations([
      { path: 'src/ha/membership-process.ts', imports: ['../mgmt/footprint.js'] },
      { path: 'src/upgrade/firmware-entry.ts', imports: ['../cli/main.js'] },
      { path: 'src/mgmt/daemon.ts', imports: ['../sim/pair.js'] },
      { path: 'src/core/log.ts', imports: ['../../test/support/rig.js'] },
      { path: 'src/stray.ts', imports: [] },
    ]), [
      'src/ha/membership-process.ts imports ../mgmt/footprint.js: mgmt is above ha',
      'src/upgrade/firmware-entry.ts imports ../cli/main.js: cli is above upgrade',
      'src/mgmt/daemon.ts imports ../sim/pair.js: sim is above mgmt',
      'src/core/log.ts imports ../../test/support/rig.js: outside the layers of src/',
      'src/stray.ts: not in a layer folder',
    ]);
  });
});
