/** The front-end's options and the features it asks for. */
import { BlkFeature, ProtocolFeature, bit } from './wire.js';
// ---------------------------------------------------------------------------------------------
// Options

export interface FrontendOptions {
  /** Queues to set up (<= what GET_QUEUE_NUM reports when MQ is negotiated). Default 1. */
  queueCount?: number;
  /** Ring size (power of two). Default 256. */
  queueSize?: number;
  /** Requests in flight per queue (each has its own header, status, indirect table and data slot). Default 64. */
  queueDepth?: number;
  /** Largest data buffer of one request (bytes). Default 128 KiB. */
  maxRequestBytes?: number;
  /** Split data buffers into descriptors of at most this many bytes (like a guest's 4 KiB pages). Default: one descriptor. */
  segmentBytes?: number;
  /** Negotiate EVENT_IDX when the back-end offers it. Default true. */
  eventIdx?: boolean;
  /** Negotiate INDIRECT_DESC and put every request in an indirect table. Default false (Linux uses direct chains when the ring has room). */
  indirect?: boolean;
  /** Number of memory regions (same memfd, separate mmap offsets, a 2 MiB gap in guest addresses between them). Default 1. */
  regionCount?: number;
  /** Scratch bytes in guest memory for raw chains (hostile tests). Default 1 MiB. */
  scratchBytes?: number;
  /** Protocol features this front-end accepts (intersected with the back-end's). Default MQ|REPLY_ACK|CONFIG|CONFIGURE_MEM_SLOTS|RESET_DEVICE. */
  protocolFeatureMask?: bigint;
  /** Use ADD_MEM_REG when CONFIGURE_MEM_SLOTS is negotiated (QEMU does); false forces SET_MEM_TABLE. Default true. */
  addMemReg?: boolean;
  /** With REPLY_ACK, set NEED_REPLY on every request that has no reply of its own. Default true (QEMU sets it on memory table messages only). */
  ackAll?: boolean;
  /** GET_CONFIG size. Default 60 (struct virtio_blk_config). */
  configBytes?: number;
  /** Wait this long for a reply (ms). Default 10000. */
  replyTimeoutMs?: number;
  /** Kick after every submission batch even when the back-end asked not to be notified. Default false. */
  alwaysKick?: boolean;
  /** Set up and start the rings in connect() (default true); false stops after the QEMU init phase. */
  start?: boolean;
  /**
   * Negotiate INFLIGHT_SHMFD as QEMU does (GET_INFLIGHT_FD once, SET_INFLIGHT_FD on every start),
   * and keep requests in flight across a lost connection, as QEMU does: redial() reconnects and
   * the back-end resubmits them. Default false.
   */
  inflight?: boolean;
}

export const DEFAULT_PROTOCOL_MASK =
  bit(ProtocolFeature.MQ) |
  bit(ProtocolFeature.REPLY_ACK) |
  bit(ProtocolFeature.CONFIG) |
  bit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  bit(ProtocolFeature.RESET_DEVICE);

export const WANTED_BLK_FEATURES =
  bit(BlkFeature.SIZE_MAX) |
  bit(BlkFeature.SEG_MAX) |
  bit(BlkFeature.GEOMETRY) |
  bit(BlkFeature.RO) |
  bit(BlkFeature.BLK_SIZE) |
  bit(BlkFeature.FLUSH) |
  bit(BlkFeature.TOPOLOGY) |
  bit(BlkFeature.CONFIG_WCE) |
  bit(BlkFeature.MQ) |
  bit(BlkFeature.DISCARD) |
  bit(BlkFeature.WRITE_ZEROES) |
  bit(BlkFeature.VERSION_1);

export interface StartOptions {
  eventIdx?: boolean;
  indirect?: boolean;
  /** Zero the rings and start from index 0 (what a guest driver reset does); default: continue from where the last stop left off. */
  fresh?: boolean;
  /** New kick and call eventfds for every queue (the old ones are closed here after the back-end got the new ones). */
  replaceFds?: boolean;
}
