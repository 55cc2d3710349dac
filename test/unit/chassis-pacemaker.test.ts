/**
 * The files the chassis writes for `--manager pacemaker`, without running corosync: corosync.conf
 * names every board with its backplane address (two_node only for a pair), and the namespace's init
 * script mounts every private folder before any daemon starts, fails on the first error, binds the
 * package's agent, and starts pacemakerd only after corosync answers.
 */
import assert from 'node:assert/strict';
import { PLINK_PORT, chassisLayout } from '../../src/sim/chassis/layout.js';
import { execFileSync } from 'node:child_process';
import { BOOT_COUNT_ENV, COROSYNC_PORT, corosyncConf, FENCE_AGENT, FENCE_DEVICE_ID, fenceDeviceXml, GUEST_CLONE_ID, guestCloneXml, guestIds, initialPlacementXml, initScript, INSTALLED_FENCE_AGENT, nsenterArgv, OCF_PROVIDER_DIR, pacemakerArgv, pacemakerFiles, REBOOT_CLUSTER_DELAY_S, SHM_SIZE, wrapperScript } from '../../src/sim/chassis/pacemaker.js';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { UsError } from '../../src/core/errors.js';
import { chassisUp } from '../../src/sim/chassis/launcher.js';
import { boardProfileSchema } from '../../src/config/board-profile.js';
import { chassisProfile, pairingProfile, templateFile } from '../../src/sim/chassis/profiles.js';

