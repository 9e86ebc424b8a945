// Module resolution for test children run from TypeScript sources (see ts-child.ts): the sources
// import './x.js' as tsc wants, and the file on disk is './x.ts'.
export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (err) {
    if (!specifier.startsWith('.') || !specifier.endsWith('.js')) throw err;
    return next(`${specifier.slice(0, -3)}.ts`, context);
  }
}
