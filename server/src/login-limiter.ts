/**
 * Failed-login rate limiting, in memory: per client address and per username, each a sliding
 * window of failure times. Only failures count; a login refused while limited is not a failure
 * (so waiting always ends the block) and a success clears that username's failures (never the
 * address's, so one valid account cannot reset an address that guesses others' passwords).
 */
import { createHash } from "node:crypto";

export interface LoginLimits {
  /** Failed logins from one address allowed within the window; 0 turns the limit off. */
  maxFailuresPerIp: number;
  /** Failed logins for one username (from any address) allowed within the window; 0: off. */
  maxFailuresPerUser: number;
  /** The window, in milliseconds. */
  windowMs: number;
}

export const DEFAULT_LOGIN_LIMITS: LoginLimits = { maxFailuresPerIp: 10, maxFailuresPerUser: 5, windowMs: 60_000 };

/** Why a login may not be tried now, and for how long. */
export interface LoginBlock {
  scope: "address" | "user";
  retryAfterSeconds: number;
}

/** Keys kept at most (addresses and usernames together); the oldest go first beyond it. */
const MAX_KEYS = 100_000;

export class LoginLimiter {
  private readonly failures = new Map<string, number[]>();
  private readonly limits: LoginLimits;
  private readonly now: () => number;

  constructor(limits: LoginLimits = DEFAULT_LOGIN_LIMITS, now: () => number = Date.now) {
    this.limits = limits;
    this.now = now;
  }

  /** The block in force for a login from `ip` as `username`, if any (the longer one wins). */
  check(ip: string, username: string): LoginBlock | undefined {
    const t = this.now();
    const blocks: LoginBlock[] = [];
    const byIp = this.blockedFor(ipKey(ip), this.limits.maxFailuresPerIp, t);
    if (byIp !== undefined) blocks.push({ scope: "address", retryAfterSeconds: byIp });
    const byUser = this.blockedFor(userKey(username), this.limits.maxFailuresPerUser, t);
    if (byUser !== undefined) blocks.push({ scope: "user", retryAfterSeconds: byUser });
    return blocks.sort((a, b) => b.retryAfterSeconds - a.retryAfterSeconds)[0];
  }

  /** Count a failed login against the address and the username. */
  fail(ip: string, username: string): void {
    const t = this.now();
    if (this.limits.maxFailuresPerIp > 0) this.record(ipKey(ip), this.limits.maxFailuresPerIp, t);
    if (this.limits.maxFailuresPerUser > 0) this.record(userKey(username), this.limits.maxFailuresPerUser, t);
  }

  /** A successful login clears the username's failures (the address keeps its count). */
  succeed(username: string): void {
    this.failures.delete(userKey(username));
  }

  /** Number of addresses and usernames with failures held (for tests). */
  get size(): number {
    return this.failures.size;
  }

  private recent(key: string, t: number): number[] {
    const times = this.failures.get(key);
    if (!times) return [];
    const from = t - this.limits.windowMs;
    const kept = times.filter((x) => x > from);
    if (kept.length === 0) this.failures.delete(key);
    else if (kept.length !== times.length) this.failures.set(key, kept);
    return kept;
  }

  /** Seconds until a login may be tried again, or undefined when it may be tried now. */
  private blockedFor(key: string, max: number, t: number): number | undefined {
    if (max <= 0) return undefined;
    const times = this.recent(key, t);
    if (times.length < max) return undefined;
    // The block ends when the oldest failure that still counts leaves the window.
    const oldest = times[times.length - max] ?? t;
    return Math.max(1, Math.ceil((oldest + this.limits.windowMs - t) / 1000));
  }

  private record(key: string, max: number, t: number): void {
    const times = this.recent(key, t);
    times.push(t);
    // Only the last `max` failures decide a block; keep no more.
    this.failures.delete(key);
    this.failures.set(key, times.slice(-max));
    if (this.failures.size > MAX_KEYS) this.evict(t);
  }

  private evict(t: number): void {
    for (const key of [...this.failures.keys()]) this.recent(key, t);
    // Still too many: drop the least recently failed (Map order is insertion order).
    for (const key of this.failures.keys()) {
      if (this.failures.size <= MAX_KEYS) break;
      this.failures.delete(key);
    }
  }
}

function ipKey(ip: string): string {
  return `ip:${ip}`;
}

/** Usernames as sent (a login body may hold a 64 KiB one): long ones are hashed. */
function userKey(username: string): string {
  return username.length <= 128 ? `user:${username}` : `user#${createHash("sha256").update(username).digest("hex")}`;
}
