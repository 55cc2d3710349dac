#!/usr/bin/env bash
# build-guest.sh: builds the dx-legacy reference guest image
#   image-build/out/dx-legacy-v<major>/{vmlinuz,initrd.img,manifest.json}
# from Debian's kernel package, busybox-static and the static C application in
# guests/dx-legacy/src. Idempotent: a stamp (sha256 of the sources, the init
# script, this script and the version) short-cuts an unchanged rebuild.
#
# Environment (all optional):
#   DX_VERSION      application version, default 1.0.0; the output directory is
#                   dx-legacy-v<major>, so v1 and v2 images live side by side.
#                   The major also selects the application generation compiled
#                   in (-DDX_FORMAT=<major>: 1 or 2, see guests/dx-legacy/src/dxcore.h)
#   DX_BREAK        "crash": a deliberately broken build for aborted-upgrade
#                   tests (loads the state, then aborts before DX-READY), into
#                   dx-legacy-v<major>-broken; "poison": a build with poison
#                   triggers for the poison-input tests (a REG of a subscriber
#                   named crash* crashes the guest, hang* hangs it), into
#                   dx-legacy-v<major>-poison; default empty (a working build)
#   DX_SRC_DIR      C sources, default guests/dx-legacy/src
#   DX_APP_SOURCES  .c files of the app inside DX_SRC_DIR, default "dxlegacy.c dxcore.c"
#   DX_INIT         the initramfs /init, default guests/dx-legacy/init
#   DX_OUT_DIR      output root, default image-build/out
#   DX_CACHE_DIR    download cache, default image-build/cache
#   DX_KERNEL_PKG   kernel package to use (default: the cached one, else the
#                   one linux-image-amd64 depends on)
#   DX_KERNEL_FORMAT  pvh (default) or bzimage; see "kernel format" below
#   DX_FORCE=1      rebuild even if the stamp matches
#
# Kernel format: Debian's bzImage is xz-compressed, and under TCG (no KVM) the
# in-guest decompression alone costs ~3 s of boot. With "pvh" the output
# vmlinuz is the same kernel, decompressed here once into its ELF image, which
# QEMU's -kernel boots directly through the PVH entry point (boot to DX-READY
# ~3 s instead of ~6 s under TCG). -kernel/-initrd/-append are used exactly as
# with a bzImage. "bzimage" ships Debian's file unchanged (for a bootloader).
# Needs root on a Debian host (apt-get for missing build tools, mknod).
# Re-run under bash when started as "sh build-guest.sh" (this line is POSIX).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

log() { printf '[build-guest] %s\n' "$*"; }
die() { printf '[build-guest] ERROR: %s\n' "$*" >&2; exit 1; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"

DX_VERSION=${DX_VERSION:-1.0.0}
[[ $DX_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+.][A-Za-z0-9.+-]*)?$ ]] ||
	die "DX_VERSION '$DX_VERSION' is not a version like 1.0.0"
[ ${#DX_VERSION} -le 32 ] || die "DX_VERSION longer than 32 characters"
MAJOR=${DX_VERSION%%.*}
case "$MAJOR" in 1 | 2) FORMAT=$MAJOR ;; *) die "DX_VERSION $DX_VERSION: no application generation for major $MAJOR (1 or 2)" ;; esac
DX_BREAK=${DX_BREAK:-}
case "$DX_BREAK" in
"") BREAK_CFLAGS=() ;;
crash) BREAK_CFLAGS=(-DDX_BREAK_CRASH) ;;
poison) BREAK_CFLAGS=(-DDX_POISON) ;;
*) die "DX_BREAK must be empty, crash or poison" ;;
esac
case "$DX_BREAK" in
"") NAME="dx-legacy-v$MAJOR" ;;
crash) NAME="dx-legacy-v$MAJOR-broken" ;;
poison) NAME="dx-legacy-v$MAJOR-poison" ;;
esac
SRC_DIR=${DX_SRC_DIR:-$ROOT/guests/dx-legacy/src}
APP_SOURCES=${DX_APP_SOURCES:-dxlegacy.c dxcore.c}
INIT=${DX_INIT:-$ROOT/guests/dx-legacy/init}
OUT_ROOT=${DX_OUT_DIR:-$HERE/out}
CACHE=${DX_CACHE_DIR:-$HERE/cache}
OUT="$OUT_ROOT/$NAME"
KERNEL_FORMAT=${DX_KERNEL_FORMAT:-pvh}
case "$KERNEL_FORMAT" in pvh | bzimage) ;; *) die "DX_KERNEL_FORMAT must be pvh or bzimage" ;; esac

