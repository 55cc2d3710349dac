/**
 * An attacker on the partner link of the simulated chassis (real QEMU, namespaces, the veth between
 * the boards), while a load generator runs and checks that nothing acknowledged is lost:
 *  - it captures the live input stream's bytes (a raw packet socket in the backup's namespace), then
 *    replays them, and sends forged plaintext (a `switchover` control message, an upgrade `commit`,
 *    "VM state") to the replication, migration and upgrade ports of both boards: each connection is
 *    refused at the handshake and counted, the roles, the protection and the last clone unchanged;
 *  - it forges a TCP segment into the live input connection (the next sequence number, the
 *    primary's addresses): the backup rejects the record, journals it, drops that connection, and
 *    the pair protects itself again with no operator and nothing acknowledged lost.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { PACKAGE_ROOT, PLINK_ADDRESS, partnerOf, type BoardName } from '../../src/sim/chassis/layout.js';
import { waitProtected } from '../../src/sim/pair.js';
import { PairUnderTest } from '../support/pair.js';

const NAME = `pc${process.pid % 1000}`;
const SNIFFER = join(PACKAGE_ROOT, 'test', 'support', 'partner-sniffer.py');

describe('partner channels under attack on the simulated chassis (real QEMU)', function () {
  // About 2 minutes on a quiet machine; a re-clone under TCG on a loaded one takes much longer.
  this.timeout(600000);
  const p = new PairUnderTest(NAME);
  const children: ChildProcess[] = [];
  let basePort = 0;
  before(async () => {
    await p.up();
    basePort = JSON.parse(readFileSync(p.chassis.layout.boards[p.primary].profile, 'utf8')).partner.ethernet.port as number;
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await p.down();
  });

  /** Runs a program in a board's namespace, bounded; resolves with its stdout. `onReady`: when its stderr first says `ready`. */
  function runIn(board: BoardName, cmd: string, args: string[], timeoutMs: number, onReady?: () => void): Promise<string> {
    const child = p.chassis.spawnIn(board, cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (onReady && /^ready$/m.test(err)) { onReady(); onReady = undefined; }
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('close', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve(out);
        else reject(new Error(`${cmd} exited ${code}: ${err.slice(-500)}`));
      });
    });
  }

  const rejections = async (b: BoardName): Promise<Record<string, Record<string, number>>> =>
    (await p.ctl(b, 'replication.status')).replication.channelRejections;
  const n = (r: Record<string, Record<string, number>>, purpose: string, reason: string) => r[purpose]?.[reason] ?? 0;

  it('replayed and forged connections to the inputs, migration and upgrade ports: refused, counted, the pair unchanged', async () => {
    const primary = p.primary;
    const backup = partnerOf(primary);
    const [inputs, migration, upgrade] = [basePort + 1, basePort + 2, basePort + 3];
    const before = { primary: await rejections(primary), backup: await rejections(backup) };
    const clone0 = (await p.ctl(primary, 'replication.status')).replication.lastClone.at as string;
    let captured: string[] = [];
    let protectedThroughout = true;
    const watch = setInterval(() => {
      p.ctl(primary, 'replication.status').then((s) => { if (!s.replication.protected) protectedThroughout = false; }, () => undefined);
    }, 100);
    try {
      await p.loadThrough(9000, 1000, async () => {
        // The attacker listens on the link, in the backup's namespace, to what the primary sends it.
        const cap = JSON.parse((await runIn(backup, 'python3', [SNIFFER, 'plink', PLINK_ADDRESS[backup], String(inputs), '2'], 20000)).trim().split('\n').pop()!);
        captured = cap.captured as string[];
        assert.ok(captured.length > 3, `the live input stream was captured (${captured.length} segments)`);
        const frame = (type: number, body: string) => {
          const b = Buffer.from(body);
          const h = Buffer.alloc(5);
          h.writeUInt32BE(b.length + 1, 0);
          h[4] = type;
          return Buffer.concat([h, b]).toString('hex');
        };
        // Each attack: a fresh connection that writes its bytes and waits for the board to drop it.
        const attacks = [
          { host: PLINK_ADDRESS[backup], port: inputs, chunks: captured.slice(0, 40) },
          { host: PLINK_ADDRESS[primary], port: inputs, chunks: [frame(1, JSON.stringify({ type: 'switchover' }))] },
          { host: PLINK_ADDRESS[backup], port: inputs, chunks: [frame(1, JSON.stringify({ type: 'clone-prepare', memoryMb: 64, guestFile: '/etc/passwd' }))] },
          { host: PLINK_ADDRESS[backup], port: migration, chunks: [Buffer.from('QEVM\0\0\0\x03').toString('hex'), ...captured.slice(0, 5)] },
          { host: PLINK_ADDRESS[primary], port: upgrade, chunks: [frame(1, JSON.stringify({ op: 'commit' }))] },
          { host: PLINK_ADDRESS[backup], port: upgrade, chunks: [frame(1, JSON.stringify({ op: 'reboot' }))] },
        ];
        const script = `import { connect } from 'node:net';
const out = [];
for (const a of ${JSON.stringify(attacks)}) {
  const r = await new Promise((resolve) => {
    const s = connect(a.port, a.host);
    let got = 0;
    const t = setTimeout(() => { s.destroy(); resolve({ port: a.port, closed: false, got }); }, 5000);
    s.on('data', (d) => { got += d.length; });
    s.on('error', () => undefined);
    s.on('close', () => { clearTimeout(t); resolve({ port: a.port, closed: true, got }); });
    s.on('connect', async () => { for (const c of a.chunks) { if (s.destroyed) break; s.write(Buffer.from(c, 'hex')); await new Promise((w) => setTimeout(w, 5)); } });
  });
  out.push(r);
}
console.log(JSON.stringify(out));`;
        const results = JSON.parse((await runIn(backup, process.execPath, ['--input-type=module', '-e', script], 60000)).trim().split('\n').pop()!) as Array<{ closed: boolean }>;
        assert.ok(results.every((r) => r.closed), `every attacker connection was dropped by the board: ${JSON.stringify(results)}`);
      });
    } finally {
      clearInterval(watch);
    }
    const after = { primary: await rejections(primary), backup: await rejections(backup) };
    assert.ok(n(after.backup, 'inputs', 'handshake') >= n(before.backup, 'inputs', 'handshake') + 2, `backup inputs: ${JSON.stringify(after.backup)}`);
    assert.ok(n(after.primary, 'inputs', 'handshake') >= n(before.primary, 'inputs', 'handshake') + 1, `primary inputs: ${JSON.stringify(after.primary)}`);
    assert.ok(n(after.backup, 'migration', 'handshake') >= n(before.backup, 'migration', 'handshake') + 1, `backup migration: ${JSON.stringify(after.backup)}`);
    assert.ok(n(after.primary, 'upgrade', 'handshake') >= n(before.primary, 'upgrade', 'handshake') + 1, `primary upgrade: ${JSON.stringify(after.primary)}`);
    assert.ok(n(after.backup, 'upgrade', 'handshake') >= n(before.backup, 'upgrade', 'handshake') + 1, `backup upgrade: ${JSON.stringify(after.backup)}`);
    const st = await p.ctl(primary, 'replication.status');
    assert.equal(st.role, 'PRIMARY');
    assert.equal((await p.ctl(backup, 'replication.status')).role, 'BACKUP');
    assert.ok(protectedThroughout, 'the primary stayed protected throughout');
    assert.equal(st.replication.lastClone.at, clone0, 'no re-clone was needed');
    const journal = (await p.ctl(primary, 'events', { kind: 'partner-channel', limit: 20 })).events as Array<{ message: string }>;
    assert.ok(journal.some((e) => /^partner channel (inputs|upgrade): rejected handshake from .*: connection dropped/.test(e.message)), `journal: ${journal.map((e) => e.message).join(' | ')}`);
  });

  it('a TCP segment forged into the live input stream: rejected and counted by the backup, the pair protects itself again, nothing acknowledged lost', async () => {
    const primary = p.primary;
    const backup = partnerOf(primary);
    const before = n(await rejections(backup), 'inputs', 'record');
    // Requests flow while the attacker forges (registrations: each answered one must survive). Not the
    // 150/s load generator: the re-clone that follows the dropped stream holds every input for the
    // whole copy, and under TCG on this 2-core machine a copy under that load held inputs for 9 s
    // and its clone target then failed (docs/replication.md, Clone).
    const tag = `FG${process.pid % 1000}x`;
    const subs = Array.from({ length: 8 }, (_, i) => `${tag}${i}`);
    // From the primary's end of the link: a frame sent there arrives at the backup, as the primary's would.
    let listening!: () => void;
    const ready = new Promise<void>((r) => { listening = r; });
    const attack = runIn(primary, 'python3', [SNIFFER, 'plink', PLINK_ADDRESS[backup], String(basePort + 1), '4', 'inject'], 30000, () => listening());
    await Promise.race([ready, attack]);
    // Each retried for up to 2 minutes: the ones after the drop wait for the re-clone's cut-over.
    const replies = await p.ask(subs.map((s) => `REG ${s}`), 600);
    const out = JSON.parse((await attack).trim().split('\n').pop()!);
    assert.ok((out.injected as number) > 0, `the attacker forged segments into the stream (${(out.captured as string[]).length} segments seen)`);
    // Counted once the backup's TLS has read the forged record.
    for (let i = 0; i < 100 && n(await rejections(backup), 'inputs', 'record') <= before; i++) await new Promise((r) => setTimeout(r, 100));
    const after = await rejections(backup);
    assert.ok(n(after, 'inputs', 'record') >= before + 1, `the backup rejected a record: ${JSON.stringify(after)}`);
    p.primary = await waitProtected(p.chassis.layout, 120000);
    assert.equal(p.primary, primary, 'the roles did not change');
    const journal = (await p.ctl(backup, 'events', { kind: 'partner-channel', limit: 20 })).events as Array<{ message: string }>;
    assert.ok(journal.some((e) => /^partner channel inputs: rejected record from .*: connection dropped/.test(e.message)), `journal: ${journal.map((e) => e.message).join(' | ')}`);
    // Every registration acknowledged during the attack is on the primary and on its new clone.
    const acked = subs.filter((_, i) => / OK REG /.test(replies[i] ?? ''));
    assert.equal(acked.length, subs.length, `registrations answered during the attack: ${replies.join(' | ')}`);
    const gets = await p.ask(acked.map((s) => `GET ${s}`));
    const missing = acked.filter((_, i) => !/ OK GET /.test(gets[i] ?? ''));
    assert.deepEqual(missing, [], 'acknowledged registrations missing on the primary');
    assert.deepEqual(await p.settledStates(), { same: true }, 'primary and re-cloned backup states are identical');
  });
});
