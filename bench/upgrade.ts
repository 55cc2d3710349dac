/**
 * bench/upgrade: install throughput of an upgrade package (signature check, streaming tar with per-file
 * and whole-payload SHA-256, writes, fsync per file and directory, rename, boot env update) versus the
 * floor of "copy the bytes and hash them": `cp` + `sha256sum` of the same package file, in the same
 * run, on the same filesystem. Also shown: the same floor plus `sync` (the installer makes its writes
 * durable; cp does not). Packages are random data (incompressible), several files.
 * Usage: node dist/bench/upgrade.js [--mb 100] [--files 4] [--reps 5]
 */
import { execFileSync } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, randomFillSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FileBootEnv } from '../src/hw/bootenv/index.js';
import { buildPackage } from '../src/upgrade/builder.js';
import { installPackage } from '../src/upgrade/installer.js';
import { loadTrustedKeys } from '../src/upgrade/keys.js';
import { SlotStore } from '../src/upgrade/slots.js';
import { machine, printTable, summarize } from './lib.js';

const { values: args } = parseArgs({
  options: {
    mb: { type: 'string', default: '100' },
    files: { type: 'string', default: '4' },
    reps: { type: 'string', default: '5' },
  },
});
const MB = Number(args.mb);
const FILES = Number(args.files);
const REPS = Number(args.reps);

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'us-bench-upgrade-'));
  try {
    // A slot image of FILES files totalling MB megabytes, packaged and signed.
    const img = join(dir, 'img');
    mkdirSync(img);
    const per = Math.floor((MB * 1e6) / FILES);
    for (let i = 0; i < FILES; i++) writeFileSync(join(img, `part-${i}.bin`), randomFillSync(Buffer.allocUnsafe(per)));
    writeFileSync(join(img, 'firmware.json'), '{"version":"9.9.9"}\n');
    const { privateKey } = generateKeyPairSync('ed25519');
    const keysDir = join(dir, 'keys');
    mkdirSync(keysDir);
    writeFileSync(join(keysDir, 'k.pem'), createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }));
    const pkg = join(dir, 'bench.usp');
    const tb = performance.now();
    await buildPackage({ fromDir: img, privateKey, family: 'bench', version: '1.0.0', out: pkg });
    const buildS = (performance.now() - tb) / 1000;
    rmSync(img, { recursive: true });
    const bytes = statSync(pkg).size;
    const mb = bytes / 1e6;

    const install: number[] = [];
    const cpHash: number[] = [];
    const cpHashSync: number[] = [];
    const trusted = loadTrustedKeys(keysDir);
    for (let r = 0; r < REPS; r++) {
      // Installer: a fresh board each time (first install, into slot A).
      const board = join(dir, `board-${r}`);
      const store = new SlotStore(join(board, 'slots'), join(board, 'slots', 'cmdline'));
      const env = new FileBootEnv(join(board, 'bootenv'));
      execFileSync('sync');
      let t = performance.now();
      await installPackage({ packagePath: pkg, family: 'bench', store, env, trustedKeys: trusted, bootAttempts: 3 });
      install.push((performance.now() - t) / 1000);
      rmSync(board, { recursive: true, force: true });

      // Floor: copy the same bytes and hash them.
      const dst = join(dir, `copy-${r}.usp`);
      execFileSync('sync');
      t = performance.now();
      execFileSync('sh', ['-c', 'cp "$1" "$2" && sha256sum "$2" >/dev/null', 'sh', pkg, dst]);
      cpHash.push((performance.now() - t) / 1000);
      rmSync(dst);
      execFileSync('sync');
      t = performance.now();
      execFileSync('sh', ['-c', 'cp "$1" "$2" && sha256sum "$2" >/dev/null && sync', 'sh', pkg, dst]);
      cpHashSync.push((performance.now() - t) / 1000);
      rmSync(dst);
    }

    const base = summarize(cpHash).p50;
    const row = (name: string, s: number[]) => {
      const p = summarize(s);
      return [name, p.p50, mb / p.p50, p.max, p.p50 / base];
    };
    console.log(`bench/upgrade on ${machine()}; ${new Date().toISOString()}`);
    console.log(`package: ${mb.toFixed(1)} MB (${FILES} files of random data + 1 small), built in ${buildS.toFixed(2)} s; ${REPS} repetitions, p50 shown; tmp dir ${tmpdir()}`);
    printTable('install throughput vs cp + sha256sum of the same bytes', [
      ['method', 'time s (p50)', 'MB/s (p50)', 'time s (max)', 'ratio to cp+sha256sum'],
      row('understudy upgrade install', install),
      row('cp + sha256sum', cpHash),
      row('cp + sha256sum + sync', cpHashSync),
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
