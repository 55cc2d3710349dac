/**
 * The board profile: one blade's hardware as the controller sees it (cores, serial ports, Ethernet,
 * watchdog, fencing, storage). Format documented in board/README.md. Validation only; nothing here
 * touches the hardware.
 */
import { isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { UsError } from '../core/errors.js';
import { loadJsonFile } from './load.js';
import { checkResolvedPaths, safePath, safeProgram } from './safe-path.js';

/**
 * Default of ha.priorityFencingDelayMs: the smallest the check below allows with the defaults of
 * deadtimeMs, primaryConfirmMs and fenceDelayMs (25 + 75 + 200). On the simulated chassis the primary
 * kills the backup a few ms after its confirmation and the two verdicts differ by a few ms
 * (BENCHMARKS.md, docs/ha.md "Partitions"). A shelf manager over IPMI needs seconds: set it in the profile.
 */
export const PRIORITY_FENCING_DELAY_MS = 300;

/**
 * Default of ha.noStateFenceDelayMs: twice the watchdog's default timeout (5 s), so a hung primary has
 * been reset by its own watchdog, and a live one heard again, well before a backup with none of its
 * state fences it.
 */
export const NO_STATE_FENCE_DELAY_MS = 10000;
/**
 * `ha.quorumSettleMs` by default: twice corosync's failure detection with its defaults for three
 * nodes (token 3650 ms + consensus 4380 ms, measured on the chassis), so that a loaded machine's slower
 * membership change is still seen before a withholding primary gives up waiting.
 */
export const QUORUM_SETTLE_MS = 16000;

const ipv4 = z.string().refine((s) => isIP(s) === 4, { message: 'must be an IPv4 address' });
const port = z.number().int().min(1).max(65535);
const core = z.number().int().min(0).max(1023);

const endpoint = z.strictObject({
  /** IPv4 address to bind or reach. */
  address: ipv4,
  port,
});

/** What a fence does to the partner, and when it stops bringing it back (both fencing devices). */
const fenceActionFields = {
  /**
   * reset: power-cycle the partner (Pacemaker's default `reboot`): it boots, joins as BACKUP and is
   * cloned again, so the pair returns to protection by itself. off: power it off; it stays off until
   * an operator powers it on. A partner already off is left off either way.
   */
  action: z.enum(['reset', 'off']).default('reset'),
  /**
   * A partner this board has reset `maxResets` times within the last `windowS` seconds is powered off
   * at the next fence instead, and stays off with an alarm: a board that keeps failing is not cycled
   * for ever. The count is kept in this board's store (it survives restarts).
   */
  escalation: z
    .strictObject({
      maxResets: z.number().int().min(1).max(100).default(3),
      windowS: z.number().int().min(1).max(7 * 24 * 3600).default(3600),
    })
    .default({ maxResets: 3, windowS: 3600 }),
};

/** What every SNMP manager of the `snmp` section has, whatever its version. */
const snmpManagerFields = {
  address: ipv4,
  port: port.default(162),
  /** trap: sent once; inform: acknowledged by the manager, retried. */
  notify: z.enum(['trap', 'inform']).default('trap'),
  /** Per try (ms) and retries of an inform (snmptrap -t, -r). */
  timeoutMs: z.number().int().min(100).max(60000).default(1000),
  retries: z.number().int().min(0).max(10).default(2),
};

export const boardProfileSchema = z
  .strictObject({
    /** Board name, used in logs, heartbeats and the storage path. */
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'lowercase letters, digits and -, at most 32'),
    /** Board family; upgrade packages name the families they fit. */
    family: z.string().min(1).max(64),
    /** Simulated board in the chassis, or a real blade. */
    kind: z.enum(['simulated', 'real']).default('real'),
    cores: z.strictObject({
      /** The core dedicated to the guest's single vCPU. */
      guest: core,
      /** Cores for the controller and QEMU's other threads. Must not contain the guest core. */
      housekeeping: z.array(core).min(1),
      /** SCHED_FIFO priority for the vCPU thread (1-99), or 0 for the normal scheduler. */
      guestRtPriority: z.number().int().min(0).max(99).default(0),
      /**
       * While this board's copy follows the primary's (any role but PRIMARY), its vCPU thread runs at
       * SCHED_IDLE: it gets the guest core only when nothing else there wants it. For boards whose
       * two guests share one core, the simulated chassis: there the backup's copy, handed every
       * input at the same instant as the primary's, made the primary's guest wait for it
       * (BENCHMARKS.md, bench/replication-cost). The backup logs and ACKs inputs whatever its copy's
       * speed. On a real blade the guest core is the board's own and this changes nothing: leave it
       * false. A promotion gives the vCPU its normal share back before the new primary serves.
       * Ignored with guestRtPriority > 0.
       */
      followerYield: z.boolean().default(false),
    }),
    /** QEMU binary, a name looked up on PATH or an absolute path. */
    qemuBinary: safeProgram.default('qemu-system-x86_64'),
    /**
     * The user QEMU runs as (started by setpriv as that user, never root): a system user without a
     * login. `root` keeps QEMU as root (a guest escape is then root on the blade). Must exist at start.
     */
    qemuUser: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'a user name: lowercase letters, digits, _ and -, at most 32, not starting with a digit or -').default('understudy-qemu'),
    /** Hypervisor accelerator: auto probes KVM (with a short timeout) and falls back to TCG. */
    accel: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
    /** Directory for the board's state: control socket, logs, guest console, store. Relative paths are from the profile's folder. */
    storageDir: safePath,
    /**
     * The service endpoint: where external clients send requests to the guest. With `interface`, the
     * address moves with the primary role: added to that interface (and announced by gratuitous ARP)
     * on takeover, removed on hand-over.
     */
    service: z.strictObject({
      address: ipv4,
      port,
      interface: z.string().min(1).optional(),
      prefixLength: z.number().int().min(8).max(32).default(24),
    }),
    /**
     * Bounds of the input path (docs/replication.md, "Bounds on the input path"): what a flood of
     * requests from any number of sources can make the controller hold. Every drop is counted in
     * `understudy status` and the metrics, and journaled when it begins.
     */
    input: z
      .strictObject({
        /** Largest request datagram accepted (bytes, 1-2048); larger ones are dropped. */
        maxRequestBytes: z.number().int().min(1).max(2048).default(512),
        /**
         * Requests per second accepted from one source address (token bucket); 0: no per-source limit.
         * Above the most a controller has passed to the guest (13 695/s, BENCHMARKS.md): one gateway
         * carrying many users is not throttled; lower it to the largest legitimate client's rate.
         */
        ratePerSource: z.number().int().min(0).max(1000000).default(20000),
        /** Requests a source address may send at once above its rate (bucket size, 1-100000). */
        burstPerSource: z.number().int().min(1).max(100000).default(2000),
        /** Source addresses whose rate is tracked; past this the longest idle one is forgotten (16-1000000). */
        trackedSources: z.number().int().min(16).max(1000000).default(4096),
        /** Inputs queued before the guest (or held at a clone's cut-over) beyond which new requests are dropped (16-1000000). */
        maxQueuedInputs: z.number().int().min(16).max(1000000).default(512),
        /** Requests waiting for their reply remembered for output commit; the oldest are forgotten past it (16-1000000). */
        maxPendingReplies: z.number().int().min(16).max(1000000).default(8192),
        /** A request whose reply has not come for this long is forgotten (ms, 100-600000). */
        pendingReplyMaxAgeMs: z.number().int().min(100).max(600000).default(10000),
        /**
         * Backup: inputs logged since the last checkpoint at which a checkpoint is forced (the log is
         * truncated by each checkpoint), at most one attempt every 5 s (1000-100000000). At 512 bytes
         * an input, the default bounds the log near 100 MB.
         */
        inputLogMaxInputs: z.number().int().min(1000).max(100000000).default(200000),
        /** Entries of the guest's reply cache (the reference guest: 4096). The client map keeps identities that may still have cached replies. */
        guestReplyCacheEntries: z.number().int().min(0).max(1000000).default(4096),
        /** Extra entries the client map's mirror of that cache keeps: inputs the guest may lose without an identity being reused too early. */
        replyCacheMargin: z.number().int().min(0).max(1000000).default(1024),
      })
      .prefault({}),
    /** External services the guest uses, reached through the controller. */
    externalServices: z.strictObject({ auth: endpoint }),
    /** Serial console of the board (login shell for field engineers). */
    console: z.strictObject({ device: safePath, baud: z.number().int().positive().default(115200) }).optional(),
    /** Prometheus metrics endpoint (GET /metrics), loopback only. Absent: no endpoint. */
    metrics: z.strictObject({ address: ipv4.default('127.0.0.1'), port }).optional(),
    /**
     * Limits of the alarms the controller checks itself (docs/alarms.md). Every field has a default;
     * the section may be left out.
     */
    alarms: z
      .strictObject({
        /** pair-unprotected is raised when the PRIMARY has had no following backup for this long (s, 1-3600). */
        unprotectedAfterS: z.number().int().min(1).max(3600).default(10),
        /** disk-space-low below this much free space on storageDir's file system (percent, 1-90). */
        diskFreeMinPercent: z.number().int().min(1).max(90).default(10),
        /** memory-high above this resident size of the controller process (MB, 50-65536). */
        controllerRssMaxMb: z.number().int().min(50).max(65536).default(400),
        /** clock-jump when the wall clock steps this far against the monotonic clock between two checks (ms, 100-3600000). */
        clockStepMaxMs: z.number().int().min(100).max(3600000).default(2000),
        /** Period of those checks (s, 1-600). */
        checkEveryS: z.number().int().min(1).max(600).default(5),
      })
      .prefault({}),
    /**
     * SNMP notifications of every alarm raise and clear to the operator's managers (docs/alarms.md),
     * sent with net-snmp's snmptrap. Absent: none are sent.
     */
    snmp: z
      .strictObject({
        /**
         * This board's SNMPv3 engine ID (hex, 5-32 bytes), sent with v3 traps: the manager's snmptrapd
         * needs `createUser -e <engineId> …`. Default: 80007ed904 + the board name in hex (RFC 3411
         * text format under the enterprise number of the MIB).
         */
        engineId: z.string().regex(/^(0x)?([0-9a-fA-F]{2}){5,32}$/, 'hexadecimal, 5 to 32 bytes').optional(),
        /** Notifications leave this long after the change (ms, 0-10000), so a takeover never shares its moment with the start of snmptrap. */
        holdMs: z.number().int().min(0).max(10000).default(250),
        managers: z.array(z.discriminatedUnion('version', [
          z.strictObject({
            version: z.literal('v2c'),
            ...snmpManagerFields,
            community: z.string().regex(/^[\x21-\x7e]{1,64}$/, 'printable ASCII without spaces, 1-64').default('public'),
          }),
          z.strictObject({
            version: z.literal('v3'),
            ...snmpManagerFields,
            /** The USM user (security level authPriv always). */
            user: z.string().regex(/^[\x21-\x7e]{1,32}$/, 'printable ASCII without spaces, 1-32'),
            authProtocol: z.enum(['SHA', 'SHA-256', 'SHA-512']).default('SHA'),
            /** File holding the authentication pass phrase (one line, at least 8 characters; mode 0600). */
            authPassFile: safePath,
            privProtocol: z.enum(['AES', 'AES-192', 'AES-256']).default('AES'),
            /** File holding the privacy pass phrase (one line, at least 8 characters; mode 0600). */
            privPassFile: safePath,
          }),
        ])).min(1).max(8),
      })
      .optional(),
    /** Links to the partner blade. */
    partner: z
      .strictObject({
        serial: z.strictObject({ device: safePath, baud: z.number().int().positive().default(115200) }).optional(),
        ethernet: z
          .strictObject({ interface: z.string().min(1).optional(), localAddress: ipv4, partnerAddress: ipv4, port })
          .optional(),
        /**
         * The partner board's name (its profile's `name`): the power controller's target and, before its
         * first heartbeat, the tie-break of which board fences first. Default: this board's name with a
         * final -a and -b swapped.
         */
        name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'lowercase letters, digits and -, at most 32').optional(),
        /**
         * Clones are snapshot copies: the primary's guest serves while it is copied to the partner
         * (docs/replication.md, "Clones"). With QEMU running as an unprivileged user the controller
         * sets the sysctl vm.unprivileged_userfaultfd to 1 at start for it. false: the inputs wait
         * for the whole copy (and under TCG the guest is stopped for it), as before.
         */
        snapshotClones: z.boolean().default(true),
      })
      .optional(),
    /** Hardware watchdog of the board. */
    watchdog: z.strictObject({ device: safePath, timeoutMs: z.number().int().min(100).max(600000) }).optional(),
    /** How this board powers off its partner before taking over. */
    fencing: z
      .discriminatedUnion('method', [
        z.strictObject({ method: z.literal('simulated'), controlSocket: safePath, ...fenceActionFields }),
        z.strictObject({
          method: z.literal('ipmitool'),
          /** The shelf manager's (or the partner's own BMC's) address, reached with `ipmitool -I lanplus`. */
          host: z.string().min(1),
          /** Its RMCP+ UDP port. */
          port: port.default(623),
          user: z.string().min(1),
          /** The BMC user's password, one line, owner root, mode 0600: ipmitool reads it itself (-f), so it never shows in ps. */
          passwordFile: safePath,
          /** IPMB address of the partner's controller behind the shelf manager (-t, e.g. 0x86); absent: the BMC at host is the partner's own. */
          partnerTarget: z.string().regex(/^0x[0-9a-fA-F]{2}$/, 'an IPMB address such as 0x86').optional(),
          /** RMCP+ cipher suite (-C): 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128) unless the BMC needs another (17: SHA256). */
          cipherSuite: z.number().int().min(0).max(17).default(3),
          ...fenceActionFields,
        }),
        z.strictObject({ method: z.literal('none') }),
      ])
      .optional(),
    /**
     * Membership timers (ms) and identity in the pair. Defaults are chosen so detection + promotion
     * stays within 30 ms: heartbeats every 5 ms on every link, a link is down after 20 ms of silence
     * (4 heartbeats: a 115200-baud line paced through the chassis relay jitters by ~10 ms), the
     * partner is dead after 25 ms of silence on every link (detection 20-25 ms after a death).
     */
    ha: z
      .strictObject({
        /**
         * Shared HMAC-SHA256 key for heartbeats and the partner channels: 64 hexadecimal digits on one line,
         * owner root, mode 0600 (`understudy ha keygen`; src/core/key-file.ts). Relative to the profile's folder.
         */
        keyFile: safePath,
        /** Heartbeat period on each link (advert_interval). 1-1000. */
        intervalMs: z.number().int().min(1).max(1000).default(5),
        /** Silence after which one link is reported down (link_timeout). Must be below deadtimeMs. */
        linkTimeoutMs: z.number().int().min(2).max(60000).default(20),
        /** Silence on every link after which the partner is declared dead (deadtime). */
        deadtimeMs: z.number().int().min(3).max(120000).default(25),
        /** How long a starting board listens for its partner before it acts on ha.startup. */
        startupWaitMs: z.number().int().min(10).max(600000).default(5000),
        /** Lower wins: the preferred primary when both start together, and the board that fences first. */
        priority: z.number().int().min(0).max(255).default(100),
        /** Extra wait before the less preferred board fences, so two boards never fence each other. */
        fenceDelayMs: z.number().int().min(0).max(60000).default(200),
        /**
         * Wait of a BACKUP before it fences a PRIMARY that went silent on every link (Pacemaker's
         * priority-fencing-delay). The primary fences a silent backup at once (after primaryConfirmMs
         * more of silence): if both are alive (a partition), the primary's fence lands first and keeps
         * the service where it is. At least deadtimeMs + primaryConfirmMs + fenceDelayMs (the verdicts
         * may differ by up to a deadtime; a fence lands within fenceDelayMs); the price is that a real
         * primary death is taken over this much later. docs/ha.md.
         */
        priorityFencingDelayMs: z.number().int().min(0).max(60000).default(PRIORITY_FENCING_DELAY_MS),
        /**
         * Wait of a BACKUP that holds none of its partner's guest state (its clone not cut over, no
         * checkpoint whose input log reaches the stream) before it fences a PRIMARY that went silent
         * on every link; at once if the fencing device reports the partner powered off. Fencing a
         * primary that may be alive (cut off, starved, its membership process busy) would trade the
         * service for an old checkpoint or an empty guest. Above the partner's watchdog timeout: by
         * then a live primary has been heard again, and a hung one reset by its watchdog. At least
         * priorityFencingDelayMs. docs/ha.md.
         */
        noStateFenceDelayMs: z.number().int().min(0).max(600000).default(NO_STATE_FENCE_DELAY_MS),
        /**
         * How much longer a PRIMARY waits, after its deadtime verdict, before it fences its silent
         * backup; called off if it hears it again. A lone serial link (the Ethernet one cut) falls
         * silent for up to ~60 ms now and then at 115200 baud: without it, one link cut would get the
         * backup reset. 0-10000.
         */
        primaryConfirmMs: z.number().int().min(0).max(10000).default(75),
        /**
         * A board that has not heard its partner since it started: wait-for-partner (neither fences nor
         * serves until it hears its partner or the operator runs `understudy start-alone`), or
         * fence-then-serve (after startupWaitMs it powers the partner off, leaves it off, and serves).
         */
        startup: z.enum(['wait-for-partner', 'fence-then-serve']).default('wait-for-partner'),
        /** SCHED_FIFO priority (1-99) of the membership thread (heartbeats, verdicts, watchdog), 0 = normal. */
        rtPriority: z.number().int().min(0).max(99).default(0),
        /**
         * Silence of the controller's main loop after which its own heartbeats report it hung and the
         * partner fences it (a stopped controller is reported at once, without this bound). Above the
         * longest stall of a busy, healthy controller (docs/ha.md, BENCHMARKS.md). Capped at half the
         * watchdog timeout, when the kicks stop and the board will be reset anyway. 1000 ms: four times
         * the longest gap between a loaded controller's alives measured in soaks with CPU burners
         * (237 ms, p99 50 ms; BENCHMARKS.md).
         */
        controllerHangMs: z.number().int().min(100).max(60000).default(1000),
        /**
         * The backup's witness of the primary's guest: when the backup's copy has answered requests
         * of the replicated stream and no reply has come from the primary's guest for this long, the
         * primary is told its guest is hung (it hands over if its own view agrees). Above how far a
         * healthy primary's replies trail the backup's (docs/replication.md, BENCHMARKS.md: up to 129 ms,
         * p99 20 ms, under load with CPU burners; one reply 225 ms late in another run). 0: off.
         */
        guestHangMs: z.number().int().min(0).max(60000).default(250),
        /**
         * The witness's fast bound: the backup reports the primary's guest silent this long after its
         * copy answered, and again this often while the silence lasts. The primary hands over at such a
         * report only if its guest has also left a PING unanswered for half this long while its QEMU had
         * the CPU it asked for (read from /proc: docs/replication.md, "A hung guest"): a hung guest. A
         * guest that is merely slow (its QEMU waiting for a CPU) is left to guestHangMs. Below
         * guestHangMs; 0: off (the witness reports once, at guestHangMs).
         */
        guestHangFastMs: z.number().int().min(0).max(60000).default(20),
        /**
         * Who else decides: understudy (the pair alone), or pacemaker (Pacemaker and corosync run on
         * every blade and own start, stop, placement and moves through ocf:understudy:guest). With
         * pacemaker the pair also follows corosync's quorum: a PRIMARY whose backup stopped
         * acknowledging withholds its replies until corosync has settled the membership (serving alone
         * only with quorum), steps down if it loses quorum meanwhile, and a BACKUP without quorum never
         * takes over. docs/pacemaker.md, decision table rows 6-7.
         */
        manager: z.enum(['understudy', 'pacemaker']).default('understudy'),
        /**
         * manager pacemaker: the command that prints corosync's quorum status at start and at every
         * change, in `corosync-quorumtool -m -p`'s format, line-buffered. Default
         * `stdbuf -oL corosync-quorumtool -m -p`.
         */
        quorumCommand: z.array(z.string().min(1).max(4096)).min(1).max(64).optional(),
        /**
         * manager pacemaker: after this board fenced its partner, the command that tells the cluster
         * the partner's node is down, the partner's name appended, so that Pacemaker does not fence it
         * a second time (a reboot of a board already booting, or power back on for one left off).
         * Default `stonith_admin --confirm`. The partner's board name must be its cluster node name.
         */
        fenceConfirmCommand: z.array(z.string().min(1).max(4096)).min(1).max(64).optional(),
        /**
         * manager pacemaker: how long a PRIMARY whose backup stopped acknowledging withholds its replies
         * while corosync still counts that backup a member and this node quorate; then it serves alone.
         * Above corosync's failure detection (totem token + consensus: 8.03 s for three nodes with
         * corosync's defaults), or a partition is not yet seen when the wait ends. Default 16 s: twice that.
         */
        quorumSettleMs: z.number().int().min(0).max(600000).default(QUORUM_SETTLE_MS),
      })
      .refine((h) => h.linkTimeoutMs < h.deadtimeMs, { message: 'linkTimeoutMs must be below deadtimeMs', path: ['linkTimeoutMs'] })
      .refine((h) => h.guestHangFastMs === 0 || h.guestHangMs === 0 || h.guestHangFastMs < h.guestHangMs, { message: 'guestHangFastMs must be below guestHangMs (or 0: off)', path: ['guestHangFastMs'] })
      .refine((h) => h.intervalMs * 2 <= h.linkTimeoutMs, { message: 'linkTimeoutMs must cover at least two heartbeats', path: ['linkTimeoutMs'] })
      .refine((h) => h.priorityFencingDelayMs >= h.deadtimeMs + h.primaryConfirmMs + h.fenceDelayMs, {
        message: 'must be at least deadtimeMs + primaryConfirmMs + fenceDelayMs: the primary\'s confirmation and fence must land first',
        path: ['priorityFencingDelayMs'],
      })
      .refine((h) => h.noStateFenceDelayMs >= h.priorityFencingDelayMs, {
        message: 'must be at least priorityFencingDelayMs: a backup with nothing to serve never fences sooner than one with a copy',
        path: ['noStateFenceDelayMs'],
      })
      .optional(),
    /** Field upgrades: A/B slots, boot selection, trusted keys. Defaults are under storageDir. */
    upgrade: z
      .strictObject({
        /** Holds the two slots A and B. Default: <storageDir>/slots. */
        slotsDir: safePath.optional(),
        /** Boot selection: a file-backed environment (simulation), U-Boot's (fw_setenv) or GRUB's (grub-editenv). */
        bootEnv: z
          .discriminatedUnion('type', [
            z.strictObject({ type: z.literal('file'), path: safePath }),
            z.strictObject({ type: z.literal('uboot'), config: safePath.default('/etc/fw_env.config') }),
            z.strictObject({ type: z.literal('grub'), path: safePath.default('/boot/grub/grubenv') }),
          ])
          .optional(),
        /** Directory of trusted Ed25519 public keys (*.pem); several allowed for key rotation. Default: <storageDir>/keys. */
        keysDir: safePath.optional(),
        /** Boot attempts of a new slot before falling back to the old one. */
        bootAttempts: z.number().int().min(1).max(10).default(3),
        /**
         * How this blade reboots itself into a newly armed slot during a rolling upgrade: argv of a
         * command. Default ["systemctl", "reboot"]. Not used on a simulated board (the chassis' power
         * controller power-cycles it).
         */
        rebootCommand: z.array(z.string().min(1)).min(1).optional(),
        /**
         * Room kept free on the filesystem a package is written to: a partner's push (incoming) or an
         * install (slots) is refused unless it fits with this much to spare. MiB, default 64.
         */
        reserveMb: z.number().int().min(0).max(1 << 20).default(64),
      })
      .default({ bootAttempts: 3, reserveMb: 64 }),
  })
  .superRefine((p, ctx) => {
    if (p.ha && !p.partner) {
      ctx.addIssue({ code: 'custom', path: ['partner'], message: 'required when ha is set: the heartbeats need at least one link' });
    }
    if (p.ha?.startup === 'fence-then-serve' && !p.partner?.name && !/-[ab]$/.test(p.name)) {
      ctx.addIssue({ code: 'custom', path: ['partner', 'name'], message: 'required with ha.startup fence-then-serve (the name cannot be guessed from this board\'s): the boards use it to agree which fences first' });
    }
    if (p.cores.housekeeping.includes(p.cores.guest)) {
      ctx.addIssue({ code: 'custom', path: ['cores', 'housekeeping'], message: `must not contain the guest core ${p.cores.guest}` });
    }
  });

