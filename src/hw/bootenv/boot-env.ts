/**
 * The boot-selection seam: a bootloader's persistent environment, as a flat set of string variables
 * written atomically. Three implementations (U-Boot via fw_setenv, GRUB via grub-editenv, a plain file
 * for the simulated chassis); everything above (slots, installer, the simulated bootloader) is
 * written once against this interface. Owns no variable names: the upgrade layer does.
 */
import { UsError } from '../../core/errors.js';

/** A bootloader environment. */
export interface BootEnv {
  /** What and where, for messages: e.g. `U-Boot environment (fw_env.config /etc/fw_env.config)`. */
  readonly description: string;
  /** All variables that are set (a variable set to the empty string reads as absent). */
  read(): Promise<Record<string, string>>;
  /**
   * Sets variables (string) and deletes them (null or ''), all in ONE write of the environment, so a
   * power cut leaves either the old or the new set, never a mix.
   */
  update(changes: Record<string, string | null>): Promise<void>;
}

/** Variable names every implementation accepts: what U-Boot, GRUB and a shell all take. */
const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
/** Values: printable ASCII without quotes or backslashes (safe in a U-Boot script, grubenv and our file). */
const VALUE = /^[\x20-\x7e]{0,255}$/;

/** Throws US_ERR_BOOTENV unless every name and value is one all three environments store unchanged. */
export function checkChanges(changes: Record<string, string | null>, where: string): void {
  for (const [k, v] of Object.entries(changes)) {
    if (!NAME.test(k)) throw new UsError('US_ERR_BOOTENV', `${where}: invalid variable name ${JSON.stringify(k)}`);
    if (v !== null && (!VALUE.test(v) || /["'\\]/.test(v))) {
      throw new UsError('US_ERR_BOOTENV', `${where}: invalid value for ${k}: ${JSON.stringify(v)} (printable ASCII, no quotes or backslashes)`);
    }
  }
}

/** Parses `name=value` lines (fw_printenv, grub-editenv list, our file); empty values read as absent. */
export function parseEnvLines(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const k = line.slice(0, eq);
    const v = line.slice(eq + 1).replace(/\r$/, '');
    if (v !== '') out[k] = v;
  }
  return out;
}
