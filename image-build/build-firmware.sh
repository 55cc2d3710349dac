#!/usr/bin/env bash
# build-firmware.sh: assembles the controller firmware into a slot image directory tree, and with
# --key signs it into an upgrade package (.usp).
#
#   <out>/slot/
#     firmware.json                 version, family, the Node.js runtime it needs (version + module ABI), build info
#     controller/understudy.mjs     the controller and CLI, one esbuild bundle (entry src/cli/firmware-entry.ts)
#     controller/node_modules/      the native addons (better-sqlite3, @serialport/bindings-cpp) and their runtime deps
#     bin/understudy, bin/understudyd   shell wrappers
#     guests/<name>.json            guest descriptors, image paths pointing inside the slot
#     guests/<name>-v<N>/           guest images from image-build/out/ (vmlinuz, initrd.img, manifest.json)
#     board/*.json                  board profiles
#     systemd/understudyd.service, systemd/understudy-commit.service
#     docs/upgrade.md
#   <out>/understudy-<family>-<version>.usp   (with --key)
#
# Usage: image-build/build-firmware.sh [--version V] [--family F] [--key private.pem] [--min-version V]
#                                      [--out DIR] [--no-guest]
#   --version      firmware version (default: package.json's)
#   --family       board family the package fits (default: understudy-sim)
#   --key          Ed25519 private key: also make the signed package
#   --min-version  oldest running version the package may upgrade
#   --out          output directory (default image-build/out/firmware); <out>/slot is rebuilt from scratch
#   --no-guest     leave the guest images out (a controller-only slot, e.g. for tests)
# Needs: npm dependencies installed and `npx tsc -p .` run (the package step uses dist/), the guest
# image built (image-build/build-guest.sh) unless --no-guest.
set -euo pipefail

log() { printf '[build-firmware] %s\n' "$*"; }
die() { printf '[build-firmware] ERROR: %s\n' "$*" >&2; exit 1; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

VERSION=$(node -p "require('./package.json').version")
FAMILY=understudy-sim
KEY=""
MIN_VERSION=""
OUT="$ROOT/image-build/out/firmware"
WITH_GUEST=1
while [ $# -gt 0 ]; do
	case "$1" in
		--version) VERSION=$2; shift 2 ;;
		--family) FAMILY=$2; shift 2 ;;
		--key) KEY=$2; shift 2 ;;
		--min-version) MIN_VERSION=$2; shift 2 ;;
		--out) OUT=$2; shift 2 ;;
		--no-guest) WITH_GUEST=0; shift ;;
		-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
		*) die "unknown option $1 (see --help)" ;;
	esac
done
[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]*)?$ ]] || die "--version '$VERSION' is not a version like 1.2.0"
[ -d node_modules/esbuild ] || die "npm dependencies missing: run npm ci (or image-build/setup.sh)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SLOT="$OUT/slot"
rm -rf "$SLOT"
mkdir -p "$SLOT"/{controller/node_modules,bin,guests,board,systemd,docs}

NODE_ABI=$(node -p process.versions.modules)
NODE_VERSION=$(node -p process.version)
NODE_MAJOR=$(node -p "process.versions.node.split('.')[0]")

# 1. The controller: one ESM bundle. Native addons stay external and are copied beside it; CommonJS
#    code inside the bundle gets a real `require` for them.
log "bundling the controller (esbuild, Node $NODE_VERSION, ABI $NODE_ABI)"
npx esbuild src/cli/firmware-entry.ts --bundle --platform=node --format=esm --target="node$NODE_MAJOR" \
	--outfile="$SLOT/controller/understudy.mjs" --sourcemap --legal-comments=none --log-level=warning \
	--external:better-sqlite3 --external:@serialport/bindings-cpp \
	--banner:js="import { createRequire as __usCreateRequire } from 'node:module'; const require = __usCreateRequire(import.meta.url);" \
	--define:__US_FIRMWARE_NODE_ABI__="\"$NODE_ABI\"" --define:__US_FIRMWARE_NODE_VERSION__="\"$NODE_VERSION\""