export type BoardProfile = z.output<typeof boardProfileSchema> & { readonly sourceFile: string };

/**
 * The partner board's name: `partner.name`, else this board's name with a final -a and -b swapped
 * (sim-a ↔ sim-b), else "partner" (a power controller refuses a name it does not know).
 */
export function partnerNameOf(board: Pick<BoardProfile, 'name' | 'partner'>): string {
  if (board.partner?.name) return board.partner.name;
  const n = board.name;
  if (/-a$/.test(n)) return n.replace(/-a$/, '-b');
  if (/-b$/.test(n)) return n.replace(/-b$/, '-a');
  return 'partner';
}

/**
 * The one part of a loaded profile that changes at run time: the partner, when a surviving primary
 * adopts a spare board (N+1 re-protection). The Ethernet link is re-addressed; a serial link, point
 * to point with the old partner, is dropped. Everything that reads `board.partner` when it acts
 * (fencing target, clone target) follows.
 */
export function adoptPartnerInProfile(board: BoardProfile, name: string, partnerAddress: string): void {
  const p = board.partner;
  if (!p?.ethernet) throw new UsError('US_ERR_CONFIG', `board profile ${board.sourceFile}: partner.ethernet is needed to take another board as the partner`);
  const m = p as { name?: string; serial?: unknown; ethernet: { partnerAddress: string } };
  m.name = name;
  m.ethernet.partnerAddress = partnerAddress;
  delete m.serial;
}

