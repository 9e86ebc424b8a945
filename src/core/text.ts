/** Words for messages shared by the daemon and the CLI. */

/** "1 snapshot", "2 snapshots", "0 volumes": a count with its noun in the right number. */
export function countOf(count: number, noun: string, pluralNoun = `${noun}s`): string {
  return `${count} ${count === 1 ? noun : pluralNoun}`;
}
