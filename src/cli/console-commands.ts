/**
 * `understudy console passwd`: sets the password of the board's serial console — a scrypt line in a
 * root-only file (default <storageDir>/console.passwd). On a terminal the password is asked twice
 * without echo; from a pipe one line is read (for provisioning scripts and the console itself).
 */
import { mkdirSync } from 'node:fs';
import { makeParentDirs } from '../core/dirs.js';
import { dirname } from 'node:path';
import type { Command } from 'commander';
import { loadBoardProfile } from '../config/board-profile.js';
import { UsError } from '../core/errors.js';
import { checkNewPassword, consolePasswordPath, hashPassword, writePasswordFile } from '../mgmt/console/password.js';
import { defaultBoardFile } from './locate.js';
import { action, type OutputOptions } from './output.js';

type Opts = OutputOptions & { board?: string; file?: string };

/** Reads one line from a terminal without echoing it. */
function readSecret(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.resume();
  return new Promise((resolve, reject) => {
    let text = '';
    const done = (err?: Error) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err); else resolve(text);
    };
    const onData = (d: Buffer) => {
      for (const ch of d.toString('utf8')) {
        const c = ch.codePointAt(0)!;
        if (c === 0x0d || c === 0x0a) return done();
        if (c === 0x03 || c === 0x04) return done(new UsError('US_ERR_PASSWORD', 'cancelled; nothing changed'));
        if (c === 0x7f || c === 0x08) text = [...text].slice(0, -1).join('');
        else if (c === 0x15) text = '';
        else if (c >= 0x20) text += ch;
        if (text.length > 4096) return done(new UsError('US_ERR_PASSWORD', 'too long'));
      }
    };
    stdin.on('data', onData);
  });
}

/** Reads the first line of a pipe (bounded). */
async function readPipedLine(): Promise<string> {
  let data = '';
  for await (const chunk of process.stdin) {
    data += (chunk as Buffer).toString('utf8');
    if (data.includes('\n') || data.length > 8192) break;
  }
  const line = data.split('\n')[0]!.replace(/\r$/, '');
  if (!line) throw new UsError('US_ERR_PASSWORD', 'no password on standard input');
  return line;
}

export function registerConsoleCommands(program: Command): void {
  const con = program.command('console').description('the serial console of this board');

  con.command('passwd')
    .description('set the console password: asked twice without echo on a terminal, or one line from a pipe')
    .option('--file <path>', 'password file (default: <storageDir>/console.passwd of the board)')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts) => {
      const file = o.file ?? consolePasswordPath(loadBoardProfile(defaultBoardFile(o.board)));
      let password: string;
      if (process.stdin.isTTY) {
        password = await readSecret('New console password: ');
        checkNewPassword(password);
        const again = await readSecret('Retype it: ');
        if (again !== password) throw new UsError('US_ERR_PASSWORD', 'the passwords differ; nothing changed');
      } else {
        password = await readPipedLine();
        checkNewPassword(password);
      }
      makeParentDirs(dirname(file));
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      writePasswordFile(file, await hashPassword(password));
      return { file, set: true };
    }, (r) => `console password set (${r.file}, mode 0600)`));
}