/** What makes a board profile, for the error about a missing one. */
const BOARD_PROFILE_HOWTO = 'copy one of the package\'s board/ profiles there and edit it (board/standalone.json: one board without a partner; board/example-atca-blade.json: a blade of a pair), or name another with --board or $UNDERSTUDY_BOARD';

export function loadBoardProfile(file: string): BoardProfile {
  const p = loadJsonFile(file, boardProfileSchema, 'board profile', BOARD_PROFILE_HOWTO);
  const dir = dirname(p.sourceFile);
  const board = {
    ...p, storageDir: resolve(dir, p.storageDir), ...(p.ha ? { ha: { ...p.ha, keyFile: resolve(dir, p.ha.keyFile) } } : {}),
    ...(p.snmp ? { snmp: { ...p.snmp, managers: p.snmp.managers.map((m) => (m.version === 'v3' ? { ...m, authPassFile: resolve(dir, m.authPassFile), privPassFile: resolve(dir, m.privPassFile) } : m)) } } : {}),
  };
  // The folder a relative path was resolved against may itself hold what the raw value may not.
  const f = board.fencing as { controlSocket?: string; passwordFile?: string } | undefined;
  const be = board.upgrade.bootEnv as { path?: string; config?: string } | undefined;
  const paths: Record<string, string | undefined> = {
    storageDir: board.storageDir, 'ha.keyFile': board.ha?.keyFile, 'console.device': board.console?.device,
    'partner.serial.device': board.partner?.serial?.device, 'watchdog.device': board.watchdog?.device,
    'fencing.controlSocket': f?.controlSocket, 'fencing.passwordFile': f?.passwordFile,
    'upgrade.slotsDir': board.upgrade.slotsDir, 'upgrade.keysDir': board.upgrade.keysDir,
    'upgrade.bootEnv.path': be?.path, 'upgrade.bootEnv.config': be?.config,
  };
  board.snmp?.managers.forEach((m, i) => {
    if (m.version === 'v3') { paths[`snmp.managers[${i}].authPassFile`] = m.authPassFile; paths[`snmp.managers[${i}].privPassFile`] = m.privPassFile; }
  });
  checkResolvedPaths('board profile', p.sourceFile, Object.fromEntries(Object.entries(paths).filter((e): e is [string, string] => e[1] !== undefined)));
  return board;
}

