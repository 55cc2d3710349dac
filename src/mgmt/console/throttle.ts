/**
 * Login throttling for the serial console: a delay after each failed login that doubles each time
 * (failureDelayMs, 2×, 4× … up to maxFailureDelayMs), and a lockout of lockoutMs after lockoutAfter
 * failures in a row. The count survives logouts and reconnects (it belongs to the line, not to a
 * session) and is cleared by a successful login or the end of a lockout. Pure apart from the clock.
 */

export interface LoginPolicy {
  /** Delay after the first failed login, ms (default 1000). Doubles after each further failure. */
  failureDelayMs: number;
  /** Upper bound of that delay, ms (default 16000). */
  maxFailureDelayMs: number;
  /** Failed logins in a row that lock the console (default 5). */
  lockoutAfter: number;
  /** How long a lockout lasts, ms (default 300000: 5 min). */
  lockoutMs: number;
}

export const DEFAULT_LOGIN_POLICY: LoginPolicy = {
  failureDelayMs: 1000,
  maxFailureDelayMs: 16000,
  lockoutAfter: 5,
  lockoutMs: 300_000,
};

export type FailureVerdict =
  | { kind: 'delay'; failures: number; delayMs: number }
  | { kind: 'lockout'; failures: number; lockedForMs: number };

export class LoginThrottle {
  private failures = 0;
  private lockedUntil = 0;

  constructor(readonly policy: LoginPolicy = DEFAULT_LOGIN_POLICY, private readonly now: () => number = Date.now) {}

  /** Records a failed login and says what happens next. */
  failure(): FailureVerdict {
    this.failures++;
    if (this.failures >= this.policy.lockoutAfter) {
      this.lockedUntil = this.now() + this.policy.lockoutMs;
      return { kind: 'lockout', failures: this.failures, lockedForMs: this.policy.lockoutMs };
    }
    const delayMs = Math.min(this.policy.maxFailureDelayMs, this.policy.failureDelayMs * 2 ** (this.failures - 1));
    return { kind: 'delay', failures: this.failures, delayMs };
  }

  success(): void {
    this.failures = 0;
    this.lockedUntil = 0;
  }

  /** Milliseconds the console stays locked (0: not locked). A lockout that ran out clears the count. */
  lockedForMs(): number {
    if (!this.lockedUntil) return 0;
    const left = this.lockedUntil - this.now();
    if (left > 0) return left;
    this.lockedUntil = 0;
    this.failures = 0;
    return 0;
  }

  get failuresInARow(): number {
    return this.failures;
  }
}
