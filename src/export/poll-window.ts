/**
 * Whether a busy-poll pays, learned per connection or ring: the NBD server's idle connections
 * (src/export/nbd/idle-poll.ts) and vhost-user's drained rings (src/export/vhost-user/rings.ts)
 * keep checking for their next request for a short window before they sleep, and stop doing so
 * where the next request keeps coming later than that (spinning would only burn a core).
 */

/** By default, poll while at least this share of recent idle periods ended within the window. */
const DEFAULT_WORTH_HIT_RATE = 0.5;
/** Weight of the newest outcome in the moving average of hits. */
const HIT_RATE_WEIGHT = 1 / 8;
/** A poller that stopped polling tries the full window again once in this many idle periods. */
const PROBE_EVERY_IDLES = 16;

/**
 * Whether to poll, learned from how often polling paid off: a moving average of polls that caught
 * the next request. Only polls teach it: the gap seen by the event loop when not polling includes
 * the very wake-up that polling saves, so it cannot tell whether polling would pay.
 */
export class PollWindow {
  private hitRate = 1; // optimistic: a client at queue depth 1 benefits from its second request on
  private idlesSinceProbe = 0;

  /**
   * `worthHitRate`: the share of polls that must catch a request for polling to go on (what a hit
   * saves against what a miss spends: NBD's hit saves one wake-up; vhost-user's also a guest exit).
   */
  constructor(
    readonly maxUs: number,
    private readonly worthHitRate = DEFAULT_WORTH_HIT_RATE,
  ) {}

  /**
   * How long to poll now that there is nothing to do: the whole window while polling pays, else
   * nothing, except for a probe every PROBE_EVERY_IDLES so a client that speeds up is noticed.
   */
  next(): number {
    if (this.hitRate >= this.worthHitRate) return this.maxUs;
    if (++this.idlesSinceProbe < PROBE_EVERY_IDLES) return 0;
    this.idlesSinceProbe = 0;
    return this.maxUs;
  }

  /** The poll caught the next request. */
  hit(): void {
    this.hitRate += (1 - this.hitRate) * HIT_RATE_WEIGHT;
  }

  /** The poll ran out its window. */
  miss(): void {
    this.hitRate -= this.hitRate * HIT_RATE_WEIGHT;
  }
}
