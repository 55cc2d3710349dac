/**
 * parseProcStat (src/hw/proc-state.ts), the one reader of /proc/<pid>/stat fields: a name holding
 * spaces and parentheses, fields by their proc(5) numbers, CPU ticks; and the live line of this
 * process.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseProcStat, procState } from '../../src/hw/proc-state.js';

describe('/proc/<pid>/stat fields', () => {
  it('a name with spaces and parentheses does not shift the fields', () => {
    // fields 1..41 of a made-up line: 14 utime 7, 15 stime 5, 22 starttime 999, 40 rt_priority 20, 41 policy 1.
    const after = Array.from({ length: 39 }, (_, i) => String(i + 3));
    after[0] = 'S';
    after[14 - 3] = '7';
    after[15 - 3] = '5';
    after[22 - 3] = '999';
    after[40 - 3] = '20';
    after[41 - 3] = '1';
    const st = parseProcStat(`4242 (a (b) c) ${after.join(' ')}`);
    assert.equal(st.name, 'a (b) c');
    assert.deepEqual([st.field(3), st.field(4), st.field(22), st.field(40), st.field(41)], ['S', '4', '999', '20', '1']);
    assert.equal(st.cpuTicks, 12);
  });

  it('this process: its state, parent and a CPU count that never goes back', () => {
    const st = parseProcStat(readFileSync('/proc/self/stat', 'latin1'));
    assert.equal(Number(st.field(4)), process.ppid);
    assert.equal(procState(process.pid), 'R');
    let x = 0;
    for (let i = 0; i < 2e6; i++) x += i;
    assert.ok(x > 0 && parseProcStat(readFileSync('/proc/self/stat', 'latin1')).cpuTicks >= st.cpuTicks);
  });
});
