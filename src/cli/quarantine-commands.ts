/**
 * `understudy quarantine list [--active]`, `quarantine show <q>`, `quarantine release <q> [--by NAME]`:
 * the client requests that crashed or hung both copies of the guest and are kept out of it
 * (docs/poison.md), as the controller keeps them (src/store/quarantine.ts, answered by
 * src/mgmt/quarantine-control.ts); --json prints the controller's answer as it is.
 */
import type { Command } from 'commander';
import { callControl } from '../mgmt/ipc.js';
import type { QuarantineJson } from '../store/quarantine.js';
import { controlSocketOf } from './locate.js';
import { action, table, type OutputOptions } from './output.js';

type Opts = OutputOptions & { board?: string; active?: boolean; by?: string };

/** An entry as the control socket answers it (quarantineJson). */
export type { QuarantineJson };

interface ListAnswer { board: string; active: number; entries: QuarantineJson[] }
interface ShowAnswer { board: string; entry: QuarantineJson }
interface ReleaseAnswer extends ShowAnswer { active: number }

/** How wide the REQUEST column may be before it is cut (the whole request is in `show`). */
export const REQUEST_COLUMN = 40;

/** The request's bytes as text: printable ASCII as it is, anything else escaped (\n, \xHH). */
export function requestText(e: Pick<QuarantineJson, 'payloadText' | 'payloadBase64'>): string {
  if (e.payloadText !== null) return e.payloadText;
  let s = '';
  for (const b of Buffer.from(e.payloadBase64, 'base64')) {
    s += b === 0x0a ? '\\n' : b === 0x0d ? '\\r' : b === 0x09 ? '\\t' : b === 0x5c ? '\\\\'
      : b >= 0x20 && b <= 0x7e ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  }
  return s;
}

function cut(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

function client(e: QuarantineJson): string {
  return e.clientAddress === null ? '-' : `${e.clientAddress}${e.clientPort === null ? '' : `:${e.clientPort}`}`;
}

/** 'primary crash, backup crash, restored crash'. */
export function failedText(e: Pick<QuarantineJson, 'failures'>): string {
  return e.failures.map((f) => `${f.copy} ${f.how}`).join(', ') || '-';
}

export function formatQuarantineList(r: ListAnswer): string {
  const head = `board ${r.board}: ${r.active ? `${r.active} input${r.active === 1 ? '' : 's'} in quarantine` : 'no input in quarantine'}`;
  if (!r.entries.length) return head;
  return [head, table([['Q', 'SEQ', 'CLIENT', 'REQUEST', 'FAILED', 'AT', 'STATUS', 'RETRIES'],
    ...r.entries.map((e) => [`q${e.id}`, e.seq, client(e), cut(requestText(e), REQUEST_COLUMN), failedText(e), e.at, e.status, e.answered])])].join('\n');
}

export function formatQuarantineEntry(e: QuarantineJson): string {
  const bytes = Buffer.from(e.payloadBase64, 'base64').length;
  return [
    `q${e.id}: ${e.status === 'active' ? 'ACTIVE' : 'released'}, quarantined ${e.at}`,
    `  sequence number  ${e.seq}`,
    `  client           ${client(e)}`,
    `  request id       ${e.requestId || '(none)'}`,
    `  request          ${requestText(e)} (${bytes} byte${bytes === 1 ? '' : 's'})`,
    ...e.failures.map((f, i) => `  ${i ? '                 ' : 'failed           '}${f.copy} on ${f.board}: ${f.how} (${f.cause}) at ${f.at}`),
    `  confirmed        ${e.confirmation || '-'}`,
    `  retries          ${e.answered} answered "${e.requestId} ERR POISON q${e.id}"`,
    e.status === 'released' ? `  released         ${e.releasedAt} by ${e.releasedBy}` : `  release with     understudy quarantine release q${e.id}`,
  ].join('\n');
}

export function registerQuarantineCommands(program: Command): void {
  const q = program.command('quarantine')
    .description('client requests that crashed or hung both copies of the guest, kept out of it (docs/poison.md)');

  q.command('list')
    .description('the quarantined inputs, newest first: active ones and released ones (history)')
    .option('--board <file>', 'board profile')
    .option('--active', 'only the inputs still in quarantine')
    .action(action(async (o: Opts) => (await callControl(await controlSocketOf(o.board), 'quarantine.list', { active: o.active === true })) as ListAnswer,
      (r) => formatQuarantineList(r)));

  q.command('show <q>')
    .description('one quarantined input (q7 or 7): its bytes, its client, which copies failed and how')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts, id: string) => (await callControl(await controlSocketOf(o.board), 'quarantine.show', { id })) as ShowAnswer,
      (r) => formatQuarantineEntry(r.entry)));

  q.command('release <q>')
    .description('take an input out of quarantine (fixed in a new guest version, or judged harmless): a retry of it reaches the guest again')
    .option('--board <file>', 'board profile')
    .option('--by <name>', 'who releases it, for the journal (default: $SUDO_USER, $USER, else "operator")')
    .action(action(async (o: Opts, id: string) => {
      const by = o.by ?? process.env.SUDO_USER ?? process.env.USER;
      return (await callControl(await controlSocketOf(o.board), 'quarantine.release', { id, ...(by ? { by } : {}) })) as ReleaseAnswer;
    }, (r) => `q${r.entry.id} released by ${r.entry.releasedBy}: a retry of it reaches the guest again; ${r.active ? `${r.active} input${r.active === 1 ? '' : 's'} still in quarantine` : 'no input in quarantine any more'}`));
}
