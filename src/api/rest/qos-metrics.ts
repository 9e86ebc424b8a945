/**
 * /metrics for QoS (issue 15), read at scrape time from the exported volumes' throttles: the time
 * requests spent waiting, how many waited, how many wait now, and whether a limit applies.
 */
import type { VolumeService } from '../../volume/types.js';
import { renderGauge } from './metrics.js';

export async function collectQosMetrics(service: VolumeService): Promise<string[]> {
  const stats = await service.qosStats();
  const labels = (s: (typeof stats)[number]) => ({ pool: s.pool, volume: s.volume });
  return [
    renderGauge('strata_volume_qos_limited', '1 while QoS limits apply to an exported volume.', stats.map((s) => ({ labels: labels(s), value: s.limited ? 1 : 0 }))),
    renderGauge('strata_volume_qos_queued_requests', 'Requests of an exported volume waiting in its QoS throttle now.', stats.map((s) => ({ labels: labels(s), value: s.queued }))),
    renderGauge(
      'strata_volume_qos_throttled_seconds_total',
      'Time requests of an exported volume waited in its QoS throttle, summed (since it was exported).',
      stats.map((s) => ({ labels: labels(s), value: s.throttledSeconds })),
      'counter',
    ),
    renderGauge('strata_volume_qos_throttled_requests_total', 'Requests of an exported volume that waited in its QoS throttle.', stats.map((s) => ({ labels: labels(s), value: s.throttledRequests })), 'counter'),
  ];
}
