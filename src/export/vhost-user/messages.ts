/**
 * vhost-user wire format (QEMU docs/interop/vhost-user.rst): a 12-byte header {u32 request,
 * u32 flags, u32 size} then `size` bytes of payload, all in native byte order (little-endian: this
 * code runs on x86-64 only, see src/sys). Descriptors travel as SCM_RIGHTS with the message.
 *
 * This module only encodes and decodes; it never trusts a length: validateMessage() checks the
 * payload size and the number of descriptors of every request before any decoder runs.
 */

export const HEADER_BYTES = 12;
export const VHOST_USER_VERSION = 0x1;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
/** Payloads larger than this are never valid for a request we handle: the connection is dropped. */
export const MAX_PAYLOAD_BYTES = 4096;
/** Descriptors accepted with one message (SET_MEM_TABLE carries at most 8). */
export const MAX_FDS_PER_MESSAGE = 8;
/** Regions in SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_MEM_TABLE_REGIONS = 8;
/** GET_CONFIG/SET_CONFIG: the largest config space a front-end may ask for. */
export const MAX_CONFIG_BYTES = 256;
/** vring state index of SET_VRING_KICK/CALL/ERR: low 8 bits; bit 8 = no descriptor attached. */
export const VRING_INDEX_MASK = 0xffn;
export const VRING_NOFD_FLAG = 0x100n;

export const Request = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

export type RequestName = keyof typeof Request;

const NAMES = new Map<number, RequestName>(Object.entries(Request).map(([k, v]) => [v, k as RequestName]));

/** "GET_CONFIG" or "request 99" for log lines. */
export function requestName(request: number): string {
  return NAMES.get(request) ?? `request ${request}`;
}

/**
 * Requests the back-end sends on the back-end request channel (SET_BACKEND_REQ_FD, protocol feature
 * BACKEND_REQ). Their numbering is separate from the front-end's requests above.
 */
export const BackendRequest = {
  /** The device's config space changed: the front-end reads it again (GET_CONFIG). No payload. */
  CONFIG_CHANGE_MSG: 2,
} as const;

/** A front-end's answer to a back-end request sent with NEED_REPLY: header + u64 (0 = success). */
export const BACKEND_REPLY_BYTES = HEADER_BYTES + 8;

/** Protocol feature bit numbers. */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/** Virtio feature bit 30, reused by vhost-user: GET/SET_PROTOCOL_FEATURES are supported. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;

export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

export interface Header {
  request: number;
  flags: number;
  sizeBytes: number;
}

export interface Message {
  header: Header;
  payload: Uint8Array;
  /** Descriptors received with the message; whoever handles it owns (keeps or closes) them. */
  fds: number[];
}

function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

export function decodeHeader(b: Uint8Array): Header {
  if (b.length < HEADER_BYTES) throw new RangeError(`vhost-user header needs ${HEADER_BYTES} bytes, got ${b.length}`);
  const v = dv(b);
  return { request: v.getUint32(0, true), flags: v.getUint32(4, true), sizeBytes: v.getUint32(8, true) };
}

/** Header + payload in one buffer (one sendmsg). */
export function encodeMessage(request: number, flags: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + payload.length);
  const v = dv(out);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, payload.length, true);
  out.set(payload, HEADER_BYTES);
  return out;
}

/** A reply from the back-end: version 1, REPLY set. */
export function encodeReply(request: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  return encodeMessage(request, VHOST_USER_VERSION | FLAG_REPLY, payload);
}

// --- payloads ------------------------------------------------------------------------------------

export function encodeU64(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  dv(out).setBigUint64(0, BigInt.asUintN(64, value), true);
  return out;
}

export function decodeU64(p: Uint8Array): bigint {
  return dv(p).getBigUint64(0, true);
}

/** struct vhost_vring_state { u32 index; u32 num } */
export interface VringState {
  index: number;
  num: number;
}

export const VRING_STATE_BYTES = 8;

export function encodeVringState(s: VringState): Uint8Array {
  const out = new Uint8Array(VRING_STATE_BYTES);
  const v = dv(out);
  v.setUint32(0, s.index, true);
  v.setUint32(4, s.num, true);
  return out;
}

export function decodeVringState(p: Uint8Array): VringState {
  const v = dv(p);
  return { index: v.getUint32(0, true), num: v.getUint32(4, true) };
}

