/**
 * Reading a stored record field by field: each function returns the field typed or throws an
 * Error naming the field, which Table turns into CORRUPT naming the record's key. The parsers
 * build a fresh object of the known fields only, so what the service sees is exactly its type.
 */
import type { CatalogValue } from '../core/catalog-store.js';

export type StoredObject = { readonly [key: string]: CatalogValue };

export function storedObject(value: CatalogValue): StoredObject {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not an object');
  return value;
}

export function text(o: StoredObject, field: string): string {
  const value = o[field];
  if (typeof value !== 'string') throw new Error(`${field} is not a string`);
  return value;
}

export function optionalText(o: StoredObject, field: string): string | undefined {
  return o[field] === undefined ? undefined : text(o, field);
}

/** A non-negative whole number (sizes, counts, quotas). */
export function count(o: StoredObject, field: string): number {
  const value = o[field];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new Error(`${field} is not a non-negative whole number`);
  return value;
}

export function optionalCount(o: StoredObject, field: string): number | undefined {
  return o[field] === undefined ? undefined : count(o, field);
}

export function flag(o: StoredObject, field: string): boolean {
  const value = o[field];
  if (typeof value !== 'boolean') throw new Error(`${field} is not true or false`);
  return value;
}

export function oneOf<T extends string>(o: StoredObject, field: string, allowed: readonly T[]): T {
  const value = text(o, field);
  if (!(allowed as readonly string[]).includes(value)) throw new Error(`${field} is ${JSON.stringify(value)}, not one of ${allowed.join(', ')}`);
  return value as T;
}

export function texts(o: StoredObject, field: string): string[] {
  const value = o[field];
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) throw new Error(`${field} is not a list of strings`);
  return [...value] as string[];
}

export function objects(o: StoredObject, field: string): StoredObject[] {
  const value = o[field];
  if (!Array.isArray(value)) throw new Error(`${field} is not a list`);
  return value.map(storedObject);
}

/** `{ [field]: value }` when the value is present, `{}` otherwise (exactOptionalPropertyTypes). */
export function optional<K extends string, V>(field: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [field]: value }) as { [P in K]?: V };
}
