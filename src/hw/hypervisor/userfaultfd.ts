/**
 * Snapshot clones (migration.ts, QEMU's `background-snapshot`) track the guest's writes with
 * userfaultfd. QEMU 7.2 opens it with the userfaultfd system call, which a process without
 * CAP_SYS_PTRACE may use only when the sysctl `vm.unprivileged_userfaultfd` is 1 (QEMU 7.2 knows
 * neither /dev/userfaultfd nor UFFD_USER_MODE_ONLY). QEMU runs as its own unprivileged user
 * (qemu-user.ts), so a board whose clones are snapshot copies turns it on. The trade-off, in
 * docs/replication.md: any local user may then handle page faults of the kernel's own accesses
 * (a known aid to exploiting kernel races); a blade runs only the firmware and QEMU.
 */
import { readFileSync, writeFileSync } from 'node:fs';

export const UNPRIVILEGED_USERFAULTFD = '/proc/sys/vm/unprivileged_userfaultfd';

/**
 * Makes userfaultfd usable by QEMU's user. `changed`: it was off and is now on; `error`: it is off
 * and could not be turned on (clones are then stopped copies: migration.ts falls back).
 */
export function allowUnprivilegedUserfaultfd(path = UNPRIVILEGED_USERFAULTFD): { changed: boolean; error?: string } {
  try {
    if (readFileSync(path, 'utf8').trim() === '1') return { changed: false };
    writeFileSync(path, '1\n');
    return { changed: true };
  } catch (e) {
    return { changed: false, error: (e as Error).message };
  }
}