/**
 * struct vhost_vring_addr: ring addresses are front-end (QEMU process) user addresses, not guest
 * physical ones (no IOMMU here); log is a guest address used only for dirty logging.
 */
export interface VringAddr {
  index: number;
  flags: number;
  descFrontendAddr: bigint;
  usedFrontendAddr: bigint;
  availFrontendAddr: bigint;
  logGuestAddr: bigint;
}

export const VRING_ADDR_BYTES = 40;

export function encodeVringAddr(a: VringAddr): Uint8Array {
  const out = new Uint8Array(VRING_ADDR_BYTES);
  const v = dv(out);
  v.setUint32(0, a.index, true);
  v.setUint32(4, a.flags, true);
  v.setBigUint64(8, a.descFrontendAddr, true);
  v.setBigUint64(16, a.usedFrontendAddr, true);
  v.setBigUint64(24, a.availFrontendAddr, true);
  v.setBigUint64(32, a.logGuestAddr, true);
  return out;
}

export function decodeVringAddr(p: Uint8Array): VringAddr {
  const v = dv(p);
  return {
    index: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    descFrontendAddr: v.getBigUint64(8, true),
    usedFrontendAddr: v.getBigUint64(16, true),
    availFrontendAddr: v.getBigUint64(24, true),
    logGuestAddr: v.getBigUint64(32, true),
  };
}

/** One region of guest RAM: its guest-physical base, size, front-end user address, offset in its fd. */
export interface MemoryRegion {
  guestAddr: bigint;
  sizeBytes: bigint;
  frontendAddr: bigint;
  mmapOffsetBytes: bigint;
}

export const MEMORY_REGION_BYTES = 32;
/** u32 nregions + u32 padding */
export const MEMORY_TABLE_HEADER_BYTES = 8;
/** ADD_MEM_REG/REM_MEM_REG: u64 padding + one region. */
export const SINGLE_REGION_BYTES = 8 + MEMORY_REGION_BYTES;

function writeRegion(v: DataView, off: number, r: MemoryRegion): void {
  v.setBigUint64(off, r.guestAddr, true);
  v.setBigUint64(off + 8, r.sizeBytes, true);
  v.setBigUint64(off + 16, r.frontendAddr, true);
  v.setBigUint64(off + 24, r.mmapOffsetBytes, true);
}

function readRegion(v: DataView, off: number): MemoryRegion {
  return {
    guestAddr: v.getBigUint64(off, true),
    sizeBytes: v.getBigUint64(off + 8, true),
    frontendAddr: v.getBigUint64(off + 16, true),
    mmapOffsetBytes: v.getBigUint64(off + 24, true),
  };
}

export function encodeMemoryTable(regions: readonly MemoryRegion[]): Uint8Array {
  const out = new Uint8Array(MEMORY_TABLE_HEADER_BYTES + regions.length * MEMORY_REGION_BYTES);
  const v = dv(out);
  v.setUint32(0, regions.length, true);
  regions.forEach((r, i) => writeRegion(v, MEMORY_TABLE_HEADER_BYTES + i * MEMORY_REGION_BYTES, r));
  return out;
}

/** Assumes validateMessage passed (the size matches the region count). */
export function decodeMemoryTable(p: Uint8Array): MemoryRegion[] {
  const v = dv(p);
  const n = v.getUint32(0, true);
  const out: MemoryRegion[] = [];
  for (let i = 0; i < n; i++) out.push(readRegion(v, MEMORY_TABLE_HEADER_BYTES + i * MEMORY_REGION_BYTES));
  return out;
}

export function encodeSingleRegion(r: MemoryRegion): Uint8Array {
  const out = new Uint8Array(SINGLE_REGION_BYTES);
  writeRegion(dv(out), 8, r);
  return out;
}

export function decodeSingleRegion(p: Uint8Array): MemoryRegion {
  return readRegion(dv(p), 8);
}

/** GET_CONFIG/SET_CONFIG: { u32 offset; u32 size; u32 flags; u8 payload[size] } */
export interface ConfigAccess {
  offset: number;
  sizeBytes: number;
  flags: number;
  data: Uint8Array;
}

export const CONFIG_HEADER_BYTES = 12;
/** SET_CONFIG flags: 0 = a guest write to a writable field, 1 = live migration restore. */
export const CONFIG_FLAG_WRITABLE = 0;
export const CONFIG_FLAG_MIGRATION = 1;