describe('simulated chassis: corosync and pacemaker files (--manager pacemaker)', () => {
  it('corosync.conf: knet with crypto, one node per board on its backplane address, two_node only for two boards', () => {
    const three = corosyncConf('us', ['sim-a', 'sim-b', 'sim-c']);
    assert.match(three, /transport: knet/);
    assert.match(three, /crypto_cipher: aes256/);
    // Not the pair's heartbeat port on the same addresses.
    assert.match(three, new RegExp(`mcastport: ${COROSYNC_PORT}\\n`));
    assert.notEqual(COROSYNC_PORT, PLINK_PORT);
    for (const [i, b] of ['sim-a', 'sim-b', 'sim-c'].entries()) {
      assert.match(three, new RegExp(`ring0_addr: 198\\.51\\.100\\.${i + 1}\\n    name: ${b}\\n    nodeid: ${i + 1}\\n`));
    }
    assert.doesNotMatch(three, /two_node/);
    assert.match(corosyncConf('us', ['sim-a', 'sim-b']), /two_node: 1/);
    // Braces on lines of their own: corosync's parser refuses `node { ring0_addr: …` on one line.
    for (const line of three.split('\n')) assert.ok(!/\{\s*\S/.test(line), `"${line}"`);
  });

  it('init script: set -e; every private folder mounted before corosync starts; the OCF agent and the fence agent bound; pacemakerd only after corosync answers', () => {
    const L = chassisLayout('us', '/run/understudy/chassis-us', 3);
    const f = pacemakerFiles(L, 'sim-c');
    const s = initScript(f, 'sim-c', L.runDir);
    const at = (needle: string) => {
      const i = s.indexOf(needle);
      assert.ok(i >= 0, `the script has: ${needle}`);
      return i;
    };
    assert.match(s, /^#!\/bin\/sh\n.*\nset -eu\n/);
    const corosync = at('corosync -f &');
    for (const m of ['/etc/corosync', '/var/lib/pacemaker', '/var/lib/corosync', '/var/log/pacemaker', '/var/log/cluster', 'shm /dev/shm', `'/mnt' /run`, '/usr/lib/ocf/resource.d/understudy', 'hostname sim-c']) {
      assert.ok(at(m) < corosync, `${m} before corosync starts`);
    }
    assert.ok(at(`'${f.libPacemaker}' /var/lib/pacemaker`) > 0);
    // libqb's ring buffers (3 MB per IPC connection) must fit: 64 MB filled up with two guests' agents.
    assert.ok(at(`-o mode=1777,size=${SHM_SIZE} shm /dev/shm`) > 0);
    assert.ok(parseInt(SHM_SIZE, 10) >= 256 && SHM_SIZE.endsWith('m'), `a private /dev/shm of at least 256 MB (${SHM_SIZE})`);
    assert.ok(at(`'${OCF_PROVIDER_DIR}' /usr/lib/ocf/resource.d/understudy`) > 0);
    // The fence agent: the checkout's copy over the installed one, only where there is one to cover.
    const bindAgent = at(`mount -n --bind '${FENCE_AGENT}' ${INSTALLED_FENCE_AGENT}\n`);
    assert.ok(at(`if [ -f '${FENCE_AGENT}' ] && [ -f ${INSTALLED_FENCE_AGENT} ]; then`) < bindAgent);
    assert.ok(bindAgent < corosync, 'the fence agent bound before corosync starts');
    // At a reboot (not at the first boot) corosync waits a blade's boot time.
    const rebootWait = at(`if [ "\${${BOOT_COUNT_ENV}:-1}" -gt 1 ]; then`);
    assert.ok(rebootWait < at(`sleep ${REBOOT_CLUSTER_DELAY_S}\n`) && at(`sleep ${REBOOT_CLUSTER_DELAY_S}\n`) < corosync);
    assert.ok(REBOOT_CLUSTER_DELAY_S > 3.65 + 4.38, 'longer than corosync takes to see a board leave (token + consensus, three nodes)');
    assert.ok(at('until corosync-cmapctl') < at('pacemakerd -f &'));
    assert.ok(!/pkill|killall/.test(s));
  });

  it('the daemons start in their own mount, pid, uts and ipc namespaces inside the board\'s network namespace; the chassis\' unshare takes them with it', () => {
    const L = chassisLayout('us', '/tmp/us-x', 3);
    const argv = pacemakerArgv(L, 'sim-b');
    assert.deepEqual(argv.slice(0, 4), ['netns', 'exec', 'us-b', 'unshare']);
    for (const o of ['--mount', '--pid', '--uts', '--ipc', '--fork', '--mount-proc', '--kill-child=SIGKILL']) assert.ok(argv.includes(o), o);
    assert.equal(argv.at(-1), pacemakerFiles(L, 'sim-b').init);
    assert.deepEqual(nsenterArgv(42, ['crm_mon', '-1']), ['-t', '42', '-m', '-u', '-n', '-p', '-i', '--', 'crm_mon', '-1']);
  });

  it('the pair\'s profiles under --manager pacemaker follow corosync\'s quorum through the board\'s in-cluster script, which enters the namespaces from outside and runs as is inside', () => {
    const L = chassisLayout('us', '/tmp/us-x', 3);
    const t = (b: 'sim-a' | 'sim-b' | 'sim-c') => JSON.parse(readFileSync(templateFile(b), 'utf8'));
    const a = chassisProfile(t('sim-a'), 'sim-a', L, 115200, 'simulated', 'pacemaker');
    assert.equal(a.ha.manager, 'pacemaker');
    const f = pacemakerFiles(L, 'sim-a');
    assert.deepEqual(a.ha.quorumCommand, [f.wrapper, 'stdbuf', '-oL', 'corosync-quorumtool', '-m', '-p']);
    assert.equal(boardProfileSchema.safeParse(a).success, true);
    assert.equal(pairingProfile(t('sim-b'), 'sim-c', 'sim-a', L, 'simulated', 'pacemaker').ha.manager, 'pacemaker', 'an N+1 pairing too');
    assert.equal(chassisProfile(t('sim-a'), 'sim-a', L, 115200).ha.manager, undefined, 'the pair alone without --manager pacemaker');
    assert.equal(chassisProfile(t('sim-c'), 'sim-c', L, 115200, 'simulated', 'pacemaker').ha, undefined, 'a spare has no ha section');
    const w = wrapperScript(f, 'sim-a');
    assert.match(w, /^if \[ -e \/run\/understudy-in-cluster \]; then exec "\$@"; fi$/m);
    assert.match(w, /^exec nsenter -t "\$i" -m -u -i -p -- "\$@"$/m);
    assert.ok(w.includes(f.unsharePid));
    assert.match(initScript(f, 'sim-a', L.runDir), /^: > '\/mnt'\/understudy-in-cluster$/m, 'the marker in the namespace\'s own /run');
    // Without a cluster stack the script fails, naming the board.
    const r = (() => { try { execFileSync('sh', ['-c', w, 'in-cluster', 'true'], { stdio: 'pipe' }); return ''; } catch (e) { return String((e as { stderr: Buffer }).stderr); } })();
    assert.match(r, /in-cluster: sim-a runs no cluster stack/);
  });

  it('the guest\'s clone in the CIB: promotable, promoted-max 1, one board profile per node by a rule on #uname, well-formed with unique ids', () => {
    const L = chassisLayout('pmx', '/tmp/us-pmx', 3);
    const xml = guestCloneXml(L, { cli: '/opt/u/bin/understudy', daemon: '/opt/u/bin/understudyd', guestFile: '/opt/u/guests/a&b.json' });
    assert.match(xml, new RegExp(`^<clone id="${GUEST_CLONE_ID}">`));
    assert.match(xml, /name="promotable" value="true"/);
    assert.match(xml, /name="promoted-max" value="1"/);
    // One guest: its primary and one backup, placed by Pacemaker on any two boards (N+1), told of each other's moves.
    assert.match(xml, /name="clone-max" value="2"/);
    assert.match(xml, /name="notify" value="true"/);
    for (const b of L.boardNames) {
      const set = new RegExp(`<instance_attributes id="g-${b}" score="\\d+"><rule id="g-${b}-r" score="0"><expression id="g-${b}-e" attribute="#uname" operation="eq" value="${b}"/></rule><nvpair id="g-${b}-board" name="board" value="${L.boards[b].profile}"/>`
        + `<nvpair id="g-${b}-pair" name="pair_profile" value="${L.boards[b].dir}/with-%s.json"/></instance_attributes>`);
      assert.match(xml, set, `${b}: its own profile and its pairing profiles' pattern by a rule on its name`);
    }
    // A pair alone (two boards) has no spare to pair with: no pattern.
    assert.doesNotMatch(guestCloneXml(chassisLayout('us', '/run/understudy/chassis-us', 2), { cli: 'u', daemon: 'd' }), /pair_profile/);
    // The agent's operations get the time a TCG boot and a clone take, not Pacemaker's 20 s default.
    for (const op of ['start', 'promote']) assert.match(xml, new RegExp(`name="${op}" interval="0s" timeout="240s"`));
    assert.match(xml, /name="guest" value="\/opt\/u\/guests\/a&amp;b.json"/, 'values escaped');
    const ids = [...xml.matchAll(/ id="([^"]+)"/g)].map((m) => m[1]);
    assert.equal(new Set(ids).size, ids.length, 'every id unique');
    // xmllint (libxml2-utils, installed by image-build/setup.sh) finds it well-formed.
    execFileSync('xmllint', ['--noout', '-'], { input: xml });
    // The two monitors' intervals differ (Pacemaker refuses two monitors with one interval).
    const intervals = [...xml.matchAll(/name="monitor" interval="(\d+)s"/g)].map((m) => m[1]);
    assert.equal(new Set(intervals).size, 2);
  });

  it('guest 2\'s clone: its own ids (none shared with guest 1\'s), its profiles under guest2/ per node, its pairing profiles\' pattern; its first placement on its natural pair', () => {
    const L = chassisLayout('pmx', '/tmp/us-pmx', 3);
    const o = { cli: '/opt/u/bin/understudy', daemon: '/opt/u/bin/understudyd' };
    const one = guestCloneXml(L, o);
    const two = guestCloneXml(L, o, 2);
    assert.match(two, /^<clone id="guest2-clone">/);
    assert.match(two, /<primitive id="guest2" class="ocf" provider="understudy" type="guest">/);
    const ids = (x: string) => [...x.matchAll(/ id="([^"]+)"/g)].map((m) => m[1]!);
    assert.equal(new Set(ids(two)).size, ids(two).length, 'unique ids');
    assert.deepEqual(ids(two).filter((i) => ids(one).includes(i)), [], 'no id shared with guest 1\'s clone');
    for (const b of L.boardNames) {
      assert.ok(two.includes(`name="board" value="${L.boards[b].dir}/guest2/profile.json"`), `${b}: guest 2's profile`);
      assert.ok(two.includes(`name="pair_profile" value="${L.boards[b].dir}/guest2/with-%s.json"`), `${b}: guest 2's pairing profiles`);
    }
    assert.match(two, /name="clone-max" value="2"/);
    assert.deepEqual(initialPlacementXml(L, 2).map((c) => c.xml), [
      '<rsc_location id="guest2-clone-first-sim-c" rsc="guest2-clone" node="sim-c" score="100"/>',
      '<rsc_location id="guest2-clone-first-sim-b" rsc="guest2-clone" node="sim-b" score="100"/>',
    ]);
    assert.deepEqual(guestIds(1), { clone: GUEST_CLONE_ID, primitive: 'guest', prefix: 'g' });
    assert.equal(guestCloneXml(L, o, 1), one, 'guest 1\'s clone is the default');
  });

  it('the fence device of chassis up --stonith: fence_understudy_chassis on the power controller\'s socket, every board its own plug, monitored; well-formed', () => {
    const L = chassisLayout('pmx', '/tmp/us-a&b', 4);
    const xml = fenceDeviceXml(L);
    assert.match(xml, new RegExp(`^<primitive id="${FENCE_DEVICE_ID}" class="stonith" type="fence_understudy_chassis">`));
    assert.match(xml, /name="socket" value="\/tmp\/us-a&amp;b\/power.sock"/, 'the power controller\'s socket, escaped');
    assert.match(xml, /name="pcmk_host_list" value="sim-a sim-b sim-c sim-d"/);
    assert.match(xml, /name="pcmk_host_map" value="sim-a:sim-a;sim-b:sim-b;sim-c:sim-c;sim-d:sim-d"/);
    assert.match(xml, /name="monitor" interval="30s"/);
    execFileSync('xmllint', ['--noout', '-'], { input: xml });
  });

  it('chassis up refuses --stonith without --manager pacemaker, before it builds anything', async () => {
    const runDir = '/tmp/us-stonith-refused-never-built';
    await assert.rejects(chassisUp({ name: 'stx', runDir, stonith: true }), (e: UsError) => e.code === 'US_ERR_CONFIG' && /--stonith needs --manager pacemaker/.test(e.message));
    assert.equal(existsSync(runDir), false, 'nothing built');
  });
});