# Wanted modules, in load order; dependencies are added in front of each.
# The NIC drivers go first: /init brings eth0 up at the "@net" marker, so the
# NIC's link negotiation overlaps the loading of the rest. 8139cp is what binds
# QEMU's rtl8139 (an 8139C+, which 8139too refuses); 8139too covers older chips.
MODULES_NET="e1000 8139too 8139cp ne2k-pci"
MODULES_REST="ata_piix sd_mod i6300esb"
# Soft dependencies (crypto back-ends of crc-t10dif / crc64-rocksoft used by
# sd_mod): without them the kernel would try to call modprobe. Loaded before sd_mod.
MODULES_OPTIONAL="crct10dif_generic crc64_rocksoft_generic"
BUSYBOX_APPLETS="sh mount umount mkdir cat echo ls insmod lsmod ifconfig route ip arping sleep uname dmesg mknod sync"

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

# ------------------------------------------------------------------ stamp
[ -d "$SRC_DIR" ] || die "no source dir $SRC_DIR"
[ -f "$INIT" ] || die "no init script $INIT"
compute_stamp() {
	{
		echo "version=$DX_VERSION kernel-format=$KERNEL_FORMAT format=$FORMAT break=$DX_BREAK"
		echo "sources=$APP_SOURCES"
		sha256sum "$SELF" "$INIT" | cut -d' ' -f1
		find "$SRC_DIR" -maxdepth 1 -type f \( -name '*.c' -o -name '*.h' \) | sort |
			while read -r f; do
				echo "$(basename "$f") $(sha256sum "$f" | cut -d' ' -f1)"
			done
		if [ -d "$HERE/guest" ]; then
			find "$HERE/guest" -type f | sort | xargs -r sha256sum | cut -d' ' -f1
		fi
	} | sha256sum | cut -d' ' -f1
}
STAMP=$(compute_stamp)
up_to_date() {
	[ "${DX_FORCE:-0}" != 1 ] && [ -f "$OUT/.stamp" ] && [ -f "$OUT/vmlinuz" ] &&
		[ -f "$OUT/initrd.img" ] && [ -f "$OUT/manifest.json" ] &&
		[ "$(cat "$OUT/.stamp")" = "$STAMP" ]
}
if up_to_date; then
	log "guest image up to date: $OUT"
	exit 0
fi
# one build at a time (test runners may start several); re-check once we hold it
mkdir -p "$CACHE" "$OUT_ROOT"
exec 9>"$CACHE/.lock"
flock 9
if up_to_date; then
	log "guest image up to date: $OUT"
	exit 0
fi
log "building $NAME (version $DX_VERSION) into $OUT"

# ------------------------------------------------------------------ host tools
APT_UPDATED=0
apt_update() {
	if [ "$APT_UPDATED" = 0 ]; then
		log "apt-get update"
		apt-get update -q >/dev/null || die "apt-get update failed"
		APT_UPDATED=1
	fi
}
apt_lists_empty() { ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }
apt_install() {
	log "installing host packages: $*"
	apt_lists_empty && apt_update
	if ! apt-get install -y -q --no-install-recommends "$@" >/dev/null; then
		[ "$APT_UPDATED" = 1 ] && die "apt-get install $* failed"
		apt_update
		apt-get install -y -q --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
	fi
}
ensure_pkgs() {
	local missing=() p
	for p in "$@"; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}