export function encodeConfig(c: ConfigAccess): Uint8Array {
  const out = new Uint8Array(CONFIG_HEADER_BYTES + c.data.length);
  const v = dv(out);
  v.setUint32(0, c.offset, true);
  v.setUint32(4, c.data.length, true);
  v.setUint32(8, c.flags, true);
  out.set(c.data, CONFIG_HEADER_BYTES);
  return out;
}

/** Assumes validateMessage passed (size field consistent with the payload length). */
export function decodeConfig(p: Uint8Array): ConfigAccess {
  const v = dv(p);
  const sizeBytes = v.getUint32(4, true);
  return {
    offset: v.getUint32(0, true),
    sizeBytes,
    flags: v.getUint32(8, true),
    data: p.subarray(CONFIG_HEADER_BYTES, CONFIG_HEADER_BYTES + sizeBytes),
  };
}

/**
 * GET_INFLIGHT_FD/SET_INFLIGHT_FD: { u64 mmap_size; u64 mmap_offset; u16 num_queues;
 * u16 queue_size }. QEMU sends the padded C struct (24 bytes); 20 is accepted too and replies
 * mirror the request's length.
 */
export interface InflightDescription {
  mmapSizeBytes: bigint;
  mmapOffsetBytes: bigint;
  queueCount: number;
  queueSize: number;
}

export const INFLIGHT_BYTES = 24;
export const INFLIGHT_MIN_BYTES = 20;

export function encodeInflight(d: InflightDescription, lengthBytes = INFLIGHT_BYTES): Uint8Array {
  const out = new Uint8Array(lengthBytes);
  const v = dv(out);
  v.setBigUint64(0, d.mmapSizeBytes, true);
  v.setBigUint64(8, d.mmapOffsetBytes, true);
  v.setUint16(16, d.queueCount, true);
  v.setUint16(18, d.queueSize, true);
  return out;
}

export function decodeInflight(p: Uint8Array): InflightDescription {
  const v = dv(p);
  return {
    mmapSizeBytes: v.getBigUint64(0, true),
    mmapOffsetBytes: v.getBigUint64(8, true),
    queueCount: v.getUint16(16, true),
    queueSize: v.getUint16(18, true),
  };
}

// --- validation ----------------------------------------------------------------------------------

/** How many descriptors a request may carry: exact count or [min, max]. */
type FdRule = number | readonly [number, number];

interface Rule {
  /** Exact payload size, or a function returning an error text (undefined when fine). */
  size: number | ((p: Uint8Array) => string | undefined);
  fds: FdRule | ((p: Uint8Array) => FdRule);
}

/** SET_VRING_KICK/CALL/ERR: one descriptor unless the "no fd" bit is set. */
const vringFdRule = (p: Uint8Array): FdRule => ((decodeU64(p) & VRING_NOFD_FLAG) !== 0n ? 0 : 1);

function configSize(p: Uint8Array): string | undefined {
  if (p.length < CONFIG_HEADER_BYTES) return `payload of ${p.length} bytes is shorter than the ${CONFIG_HEADER_BYTES}-byte config header`;
  const size = dv(p).getUint32(4, true);
  if (size > MAX_CONFIG_BYTES) return `config size ${size} exceeds ${MAX_CONFIG_BYTES}`;
  if (p.length !== CONFIG_HEADER_BYTES + size) return `payload of ${p.length} bytes does not match config size ${size}`;
  return undefined;
}

function memTableSize(p: Uint8Array): string | undefined {
  if (p.length < MEMORY_TABLE_HEADER_BYTES) return `payload of ${p.length} bytes is shorter than the memory table header`;
  const n = dv(p).getUint32(0, true);
  if (n === 0 || n > MAX_MEM_TABLE_REGIONS) return `${n} regions (1..${MAX_MEM_TABLE_REGIONS} allowed)`;
  const want = MEMORY_TABLE_HEADER_BYTES + n * MEMORY_REGION_BYTES;
  if (p.length !== want) return `payload of ${p.length} bytes for ${n} regions (expected ${want})`;
  return undefined;
}

