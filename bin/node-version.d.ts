// Types for bin/node-version.js (plain JavaScript: it must load on any Node.js to report it).
export type NodeVersion = [major: number, minor: number, patch: number];
export function minimumNodeVersion(enginesNode: string): NodeVersion;
export function parseNodeVersion(version: string): NodeVersion;
export function atLeast(version: NodeVersion, minimum: NodeVersion): boolean;
export function nodeVersionProblem(version: string, enginesNode: string): string | undefined;
