/**
 * The serial partner link on a real tty (a socat pty pair): what the line delivered before the link
 * opened is the past and never reaches the membership as a fresh heartbeat. SerialLink relies on
 * serialport's open (it flushes the tty's queues, TCIOFLUSH) and reads nothing before it: this
 * holds both to that.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SerialPort } from 'serialport';
import { SerialLink } from '../../src/hw/links/links.js';
import { slipEncode } from '../../src/hw/serial/slip.js';
import { discardSerialUntil } from '../../src/sim/chassis/serial-relay.js';
import { eventually } from '../support/rig.js';
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
});