function inflightSize(p: Uint8Array): string | undefined {
  return p.length === INFLIGHT_BYTES || p.length === INFLIGHT_MIN_BYTES
    ? undefined
    : `payload of ${p.length} bytes (expected ${INFLIGHT_BYTES})`;
}

const RULES: ReadonlyMap<number, Rule> = new Map<number, Rule>([
  [Request.GET_FEATURES, { size: 0, fds: 0 }],
  [Request.SET_FEATURES, { size: 8, fds: 0 }],
  [Request.SET_OWNER, { size: 0, fds: 0 }],
  [Request.RESET_OWNER, { size: 0, fds: 0 }],
  [
    Request.SET_MEM_TABLE,
    { size: memTableSize, fds: (p) => (p.length >= 4 ? dv(p).getUint32(0, true) : 0) },
  ],
  [Request.SET_VRING_NUM, { size: VRING_STATE_BYTES, fds: 0 }],
  [Request.SET_VRING_ADDR, { size: VRING_ADDR_BYTES, fds: 0 }],
  [Request.SET_VRING_BASE, { size: VRING_STATE_BYTES, fds: 0 }],
  [Request.GET_VRING_BASE, { size: VRING_STATE_BYTES, fds: 0 }],
  [Request.SET_VRING_KICK, { size: 8, fds: vringFdRule }],
  [Request.SET_VRING_CALL, { size: 8, fds: vringFdRule }],
  [Request.SET_VRING_ERR, { size: 8, fds: vringFdRule }],
  [Request.GET_PROTOCOL_FEATURES, { size: 0, fds: 0 }],
  [Request.SET_PROTOCOL_FEATURES, { size: 8, fds: 0 }],
  [Request.GET_QUEUE_NUM, { size: 0, fds: 0 }],
  [Request.SET_VRING_ENABLE, { size: VRING_STATE_BYTES, fds: 0 }],
  [Request.SET_BACKEND_REQ_FD, { size: 0, fds: 1 }],
  [Request.GET_CONFIG, { size: configSize, fds: 0 }],
  [Request.SET_CONFIG, { size: configSize, fds: 0 }],
  [Request.GET_INFLIGHT_FD, { size: inflightSize, fds: 0 }],
  [Request.SET_INFLIGHT_FD, { size: inflightSize, fds: 1 }],
  [Request.RESET_DEVICE, { size: 0, fds: 0 }],
  [Request.GET_MAX_MEM_SLOTS, { size: 0, fds: 0 }],
  [Request.ADD_MEM_REG, { size: SINGLE_REGION_BYTES, fds: 1 }],
  // The spec lets a back-end accept (and must then close) one stray descriptor here.
  [Request.REM_MEM_REG, { size: SINGLE_REGION_BYTES, fds: [0, 1] }],
]);

/** True for requests this back-end implements (validateMessage knows their shape). */
export function isKnownRequest(request: number): boolean {
  return RULES.has(request);
}

/**
 * Checks a received message's shape: version, known request, payload size, descriptor count.
 * Returns a reason for the log line when it is malformed.
 */
export function validateMessage(m: Message): string | undefined {
  const { header, payload, fds } = m;
  if ((header.flags & FLAG_VERSION_MASK) !== VHOST_USER_VERSION) return `unsupported version ${header.flags & FLAG_VERSION_MASK}`;
  if ((header.flags & FLAG_REPLY) !== 0) return 'reply flag set on a request';
  const rule = RULES.get(header.request);
  if (rule === undefined) return 'unsupported request';
  if (payload.length !== header.sizeBytes) return `payload of ${payload.length} bytes, header says ${header.sizeBytes}`;
  if (typeof rule.size === 'number') {
    if (payload.length !== rule.size) return `payload of ${payload.length} bytes (expected ${rule.size})`;
  } else {
    const bad = rule.size(payload);
    if (bad !== undefined) return bad;
  }
  const fdRule = typeof rule.fds === 'function' ? rule.fds(payload) : rule.fds;
  const [min, max] = typeof fdRule === 'number' ? [fdRule, fdRule] : fdRule;
  if (fds.length < min || fds.length > max) {
    return min === max
      ? `${fds.length} file descriptors attached (expected ${min})`
      : `${fds.length} file descriptors attached (expected ${min}..${max})`;
  }
  return undefined;
}

