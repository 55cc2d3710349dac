/**
 * The serial partner link on a real tty (a socat pty pair): what the line delivered before the link
 * opened is the past and never reaches the membership as a fresh heartbeat. SerialLink relies on
 * serialport's open (it flushes the tty's queues, TCIOFLUSH) and reads nothing before it: this
 * holds both to that.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SerialPort } from 'serialport';
import { SerialLink } from '../../src/hw/links/links.js';
import { SlipFrameDecoder, slipEncode } from '../../src/hw/serial/slip.js';
import { CLOCK_TICKS_PER_S, parseProcStat } from '../../src/hw/proc-state.js';
import { discardSerialUntil } from '../../src/sim/chassis/serial-relay.js';
import { alive, eventually } from '../support/rig.js';
import { ptyPair, stopPty } from '../support/terminal.js';

describe('serial partner link on a pty pair (socat)', function () {
  this.timeout(20000);
  let dir = '';
  let socat: ChildProcess | undefined;
  let partner: SerialPort | undefined;
  let link: SerialLink | undefined;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-serial-link-'));
    socat = await ptyPair(join(dir, 'partner'), join(dir, 'board'));
    partner = new SerialPort({ path: join(dir, 'partner'), baudRate: 115200, autoOpen: false });
    partner.on('error', () => undefined); // writes still queued when it closes end with "Canceled"
    await new Promise<void>((resolve, reject) => partner!.open((e) => (e ? reject(e) : resolve())));
  });

  afterEach(async () => {
    await link?.close();
    link = undefined;
    if (partner?.isOpen) await new Promise<void>((r) => partner!.close(() => r()));
    await stopPty(socat);
    rmSync(dir, { recursive: true, force: true });
  });

  const send = (text: string) => new Promise<void>((resolve, reject) => partner!.write(slipEncode(Buffer.from(text)), (e) => (e ? reject(e) : partner!.drain(() => resolve()))));

  it('frames the partner sent before the link opened are discarded; the ones after it arrive', async () => {
    for (let i = 0; i < 20; i++) await send(`stale-${i}`);
    await new Promise((r) => setTimeout(r, 200)); // in the board end's input queue by now
    link = new SerialLink({ path: join(dir, 'board'), baudRate: 115200 });
    const got: string[] = [];
    link.on('frame', (f: Buffer) => got.push(f.toString()));
    await link.open();
    await send('fresh-1');
    await send('fresh-2');
    await eventually(() => (got.length >= 2 ? true : undefined), 5000, 20);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(got, ['fresh-1', 'fresh-2']);
    assert.equal(link.counters.errors, 0, link.lastError);
  });

  /**
   * 120 KB of frames toward the board end: more than a pty takes, so with nobody reading, socat and
   * the partner's side hold the rest (the writes then wait: `drained` false does not wait for them).
   */
  async function flood(drained: boolean): Promise<void> {
    const chunk = Buffer.concat(Array.from({ length: 100 }, (_, i) => slipEncode(Buffer.from(`stale-${i}-${'x'.repeat(40)}`))));
    for (let i = 0; i < 25; i++) {
      const written = new Promise<void>((resolve) => partner!.write(chunk, () => resolve())); // a write cut by the close is fine
      if (drained) await written;
    }
    await new Promise((r) => setTimeout(r, 300));
  }

  async function framesAfterOpen(): Promise<string[]> {
    link = new SerialLink({ path: join(dir, 'board'), baudRate: 115200 });
    const got: string[] = [];
    link.on('frame', (f: Buffer) => got.push(f.toString().slice(0, 8)));
    await link.open();
    await send('fresh-1');
    await eventually(() => (got.includes('fresh-1') ? true : undefined), 5000, 20);
    return got;
  }

  it('the mechanism: seconds of frames held behind a board end nobody reads reach the link when it opens, as if fresh', async () => {
    await flood(false);
    const got = await framesAfterOpen();
    assert.ok(got.filter((f) => f.startsWith('stale-')).length > 100, `stale frames arrived: ${got.length}`);
  });

  it('the chassis drops what reaches a board end until its controller is up (discardSerialUntil): the link then gets only fresh frames', async () => {
    let up = false;
    const discarding = discardSerialUntil(join(dir, 'board'), () => up, 20);
    await new Promise((r) => setTimeout(r, 200));
    await flood(true);
    up = true;
    const dropped = await discarding;
    assert.ok(dropped > 100000, `dropped ${dropped} bytes`);
    const got = await framesAfterOpen();
    assert.deepEqual(got, ['fresh-1']);
  });

  for (const mode of ['link', 'relay-end'] as const) it(`${mode === 'link' ? 'a link' : 'the chassis relay\'s end of the line (openSerialEnd)'} at SCHED_FIFO on one core whose line backed up keeps reading at a few % of the core (no livelock with its thread pool): CI, 2026-12-06`, async () => {
    // The membership process's scheduling, pinned to core 0 so that no other core can run its pool
    // threads (on the chassis, the other core was taken by the partner board's membership process).
    const child = spawn('taskset', ['-c', '0', process.execPath, join(dirname(fileURLToPath(import.meta.url)), '..', 'support', 'serial-link-rt.js'), join(dir, 'board'), mode],
      { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    type Report = { t: 'report'; txFrames: number; txDropped: number; rxFrames: number; errors: number };
    const next = <T>(t: string) => new Promise<T>((resolve, reject) => {
      const onMsg = (m: { t: string }) => { if (m.t === t) { child.off('exit', onExit); child.off('message', onMsg); resolve(m as T); } };
      const onExit = (code: number | null) => { child.off('message', onMsg); reject(new Error(`serial-link-rt exited (${code})`)); };
      child.on('message', onMsg);
      child.once('exit', onExit);
    });
    const report = async (): Promise<Report> => { const r = next<Report>('report'); child.send({ t: 'report' }); return r; };
    const cpuTicks = () => parseProcStat(readFileSync(`/proc/${child.pid}/stat`, 'latin1')).cpuTicks;
    try {
      await next('ready');
      // The partner reads nothing: the link's line backs up until its frames are dropped.
      child.send({ t: 'flood' });
      await eventually(async () => ((await report()).txDropped > 0 ? true : undefined), 10000, 100);
      // The partner reads again and sends a frame every 5 ms; the link sends one every 5 ms too.
      // Every frame the partner decodes is whole: the rest of a frame the full tty took only in part
      // went out before the next frame, never behind it.
      const frameBytes = Buffer.alloc(46, 0x5a);
      const decoded = { whole: 0, torn: 0 };
      const decoder = new SlipFrameDecoder((f) => { if (f.equals(frameBytes)) decoded.whole++; else decoded.torn++; });
      partner!.on('data', (d: Buffer) => decoder.push(d));
      child.send({ t: 'pace' });
      const frames = setInterval(() => partner!.write(slipEncode(Buffer.from('partner-heartbeat'))), 5);
      try {
        const before = (await report()).rxFrames;
        const received = await eventually(async () => {
          const r = await report();
          return r.rxFrames - before >= 100 ? r.rxFrames - before : undefined;
        }, 10000, 100);
        assert.ok(received >= 100);
        const t0 = cpuTicks();
        const at = performance.now();
        await new Promise((r) => setTimeout(r, 2000));
        const share = ((cpuTicks() - t0) / CLOCK_TICKS_PER_S) / ((performance.now() - at) / 1000);
        // Livelocked, it used the kernel's real-time cap (95 %) and read nothing.
        assert.ok(share < 0.5, `the link's process used ${Math.round(share * 100)} % of its core`);
        assert.equal((await report()).errors, 0);
        assert.ok(decoded.whole >= 100, `the partner decoded ${decoded.whole} whole frames`);
        assert.equal(decoded.torn, 0, 'no torn or interleaved frame');
      } finally {
        clearInterval(frames);
      }
      child.send({ t: 'stop' });
      await eventually(() => (alive(child.pid!) ? undefined : true), 5000, 50);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