log "step 1/7: host tools"
[ "$(id -u)" = 0 ] || die "run as root (apt-get, mknod)"
ensure_pkgs busybox-static cpio xz-utils gzip gcc libc6-dev kmod binutils
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (busybox-static)"
if readelf -d "$BUSYBOX" 2>/dev/null | grep -q NEEDED; then
	die "$BUSYBOX is dynamically linked: install busybox-static"
fi

# ------------------------------------------------------------------ kernel
log "step 2/7: kernel package"
mkdir -p "$CACHE/debs" "$CACHE/kernel"
# The versioned package behind the linux-image-amd64 metapackage (e.g.
# linux-image-6.1.0-56-amd64), from the current apt lists.
resolve_kpkg() {
	apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'
}
download_kpkg() {
	log "downloading $KPKG"
	(cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$KPKG" >/dev/null 2>&1)
}
KPKG=${DX_KERNEL_PKG:-}
KDIR=""
if [ -z "$KPKG" ]; then
	# reuse the cached kernel: the image must not change under a source edit
	KDIR=$(find "$CACHE/kernel" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-*' \
		-exec test -f '{}/.complete' ';' -print | sort -V | tail -n1)
fi
if [ -z "$KDIR" ]; then
	deb=""
	if [ -n "$KPKG" ]; then
		deb=$(find "$CACHE/debs" -maxdepth 1 -name "${KPKG}_*.deb" | sort -V | tail -n1)
	fi
	if [ -z "$deb" ]; then
		apt_lists_empty && apt_update
		[ -n "$KPKG" ] || KPKG=$(resolve_kpkg)
		if [ -z "$KPKG" ] || ! download_kpkg; then
			# stale or missing lists: refresh once, resolve again, retry
			apt_update
			[ -n "${DX_KERNEL_PKG:-}" ] || KPKG=$(resolve_kpkg)
			[ -n "$KPKG" ] || die "cannot resolve the kernel package behind linux-image-amd64"
			download_kpkg || die "apt-get download $KPKG failed"
		fi
		deb=$(find "$CACHE/debs" -maxdepth 1 -name "${KPKG}_*.deb" | sort -V | tail -n1)
		[ -n "$deb" ] || die "no .deb for $KPKG after download"
	fi
	KDIR="$CACHE/kernel/$KPKG"
	log "extracting $(basename "$deb")"
	rm -rf "$KDIR.tmp"
	mkdir -p "$KDIR.tmp"
	dpkg-deb -x "$deb" "$KDIR.tmp"
	dpkg-deb -f "$deb" Package Version >"$KDIR.tmp/.package"
	rm -rf "$KDIR"
	mv "$KDIR.tmp" "$KDIR"
	touch "$KDIR/.complete"
fi
VMLINUZ=$(find "$KDIR/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
[ -n "$VMLINUZ" ] || die "no vmlinuz in $KDIR"
KVER=${VMLINUZ##*/vmlinuz-}
if [ -d "$KDIR/lib/modules/$KVER" ]; then
	MODDIR="$KDIR/lib/modules/$KVER"
elif [ -d "$KDIR/usr/lib/modules/$KVER" ]; then
	MODDIR="$KDIR/usr/lib/modules/$KVER"
	[ -e "$KDIR/lib" ] || ln -s usr/lib "$KDIR/lib" # depmod -b looks in lib/modules
else
	die "no modules for $KVER in $KDIR"
fi
KPKG_DESC=$(tr '\n' ' ' <"$KDIR/.package" | sed 's/Package: //; s/ Version: / /; s/ *$//')
log "kernel $KVER ($KPKG_DESC)"

# ------------------------------------------------------------------ modules
log "step 3/7: resolving modules"
if [ ! -s "$MODDIR/modules.dep" ]; then
	log "generating modules.dep (depmod)"
	depmod -b "$KDIR" "$KVER"
fi
norm() { local n=${1##*/}; n=${n%%.ko*}; echo "${n//-/_}"; }
declare -A DEPS=() PATHOF=() BUILTIN=() SEEN=()
while IFS= read -r line; do
	mod=${line%%:*}
	DEPS[$mod]=${line#*:}
	PATHOF[$(norm "$mod")]=$mod
done <"$MODDIR/modules.dep"
if [ -f "$MODDIR/modules.builtin" ]; then
	while IFS= read -r line; do BUILTIN[$(norm "$line")]=1; done <"$MODDIR/modules.builtin"
fi
ORDER=()
visit() { # depth-first: every dependency before its user
	local path=$1 d
	[ -n "${SEEN[$path]:-}" ] && return 0
	SEEN[$path]=1
	for d in ${DEPS[$path]}; do visit "$d"; done
	ORDER+=("$path")
}
want() {
	local name=$1 optional=$2 n
	n=$(norm "$name")
	if [ -n "${BUILTIN[$n]:-}" ]; then
		log "  $name is built into the kernel"
		return 0
	fi
	if [ -z "${PATHOF[$n]:-}" ]; then
		[ "$optional" = 1 ] && { log "  $name not in this kernel (optional, skipped)"; return 0; }
		die "module $name not found in $KVER"
	fi
	visit "${PATHOF[$n]}"
}
for m in $MODULES_NET; do want "$m" 0; done
ORDER+=("@net")
for m in $MODULES_OPTIONAL; do want "$m" 1; done
for m in $MODULES_REST; do want "$m" 0; done
log "  load order: $(for p in "${ORDER[@]}"; do printf '%s ' "$(basename "${p%%.ko*}")"; done)"

# ------------------------------------------------------------------ app
log "step 4/7: compiling dxlegacy $DX_VERSION (DX_FORMAT=$FORMAT${DX_BREAK:+, DX_BREAK=$DX_BREAK})"
mkdir -p "$OUT_ROOT"
STAGE=$(mktemp -d "$OUT_ROOT/.stage-$NAME.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,dev,proc,sys,etc,lib/modules,tmp}
srcs=()
for s in $APP_SOURCES; do srcs+=("$SRC_DIR/$s"); done
gcc -static -O2 -Wall -Wextra -DDX_VERSION="\"$DX_VERSION\"" -DDX_FORMAT="$FORMAT" \
	${BREAK_CFLAGS[@]+"${BREAK_CFLAGS[@]}"} -I"$SRC_DIR" \
	-o "$STAGE/bin/dxlegacy" "${srcs[@]}"
strip "$STAGE/bin/dxlegacy"

# ------------------------------------------------------------------ initramfs
log "step 5/7: assembling initramfs"
cp "$BUSYBOX" "$STAGE/bin/busybox"
for a in $BUSYBOX_APPLETS; do ln -s busybox "$STAGE/bin/$a"; done
ln -s bin "$STAGE/sbin"
install -m 0755 "$INIT" "$STAGE/init"
echo "$DX_VERSION" >"$STAGE/etc/dx-version"
echo "$KVER" >"$STAGE/etc/dx-kernel"
mknod -m 600 "$STAGE/dev/console" c 5 1
mknod -m 666 "$STAGE/dev/null" c 1 3
MODNAMES=()
: >"$STAGE/lib/modules/load.list"
for p in "${ORDER[@]}"; do
	if [ "$p" = "@net" ]; then
		echo "@net" >>"$STAGE/lib/modules/load.list"
		continue
	fi
	base=$(basename "$p")
	name=${base%%.ko*}
	case "$base" in
	*.ko) cp "$MODDIR/$p" "$STAGE/lib/modules/$name.ko" ;;
	*.ko.xz) xz -dc "$MODDIR/$p" >"$STAGE/lib/modules/$name.ko" ;;
	*.ko.zst)
		command -v zstd >/dev/null || ensure_pkgs zstd
		zstd -qdc "$MODDIR/$p" >"$STAGE/lib/modules/$name.ko"
		;;
	*.ko.gz) gzip -dc "$MODDIR/$p" >"$STAGE/lib/modules/$name.ko" ;;
	*) die "unknown module file $base" ;;
	esac
	params=""
	# scan synchronously so /dev/sda exists when insmod sd_mod returns
	[ "$(norm "$name")" = scsi_mod ] && params="scan=sync"
	echo "$name${params:+ $params}" >>"$STAGE/lib/modules/load.list"
	MODNAMES+=("$name")
done

log "step 6/7: packing initrd.img"
mkdir -p "$OUT"
# reproducible: fixed mtimes, owners and inode numbers, sorted names
find "$STAGE" -exec touch -h -d @0 '{}' +
(cd "$STAGE" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) |
	gzip -9 -n >"$OUT/initrd.img.tmp"
# Decompresses the bzImage payload into the kernel's ELF image if it has a PVH
# entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18); returns 1 otherwise.
bz_u8() { od -An -t u1 -j "$2" -N 1 "$1" | tr -d ' '; }
bz_u32() { od -An -t u4 -j "$2" -N 4 "$1" | tr -d ' '; }
extract_pvh() {
	local bz=$1 out=$2 setup poff plen start magic payload
	[ "$(dd if="$bz" bs=1 skip=514 count=4 2>/dev/null)" = HdrS ] || return 1
	setup=$(bz_u8 "$bz" 497)
	[ "$setup" = 0 ] && setup=4
	poff=$(bz_u32 "$bz" 584)
	plen=$(bz_u32 "$bz" 588)
	start=$(((setup + 1) * 512 + poff))
	magic=$(od -An -t x1 -j "$start" -N 4 "$bz" | tr -d ' ')
	payload="$out.payload"
	dd if="$bz" of="$payload" bs=1M iflag=skip_bytes,count_bytes skip="$start" count="$plen" 2>/dev/null || return 1
	case "$magic" in
	fd377a58) xz -dc --single-stream <"$payload" >"$out" 2>/dev/null || return 1 ;;
	1f8b*) gzip -dc <"$payload" >"$out" 2>/dev/null || [ -s "$out" ] || return 1 ;;
	28b52ffd)
		command -v zstd >/dev/null || ensure_pkgs zstd
		zstd -qdc <"$payload" >"$out" 2>/dev/null || [ -s "$out" ] || return 1
		;;
	*) return 1 ;;
	esac
	rm -f "$payload"
	[ "$(head -c 4 "$out" | od -An -t x1 | tr -d ' ')" = 7f454c46 ] || return 1
	readelf -n "$out" 2>/dev/null | grep -qE 'Unknown note type: \(0x00000012\)|PHYS32_ENTRY' || return 1
}
if [ "$KERNEL_FORMAT" = pvh ]; then
	if ! extract_pvh "$VMLINUZ" "$OUT/vmlinuz.tmp"; then
		log "kernel has no PVH entry; falling back to the bzImage"
		KERNEL_FORMAT=bzimage
	fi