/** Requests whose reply carries a body (they are answered whatever NEED_REPLY says). */
export const REQUESTS_WITH_REPLY: ReadonlySet<number> = new Set<number>([
  Request.GET_FEATURES,
  Request.GET_PROTOCOL_FEATURES,
  Request.GET_VRING_BASE,
  Request.GET_QUEUE_NUM,
  Request.GET_CONFIG,
  Request.GET_INFLIGHT_FD,
  Request.GET_MAX_MEM_SLOTS,
  Request.GET_STATUS,
]);

// --- framing -------------------------------------------------------------------------------------

export type RecvFn = (maxBytes: number, maxFds: number) => { data: Uint8Array; fds: number[] } | 'again' | 'eof';

/** A stream that cannot be framed (oversized payload): the connection must be closed. */
export class FramingError extends Error {
  override readonly name = 'FramingError';
}

/**
 * Cuts the socket's byte stream into messages. It asks recv for exactly the bytes the current
 * message still needs, so descriptors sent with the next message are never taken early, and
 * collects every descriptor that arrives while a message is being read into that message.
 */
export class MessageFramer {
  private header = new Uint8Array(HEADER_BYTES);
  private headerHave = 0;
  private parsed: Header | undefined;
  private payload: Uint8Array | undefined;
  private payloadHave = 0;
  private fds: number[] = [];

  constructor(private readonly recv: RecvFn) {}

  /**
   * Reads until the socket has nothing more (or maxMessages are complete). Returns the complete
   * messages and whether the peer hung up. Throws FramingError or SysError; descriptors of a partial
   * message stay owned by the framer until dispose().
   */
  read(maxMessages = 64): { messages: Message[]; eof: boolean } {
    const messages: Message[] = [];
    while (messages.length < maxMessages) {
      const parsed = this.parsed;
      const want = parsed === undefined ? HEADER_BYTES - this.headerHave : parsed.sizeBytes - this.payloadHave;
      if (parsed !== undefined && want === 0) {
        messages.push({ header: parsed, payload: this.payload ?? new Uint8Array(0), fds: this.fds });
        this.reset();
        continue;
      }
      const r = this.recv(want, MAX_FDS_PER_MESSAGE - this.fds.length);
      if (r === 'again') return { messages, eof: false };
      if (r === 'eof') return { messages, eof: true };
      this.fds.push(...r.fds);
      if (parsed === undefined) {
        this.header.set(r.data, this.headerHave);
        this.headerHave += r.data.length;
        if (this.headerHave === HEADER_BYTES) {
          const h = decodeHeader(this.header);
          if (h.sizeBytes > MAX_PAYLOAD_BYTES) {
            throw new FramingError(`${requestName(h.request)} announces a ${h.sizeBytes}-byte payload (at most ${MAX_PAYLOAD_BYTES})`);
          }
          this.parsed = h;
          this.payload = new Uint8Array(h.sizeBytes);
          this.payloadHave = 0;
        }
      } else {
        this.payload!.set(r.data, this.payloadHave);
        this.payloadHave += r.data.length;
      }
    }
    return { messages, eof: false };
  }

  /** Descriptors of a message still being read (to be closed on teardown). */
  dispose(): number[] {
    const fds = this.fds;
    this.reset();
    return fds;
  }

  private reset(): void {
    this.header = new Uint8Array(HEADER_BYTES);
    this.headerHave = 0;
    this.parsed = undefined;
    this.payload = undefined;
    this.payloadHave = 0;
    this.fds = [];
  }
}

/** One line describing a received message, for tracing interop problems. */
export function traceLine(m: Message): string {
  const { request, flags, sizeBytes } = m.header;
  const p = m.payload;
  let detail = '';
  if (sizeBytes === 8) detail = ` 0x${decodeU64(p).toString(16)}`;
  else if (request === Request.SET_VRING_ADDR && sizeBytes === VRING_ADDR_BYTES) detail = ` index ${decodeVringAddr(p).index}`;
  else if ((request === Request.GET_CONFIG || request === Request.SET_CONFIG) && sizeBytes >= CONFIG_HEADER_BYTES) {
    const c = new DataView(p.buffer, p.byteOffset, p.byteLength);
    detail = ` offset 0x${c.getUint32(0, true).toString(16)} size ${c.getUint32(4, true)}`;
  }
  return `${requestName(request)} flags 0x${flags.toString(16)} size ${sizeBytes}${detail} fds ${m.fds.length}`;
}
