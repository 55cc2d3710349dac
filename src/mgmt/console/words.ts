/**
 * Splits a console command line into words the way a POSIX shell would for simple commands:
 * whitespace separates words; 'single quotes' keep everything literally; "double quotes" keep
 * spaces and honour \" and \\; a backslash outside quotes escapes the next character. No variables,
 * globbing, pipes or redirections: the words go to the CLI as its argv, never through a shell.
 */
import { UsError } from '../../core/errors.js';

export function splitWords(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: "'" | '"' | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote === "'") {
      if (c === "'") quote = undefined; else word += c;
      continue;
    }
    if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === '\\' && (line[i + 1] === '"' || line[i + 1] === '\\')) word += line[++i];
      else word += c;
      continue;
    }
    if (c === ' ' || c === '\t') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      continue;
    }
    inWord = true;
    if (c === "'" || c === '"') quote = c;
    else if (c === '\\') {
      if (i + 1 >= line.length) throw new UsError('US_ERR_CONTROL', 'a backslash at the end of the line escapes nothing');
      word += line[++i];
    } else word += c;
  }
  if (quote) throw new UsError('US_ERR_CONTROL', `unterminated ${quote === '"' ? 'double' : 'single'} quote`);
  if (inWord) words.push(word);
  return words;
}
