/** What the tiered store crash test's child stores (shared by the child and the test). */
export const CRASH_OBJECTS = 24;
export const CRASH_OBJECT_BYTES = 96 * 1024;

export function crashObjectKey(index: number): string {
  return `packs/${String(index).padStart(3, '0')}`;
}
