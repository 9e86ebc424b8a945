/**
 * Memory another thread can take over: postMessage moves an ArrayBuffer named in its transfer
 * list instead of copying it (the sender's views are detached until it is moved back). It refuses
 * shared memory and memory already moved away, and a transfer list may name a buffer only once,
 * so each view must stand on memory of its own.
 */

/**
 * The ArrayBuffers under `views` (numbers, which carry no memory, skipped), in order: the
 * transfer list that moves them; undefined when one cannot be moved (shared, detached, or under
 * two of the views).
 */
export function movableMemories(views: readonly (Uint8Array | number)[]): ArrayBuffer[] | undefined {
  const memories: ArrayBuffer[] = [];
  const seen = new Set<ArrayBufferLike>();
  for (const view of views) {
    if (typeof view === 'number') continue;
    const memory = view.buffer;
    // A detached ArrayBuffer (moved away before) has no bytes: byteLength 0.
    if (!(memory instanceof ArrayBuffer) || memory.byteLength === 0 || seen.has(memory)) return undefined;
    seen.add(memory);
    memories.push(memory);
  }
  return memories;
}