fi
[ "$KERNEL_FORMAT" = bzimage ] && cp "$VMLINUZ" "$OUT/vmlinuz.tmp"
log "kernel format: $KERNEL_FORMAT ($(stat -c %s "$OUT/vmlinuz.tmp") bytes)"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"

log "step 7/7: manifest"
json_list() { local first=1 x; printf '['; for x in "$@"; do [ $first = 1 ] || printf ','; printf '"%s"' "$x"; first=0; done; printf ']'; }
cat >"$OUT/manifest.json.tmp" <<EOF
{
  "name": "$NAME",
  "version": "$DX_VERSION",
  "kernel": "$KVER",
  "kernelPackage": "$KPKG_DESC",
  "kernelFormat": "$KERNEL_FORMAT",
  "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "stateFormat": $FORMAT,
  "break": "$DX_BREAK",
  "modules": $(json_list "${MODNAMES[@]}"),
  "files": {
    "vmlinuz": "sha256:$(sha256sum "$OUT/vmlinuz" | cut -d' ' -f1)",
    "initrd.img": "sha256:$(sha256sum "$OUT/initrd.img" | cut -d' ' -f1)"
  },
  "stamp": "$STAMP"
}
EOF
mv "$OUT/manifest.json.tmp" "$OUT/manifest.json"
echo "$STAMP" >"$OUT/.stamp"
log "done: $OUT/vmlinuz ($(stat -c %s "$OUT/vmlinuz") bytes), $OUT/initrd.img ($(stat -c %s "$OUT/initrd.img") bytes)"
