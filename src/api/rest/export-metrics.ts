/**
 * /metrics for the exports, read at scrape time (renderGauge): NBD connections and idle polling,
 * vhost-user ring polling, and per export its clients now and the requests its device failed
 * (an operator alerts on those: a client writing into a full pool gets ENOSPC or IOERR).
 */
import type { ExportService } from './export-service.js';
import { renderGauge } from './metrics.js';

export function collectExportMetrics(exports: ExportService): string[] {
  const nbd = exports.nbdStats();
  const vhost = exports.vhostStats();
  const perExport = exports.exportStats();
  const labels = (e: (typeof perExport)[number]): Record<string, string> => ({ export: e.id, type: e.type, target: e.target });
  return [
    renderGauge('strata_nbd_connections', 'NBD client connections open now.', [{ labels: {}, value: nbd.connections }]),
    renderGauge('strata_nbd_idle_polls_total', 'Idle periods in which an NBD connection busy-polled its socket (--nbd-poll-us).', [{ labels: {}, value: nbd.idlePolls }], 'counter'),
    renderGauge('strata_nbd_idle_poll_hits_total', 'Idle polls that caught the next request (the rest spent their window).', [{ labels: {}, value: nbd.idlePollHits }], 'counter'),
    renderGauge('strata_vhost_user_ring_polls_total', "Drained vhost-user rings polled for the guest's next request with kicks suppressed (--vhost-poll-us).", [{ labels: {}, value: vhost.ringPolls }], 'counter'),
    renderGauge('strata_vhost_user_ring_poll_hits_total', 'Ring polls that caught the next request (the rest spent their window).', [{ labels: {}, value: vhost.ringPollHits }], 'counter'),
    renderGauge(
      'strata_export_clients',
      'Clients using an export now: NBD connections that selected it; vhost-user 1 while a front-end is connected.',
      perExport.map((e) => ({ labels: labels(e), value: e.clients })),
    ),
    renderGauge(
      'strata_export_device_errors_total',
      "Requests of an export's clients that its device failed (they got an error), since the export started.",
      perExport.map((e) => ({ labels: labels(e), value: e.deviceErrors })),
      'counter',
    ),
    renderGauge(
      'strata_export_requests_waiting_for_space',
      "Requests of an export's guest waiting for space now (the pool is full; vhost-user with onNoSpace 'wait'): free space in the pool.",
      perExport.map((e) => ({ labels: labels(e), value: e.waitingForSpace })),
    ),
  ];
}
