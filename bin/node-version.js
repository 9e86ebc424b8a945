// The Node.js version check behind bin/strata.js: package.json's engines.node (">=X.Y[.Z]") is the
// one statement of the supported versions; this reads it, so the two cannot disagree. Plain
// JavaScript without newer syntax, so that an old Node.js parses it and can print the message.

/** The lowest version engines.node allows, as [major, minor, patch]. */
export function minimumNodeVersion(enginesNode) {
  const match = /^>=\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(String(enginesNode).trim());
  if (!match) throw new Error(`package.json engines.node must read ">=MAJOR.MINOR", not "${enginesNode}"`);
  return [Number(match[1]), Number(match[2] || 0), Number(match[3] || 0)];
}

/** [major, minor, patch] of a version string such as process.version ("v24.1.0"). */
export function parseNodeVersion(version) {
  const match = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (!match) throw new Error(`'${version}' is not a Node.js version`);
  return [Number(match[1]), Number(match[2]), Number(match[3])];
}

/** Whether `version` is at least `minimum` (both [major, minor, patch]). */
export function atLeast(version, minimum) {
  for (let i = 0; i < 3; i++) {
    if (version[i] !== minimum[i]) return version[i] > minimum[i];
  }
  return true;
}

/** undefined when `version` satisfies engines.node, else the message for the user, naming the fix. */
export function nodeVersionProblem(version, enginesNode) {
  const minimum = minimumNodeVersion(enginesNode);
  if (atLeast(parseNodeVersion(version), minimum)) return undefined;
  const prefix = '$HOME/.cache/strata-node24';
  return (
    `strata: Node.js ${version} is too old: Strata needs Node.js ${enginesNode.trim()} (the 22 or 24 LTS line).\n` +
    `  Install Node.js 24 (from your distribution, nvm, or npm) and run the command again, e.g.:\n` +
    `    npm install --prefix "${prefix}" --no-save node@24 && export PATH="${prefix}/node_modules/.bin:$PATH"\n`
  );
}