# 2. The native addons and everything they require at run time (their "dependencies", transitively),
#    without sources, build intermediates or docs.
log "copying native addons and their runtime dependencies"
node --input-type=module - "$ROOT" "$SLOT/controller/node_modules" better-sqlite3 @serialport/bindings-cpp <<'EOF'
import { cpSync, existsSync, readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
const [root, dest, ...roots] = process.argv.slice(2);
const nm = join(root, 'node_modules');
// Named as dependencies by the addons but used only when installing/compiling them.
const INSTALL_TIME_ONLY = new Set(['prebuild-install', 'node-addon-api', 'node-gyp']);
const seen = new Set();
const queue = [...roots];
while (queue.length) {
  const name = queue.shift();
  if (seen.has(name) || INSTALL_TIME_ONLY.has(name)) continue;
  seen.add(name);
  const dir = join(nm, name);
  if (!existsSync(join(dir, 'package.json'))) throw new Error(`runtime dependency ${name} is not installed in node_modules`);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  for (const d of Object.keys(pkg.dependencies ?? {})) queue.push(d);
  const keep = (src) => {
    const rel = relative(dir, src).split(sep);
    if (rel[0] === '') return true;
    if (['deps', 'test', 'tests', '.github', 'benchmark'].includes(rel[0])) return false; // (C sources go by extension below)
    if (rel[0] === 'build') return rel.length === 1 || (rel[1] === 'Release' && (rel.length === 2 || (rel.length === 3 && rel[2].endsWith('.node') && !rel[2].startsWith('test_'))));
    if (rel[0] === 'prebuilds') return rel.length === 1 || rel[1] === `${process.platform}-${process.arch}`;
    return !/\.(md|markdown|ts|map|gyp|gypi|cc|cpp|h|c)$/i.test(rel[rel.length - 1]); // sources, typings, docs
  };
  cpSync(dir, join(dest, name), { recursive: true, filter: keep, dereference: true });
}
console.log(`[build-firmware]   ${[...seen].sort().join(' ')}`);
EOF
cat > "$SLOT/controller/package.json" <<EOF
{ "name": "understudy-firmware", "version": "$VERSION", "private": true, "type": "module" }
EOF

# 3. Wrappers.
cat > "$SLOT/bin/understudy" <<'EOF'
#!/bin/sh
exec node "$(dirname "$(readlink -f "$0")")/../controller/understudy.mjs" "$@"
EOF
cat > "$SLOT/bin/understudyd" <<'EOF'
#!/bin/sh
exec node "$(dirname "$(readlink -f "$0")")/../controller/understudy.mjs" daemon "$@"
EOF
chmod 0755 "$SLOT/bin/understudy" "$SLOT/bin/understudyd"

# 4. Board profiles, systemd units, docs.
cp board/*.json "$SLOT/board/"
cp "$HERE/firmware/understudyd.service" "$HERE/firmware/understudy-commit.service" "$SLOT/systemd/"
[ -f docs/upgrade.md ] && cp docs/upgrade.md "$SLOT/docs/"

# 5. Guest images and descriptors, with image paths rewritten to point inside the slot.
GUESTS="[]"
if [ "$WITH_GUEST" = 1 ]; then
	log "adding guest images"
	GUESTS=$(node --input-type=module - "$ROOT" "$SLOT" <<'EOF'
import { cpSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
const [root, slot] = process.argv.slice(2);
const out = [];
// *-broken.json guests are deliberately broken builds for tests (aborted upgrades): never shipped.
for (const f of readdirSync(join(root, 'guests')).filter((n) => n.endsWith('.json') && !n.endsWith('-broken.json')).sort()) {
  const d = JSON.parse(readFileSync(join(root, 'guests', f), 'utf8'));
  const images = new Set();
  for (const k of ['kernel', 'initrd']) {
    if (!d.image?.[k]) continue;
    const abs = resolve(join(root, 'guests'), d.image[k]);
    if (!existsSync(abs)) throw new Error(`guest ${f}: ${abs} missing: run image-build/build-guest.sh`);
    const dir = basename(dirname(abs)); // e.g. dx-legacy-v1
    images.add(dirname(abs));
    d.image[k] = `${dir}/${basename(abs)}`;
  }
  for (const dir of images) cpSync(dir, join(slot, 'guests', basename(dir)), { recursive: true, filter: (s) => !basename(s).startsWith('.') });
  writeFileSync(join(slot, 'guests', f), `${JSON.stringify(d, null, 2)}\n`);
  out.push({ name: d.name, version: d.version, descriptor: `guests/${f}` });
}
process.stdout.write(JSON.stringify(out));
EOF
)
fi

# 6. What this slot is and what it needs.
GIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
node --input-type=module - "$SLOT/firmware.json" <<EOF
import { writeFileSync } from 'node:fs';
writeFileSync(process.argv[2], JSON.stringify({
  name: 'understudy',
  version: '$VERSION',
  family: '$FAMILY',
  node: {
    // The bundled native addons are built for this module ABI: the blade needs Node.js $NODE_MAJOR.x.
    version: '>=$NODE_MAJOR.0.0 <$((NODE_MAJOR + 1)).0.0',
    moduleAbi: '$NODE_ABI',
    builtWith: '$NODE_VERSION',
    platform: '$(node -p "process.platform + \"-\" + process.arch")',
  },
  entry: 'controller/understudy.mjs',
  nativeAddons: ['better-sqlite3', '@serialport/bindings-cpp'],
  guests: $GUESTS,
  builtAt: new Date().toISOString(),
  gitCommit: '$GIT_COMMIT',
}, null, 2) + '\n');
EOF
# Packages hold regular files only.
find "$SLOT" -type l -delete
log "slot image: $SLOT ($(du -sh "$SLOT" | cut -f1))"

# 7. The signed package.
if [ -n "$KEY" ]; then
	[ -f dist/src/cli/main.js ] || die "dist/ missing: run npx tsc -p . first"
	PKG="$OUT/understudy-$FAMILY-$VERSION.usp"
	args=(upgrade build --key "$KEY" --family "$FAMILY" --version "$VERSION" --from "$SLOT" --out "$PKG"
		--description "understudy $VERSION ($GIT_COMMIT) for $FAMILY")
	[ -n "$MIN_VERSION" ] && args+=(--min-version "$MIN_VERSION")
	node dist/src/cli/main.js "${args[@]}"
	log "package: $PKG"
fi
