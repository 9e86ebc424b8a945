/** vhost-user wire constants, message encoding and the front-end's errors (written independently of src/export/vhost-user on purpose). */
// ---------------------------------------------------------------------------------------------
// Protocol constants (docs/interop/vhost-user.rst)

export const VhostUserRequest = {
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
  SET_BACKEND_REQ_FD: 21,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  RESET_DEVICE: 34,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

/** Requests the back-end always answers (with NEED_REPLY or not). */
export const REPLYING = new Set<number>([
  VhostUserRequest.GET_FEATURES,
  VhostUserRequest.GET_PROTOCOL_FEATURES,
  VhostUserRequest.GET_QUEUE_NUM,
  VhostUserRequest.GET_VRING_BASE,
  VhostUserRequest.GET_CONFIG,
  VhostUserRequest.GET_INFLIGHT_FD,
  VhostUserRequest.GET_MAX_MEM_SLOTS,
  VhostUserRequest.GET_STATUS,
]);

export const HEADER_BYTES = 12;
export const FLAG_VERSION = 0x1;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
/** u64 payload of SET_VRING_KICK/CALL/ERR: no fd follows (polling mode). */
export const VRING_NOFD_MASK = 0x100;

export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  REPLY_ACK: 3,
  BACKEND_REQ: 5,
  CONFIG: 9,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/** Virtio feature bit 30: the back-end speaks GET/SET_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;

export const BlkFeature = {
  SIZE_MAX: 1,
  SEG_MAX: 2,
  GEOMETRY: 4,
  RO: 5,
  BLK_SIZE: 6,
  FLUSH: 9,
  TOPOLOGY: 10,
  CONFIG_WCE: 11,
  MQ: 12,
  DISCARD: 13,
  WRITE_ZEROES: 14,
  NOTIFY_ON_EMPTY: 24,
  INDIRECT_DESC: 28,
  EVENT_IDX: 29,
  VERSION_1: 32,
} as const;

export const BlkType = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8, DISCARD: 11, WRITE_ZEROES: 13, SECURE_ERASE: 14 } as const;
export const BlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;

export const DescFlag = { NEXT: 1, WRITE: 2, INDIRECT: 4 } as const;
export const AVAIL_F_NO_INTERRUPT = 1;
export const USED_F_NO_NOTIFY = 1;

export const SECTOR_BYTES = 512;
export const PAGE = 4096;

export const bit = (n: number): bigint => 1n << BigInt(n);

// ---------------------------------------------------------------------------------------------
// Wire encoding (little-endian, x86-64)

export interface MessageHeader {
  request: number;
  flags: number;
  /** Payload size written into the header (defaults to the payload's length). */
  size?: number;
}

export function encodeMessage(header: MessageHeader, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, header.request >>> 0, true);
  dv.setUint32(4, header.flags >>> 0, true);
  dv.setUint32(8, (header.size ?? payload.length) >>> 0, true);
  out.set(payload, HEADER_BYTES);
  return out;
}

export function u64Payload(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, value), true);
  return out;
}

export function vringStatePayload(index: number, num: number): Uint8Array {
  const out = new Uint8Array(8);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, index >>> 0, true);
  dv.setUint32(4, num >>> 0, true);
  return out;
}

export interface VringAddr {
  index: number;
  flags?: number;
  descFrontendAddr: bigint;
  usedFrontendAddr: bigint;
  availFrontendAddr: bigint;
  logGuestAddr?: bigint;
}

export function vringAddrPayload(a: VringAddr): Uint8Array {
  const out = new Uint8Array(40);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, a.index >>> 0, true);
  dv.setUint32(4, (a.flags ?? 0) >>> 0, true);
  dv.setBigUint64(8, a.descFrontendAddr, true);
  dv.setBigUint64(16, a.usedFrontendAddr, true);
  dv.setBigUint64(24, a.availFrontendAddr, true);
  dv.setBigUint64(32, a.logGuestAddr ?? 0n, true);
  return out;
}

export interface MemRegionDesc {
  guestAddr: bigint;
  sizeBytes: bigint;
  frontendAddr: bigint;
  mmapOffsetBytes: bigint;
}

export function writeRegion(dv: DataView, at: number, r: MemRegionDesc): void {
  dv.setBigUint64(at, r.guestAddr, true);
  dv.setBigUint64(at + 8, r.sizeBytes, true);
  dv.setBigUint64(at + 16, r.frontendAddr, true);
  dv.setBigUint64(at + 24, r.mmapOffsetBytes, true);
}

/** SET_MEM_TABLE payload: u32 nregions, u32 padding, 8 x 32-byte regions (QEMU always sends the full 8 slots' room? no: only nregions). */
export function memTablePayload(regions: readonly MemRegionDesc[], countOverride?: number): Uint8Array {
  const out = new Uint8Array(8 + 32 * regions.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, countOverride ?? regions.length, true);
  regions.forEach((r, i) => writeRegion(dv, 8 + 32 * i, r));
  return out;
}

/** ADD_MEM_REG / REM_MEM_REG payload: u64 padding, one region. */
export function singleRegionPayload(r: MemRegionDesc): Uint8Array {
  const out = new Uint8Array(40);
  writeRegion(new DataView(out.buffer), 8, r);
  return out;
}

export function configPayload(offset: number, size: number, flags = 0, data?: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + size);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, offset, true);
  dv.setUint32(4, size, true);
  dv.setUint32(8, flags, true);
  if (data) out.set(data.subarray(0, size), 12);
  return out;
}

export interface BlkConfig {
  capacitySectors: bigint;
  sizeMax: number;
  segMax: number;
  blkSize: number;
  writeback: number;
  numQueues: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  discardAlignment: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
  writeZeroesMayUnmap: number;
  raw: Uint8Array;
}

export function decodeBlkConfig(raw: Uint8Array): BlkConfig {
  const buf = new Uint8Array(64);
  buf.set(raw.subarray(0, 64));
  const dv = new DataView(buf.buffer);
  return {
    capacitySectors: dv.getBigUint64(0, true),
    sizeMax: dv.getUint32(8, true),
    segMax: dv.getUint32(12, true),
    blkSize: dv.getUint32(20, true),
    writeback: dv.getUint8(32),
    numQueues: dv.getUint16(34, true),
    maxDiscardSectors: dv.getUint32(36, true),
    maxDiscardSeg: dv.getUint32(40, true),
    discardAlignment: dv.getUint32(44, true),
    maxWriteZeroesSectors: dv.getUint32(48, true),
    maxWriteZeroesSeg: dv.getUint32(52, true),
    writeZeroesMayUnmap: dv.getUint8(56),
    raw: raw.slice(),
  };
}

export interface ReceivedMessage {
  request: number;
  flags: number;
  size: number;
  payload: Uint8Array;
  fds: number[];
}

// ---------------------------------------------------------------------------------------------
// Errors

export class ConnectionClosedError extends Error {
  constructor(message = 'vhost-user connection closed') {
    super(message);
    this.name = 'ConnectionClosedError';
  }
}

export class BlkStatusError extends Error {
  constructor(
    readonly status: number,
    what: string,
  ) {
    super(`${what}: virtio-blk status ${status} (${status === 1 ? 'IOERR' : status === 2 ? 'UNSUPP' : 'unknown'})`);
    this.name = 'BlkStatusError';
  }
}
