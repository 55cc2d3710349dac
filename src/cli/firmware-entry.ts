/**
 * The single JS entry of the firmware bundle (image-build/build-firmware.sh bundles it with esbuild
 * into <slot>/controller/understudy.mjs). Refuses to run on a Node whose ABI differs from the one the
 * bundled native addons (better-sqlite3, @serialport/bindings-cpp) were built for, then runs the daemon
 * (`understudy.mjs daemon --board … --guest …`, what understudyd.service starts) or the CLI (any other
 * arguments). Owns nothing else.
 */

/** Set by the bundler (esbuild `define`): process.versions.modules of the build machine. */
declare const __US_FIRMWARE_NODE_ABI__: string | undefined;
declare const __US_FIRMWARE_NODE_VERSION__: string | undefined;

const abi = typeof __US_FIRMWARE_NODE_ABI__ === 'string' ? __US_FIRMWARE_NODE_ABI__ : undefined;
if (abi && process.versions.modules !== abi) {
  const built = typeof __US_FIRMWARE_NODE_VERSION__ === 'string' ? __US_FIRMWARE_NODE_VERSION__ : '?';
  process.stderr.write(`error US_ERR_CONFIG: this firmware needs Node.js with module ABI ${abi} (built with ${built}); ` +
    `this is ${process.version} (ABI ${process.versions.modules}); see firmware.json\n`);
  process.exit(1);
}

if (process.argv[2] === 'daemon') {
  process.argv.splice(2, 1);
  await import('./understudyd.js');
} else {
  await import('./main.js');
}
