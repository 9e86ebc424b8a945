/**
 * /v1/users: the S3 endpoint's users and their access keys (create, list, info, delete). A key's
 * secret is in the response that creates it and nowhere else.
 */
import type { FastifyInstance } from 'fastify';
import { StorageError } from '../../../core/errors.js';
import type { UserStore } from '../../../objects/users/user-store.js';
import type { RestContext } from '../context.js';
import { errorResponses, listOf, nameSchema, ref } from '../schemas.js';
import { USER_SCHEMAS, accessKeyJson, userJson } from '../user-schemas.js';

const userParams = { type: 'object', required: ['user'], properties: { user: nameSchema } } as const;
const keyParams = {
  type: 'object',
  required: ['user', 'key'],
  properties: { user: nameSchema, key: { type: 'string', pattern: '^[A-Z0-9]{1,128}$' } },
} as const;

export function registerUserRoutes(app: FastifyInstance, ctx: RestContext): void {
  for (const schema of USER_SCHEMAS) app.addSchema(schema);
  const users = (): UserStore => {
    if (ctx.users === undefined) throw new StorageError('UNSUPPORTED', 'this API has no S3 user store');
    return ctx.users;
  };

  app.get('/v1/users', {
    schema: { tags: ['users'], summary: 'List S3 users', response: { 200: listOf('User'), ...errorResponses } },
  }, async () => (await users().listUsers()).map(userJson));

  app.post<{ Body: { name: string } }>('/v1/users', {
    schema: {
      tags: ['users'],
      summary: 'Create an S3 user',
      body: { type: 'object', required: ['name'], additionalProperties: false, properties: { name: nameSchema } },
      response: { 201: ref('User'), ...errorResponses },
    },
  }, async (req, reply) => reply.code(201).send(userJson(await users().createUser(req.body.name))));

  app.get<{ Params: { user: string } }>('/v1/users/:user', {
    schema: { tags: ['users'], summary: 'An S3 user and its access keys (without secrets)', params: userParams, response: { 200: ref('UserDetail'), ...errorResponses } },
  }, async (req) => {
    const user = await users().user(req.params.user);
    return { ...userJson(user), keys: (await users().keysOf(user.name)).map(accessKeyJson) };
  });

  app.delete<{ Params: { user: string } }>('/v1/users/:user', {
    schema: { tags: ['users'], summary: 'Delete an S3 user and its access keys', params: userParams, response: { 204: { type: 'null' }, ...errorResponses } },
  }, async (req, reply) => {
    await users().deleteUser(req.params.user);
    return reply.code(204).send();
  });

  app.post<{ Params: { user: string } }>('/v1/users/:user/keys', {
    schema: { tags: ['users'], summary: 'Create an access key; the response holds its secret, shown this once', params: userParams, response: { 201: ref('AccessKeyCreated'), ...errorResponses } },
  }, async (req, reply) => reply.code(201).send(await users().createKey(req.params.user)));

  app.get<{ Params: { user: string } }>('/v1/users/:user/keys', {
    schema: { tags: ['users'], summary: "A user's access keys (without secrets)", params: userParams, response: { 200: listOf('AccessKey'), ...errorResponses } },
  }, async (req) => (await users().keysOf((await users().user(req.params.user)).name)).map(accessKeyJson));

  app.delete<{ Params: { user: string; key: string } }>('/v1/users/:user/keys/:key', {
    schema: { tags: ['users'], summary: 'Delete an access key', params: keyParams, response: { 204: { type: 'null' }, ...errorResponses } },
  }, async (req, reply) => {
    const key = await users().key(req.params.key);
    if (key.owner !== req.params.user) throw new StorageError('NOT_FOUND', `the user '${req.params.user}' has no access key '${req.params.key}'`);
    await users().deleteKey(key.id);
    return reply.code(204).send();
  });
}
