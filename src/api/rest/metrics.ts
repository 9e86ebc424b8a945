/**
 * Prometheus metrics in the text exposition format (version 0.0.4), written by hand: counters and
 * histograms with labels, plus gauges collected at scrape time.
 */

type Labels = Record<string, string>;

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labelText(labels: Labels): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) return '';
  return `{${keys.map((k) => `${k}="${escapeLabel(labels[k] as string)}"`).join(',')}}`;
}

function keyOf(labels: Labels): string {
  return JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function num(value: number): string {
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

/** At most this many label sets per metric; past it, new sets are folded into one "other" series. */
const MAX_SERIES = 10_000;

export class Counter {
  private readonly series = new Map<string, { labels: Labels; value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(labels: Labels = {}, by = 1): void {
    let key = keyOf(labels);
    let entry = this.series.get(key);
    if (entry === undefined) {
      if (this.series.size >= MAX_SERIES) {
        labels = Object.fromEntries(Object.keys(labels).map((k) => [k, 'other']));
        key = keyOf(labels);
        entry = this.series.get(key);
      }
      if (entry === undefined) {
        entry = { labels, value: 0 };
        this.series.set(key, entry);
      }
    }
    entry.value += by;
  }

  /** Forgets a series (e.g. a deleted volume's). */
  remove(match: (labels: Labels) => boolean): void {
    for (const [key, entry] of this.series) if (match(entry.labels)) this.series.delete(key);
  }

  get(labels: Labels = {}): number {
    return this.series.get(keyOf(labels))?.value ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const { labels, value } of this.series.values()) lines.push(`${this.name}${labelText(labels)} ${num(value)}`);
    return lines.join('\n');
  }
}

export class Histogram {
  private readonly series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
  ) {}

  observe(labels: Labels, value: number): void {
    const key = keyOf(labels);
    let entry = this.series.get(key);
    if (entry === undefined) {
      if (this.series.size >= MAX_SERIES) return;
      entry = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.series.set(key, entry);
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= (this.buckets[i] as number)) entry.counts[i] = (entry.counts[i] as number) + 1;
    entry.sum += value;
    entry.count += 1;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const { labels, counts, sum, count } of this.series.values()) {
      this.buckets.forEach((le, i) => lines.push(`${this.name}_bucket${labelText({ ...labels, le: num(le) })} ${counts[i]}`));
      lines.push(`${this.name}_bucket${labelText({ ...labels, le: '+Inf' })} ${count}`);
      lines.push(`${this.name}_sum${labelText(labels)} ${num(sum)}`);
      lines.push(`${this.name}_count${labelText(labels)} ${count}`);
    }
    return lines.join('\n');
  }
}

/** A gauge family whose values are produced at scrape time. */
export interface GaugeSample {
  labels: Labels;
  value: number;
}

export function renderGauge(name: string, help: string, samples: readonly GaugeSample[], type: 'gauge' | 'counter' = 'gauge'): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
  for (const s of samples) lines.push(`${name}${labelText(s.labels)} ${num(s.value)}`);
  return lines.join('\n');
}

/** Upper bounds of the request latency histograms (seconds): 1 ms to 5 minutes. */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** The API's metrics. */
export class ApiMetrics {
  readonly requests = new Counter('strata_http_requests_total', 'HTTP requests handled, by method, route and status.');
  readonly errors = new Counter('strata_http_errors_total', 'HTTP requests that failed, by method, route and error code.');
  readonly latency = new Histogram(
    'strata_http_request_duration_seconds',
    'Time from receiving a request to finishing its response, by method and route.',
    LATENCY_BUCKETS_SECONDS,
  );
  readonly importedBytes = new Counter('strata_imported_bytes_total', 'Bytes received by content and diff-stream imports.');
  readonly exportedBytes = new Counter('strata_exported_bytes_total', 'Bytes sent by content and diff-stream exports.');
  readonly volumeImportedBytes = new Counter('strata_volume_imported_bytes_total', 'Bytes imported into a volume, by pool and volume.');
  readonly volumeExportedBytes = new Counter('strata_volume_exported_bytes_total', 'Bytes exported from a volume, by pool and volume.');
  readonly volumeOperations = new Counter('strata_volume_operations_total', 'Operations on a volume (API calls naming it), by pool, volume and operation.');
  readonly startedAt = Date.now();
  /** Other metrics rendered into the same document (the S3 endpoint's). */
  private readonly sources: (() => string)[] = [];

  addSource(render: () => string): void {
    this.sources.push(render);
  }

  /** Drops a deleted volume's series (its name may come back as another volume). */
  forgetVolume(pool: string, volume: string): void {
    const matches = (l: Record<string, string>) => l['pool'] === pool && l['volume'] === volume;
    this.volumeImportedBytes.remove(matches);
    this.volumeExportedBytes.remove(matches);
    this.volumeOperations.remove(matches);
  }

  render(extra: readonly string[] = []): string {
    const parts = [
      this.requests.render(),
      this.errors.render(),
      this.latency.render(),
      this.importedBytes.render(),
      this.exportedBytes.render(),
      this.volumeImportedBytes.render(),
      this.volumeExportedBytes.render(),
      this.volumeOperations.render(),
      renderGauge('strata_uptime_seconds', 'Seconds since the daemon started.', [{ labels: {}, value: (Date.now() - this.startedAt) / 1000 }]),
      ...processMemoryGauges(),
      ...this.sources.map((render) => render()),
      ...extra,
    ];
    return `${parts.join('\n')}\n`;
  }
}

/**
 * The daemon's memory at scrape time: the resident set and what JavaScript holds of it (the heap,
 * and buffers outside it), so an operator can tell a growing heap from memory the allocator keeps.
 */
function processMemoryGauges(): string[] {
  const memory = process.memoryUsage();
  return [
    renderGauge('strata_process_resident_memory_bytes', 'Resident set size of the daemon process.', [{ labels: {}, value: memory.rss }]),
    renderGauge('strata_process_heap_used_bytes', 'JavaScript heap in use (V8).', [{ labels: {}, value: memory.heapUsed }]),
    renderGauge('strata_process_heap_total_bytes', 'JavaScript heap reserved (V8).', [{ labels: {}, value: memory.heapTotal }]),
    renderGauge('strata_process_array_buffers_bytes', 'Bytes of buffers held by JavaScript outside the heap (I/O buffers, including ones not yet collected).', [{ labels: {}, value: memory.arrayBuffers }]),
  ];
}
