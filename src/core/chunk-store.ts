/** ChunkStore: whole objects by key. memory, local dir and S3 implement it; dedup and tier wrap one. */
export interface ChunkStore {
  get(key: string): Promise<Uint8Array | undefined>;
  put(key: string, data: Uint8Array): Promise<void>;
  has(key: string): Promise<boolean>;
  delete(key: string): Promise<void>;
  list(prefix: string): AsyncIterable<string>;
}
