/**
 * How the controller's two Node processes are started so a paired board stays small: V8 heap limits
 * and glibc malloc settings, measured with bench/daemon (figures and the reasoning in BENCHMARKS.md).
 * Every launcher of understudyd uses these (the simulated chassis, `understudy guest start`, the
 * systemd unit repeats them); the HA layer starts its membership process with its own.
 * Imports nothing: a launcher that reads these loads no daemon code. In core because launchers sit in
 * several layers (ha's membership process, cli, sim).
 */

/**
 * understudyd: a 2 MB young generation (V8's default grows it to 16 MB, which an idle board then
 * keeps resident). Scavenges stay sub-millisecond; a clone's stream goes through Buffers outside it.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];

/**
 * glibc gives each thread that mallocs an arena of its own (up to 8 per core); two are plenty for
 * a process whose work is on one event loop.
 */
export const DAEMON_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

/**
 * The membership process (heartbeats, watchdog kicks): a heap of ~5 MB in use. A 1 MB young
 * generation; the old-generation limit is a ceiling only (24 MB, five times what it uses).
 * Not --lite-mode nor --jitless: they save ~6 MB but cost 60-70 % more CPU on the 200 Hz
 * heartbeats (measured: 16-17 % instead of ~10 % of a core).
 */
export const MEMBERSHIP_NODE_FLAGS: readonly string[] = ['--max-old-space-size=24', '--max-semi-space-size=1'];

/**
 * One malloc arena; two libuv pool threads (serialport writes and reads go through the pool; two so
 * a slow write never queues a read behind it) instead of four.
 */
export const MEMBERSHIP_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '1', UV_THREADPOOL_SIZE: '2' };
