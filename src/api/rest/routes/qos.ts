/**
 * QoS routes (issue 15; docs/qos.md): a volume's and a pool's QoS (GET shows what applies and
 * why, PATCH changes it field by field, DELETE clears it), and named policies under
 * /v1/qos-policies. Changes reach exported volumes at once.
 */
import type { FastifyInstance } from 'fastify';
import type { QosLimits } from '../../../volume/qos/limits.js';
import type { QosSettingChange } from '../../../volume/qos/types.js';
import type { PoolParams, RestContext, VolumeParams } from '../context.js';
import { qosChangeBodySchema, qosInfoJson, qosInfoSchema, qosPolicyCreateBodySchema, qosPolicyJson, qosPolicySchema } from '../qos-schemas.js';
import { errorResponses, nameSchema } from '../schemas.js';
import { poolParams, volumeParams } from './volumes.js';

const policyParams = { type: 'object', required: ['name'], properties: { name: nameSchema } } as const;
interface PolicyParams {
  name: string;
}

const info = { 200: qosInfoSchema, ...errorResponses };

export function registerQosRoutes(app: FastifyInstance, ctx: RestContext): void {
  const { service } = ctx;

  app.get<{ Params: VolumeParams }>('/v1/pools/:pool/volumes/:vol/qos', {
    schema: { tags: ['qos'], summary: "A volume's QoS: its own limits and policy, and the limits that apply", params: volumeParams, response: info },
  }, async (req) => qosInfoJson(await service.volumeQos(req.params.pool, req.params.vol)));

  app.patch<{ Params: VolumeParams; Body: QosSettingChange }>('/v1/pools/:pool/volumes/:vol/qos', {
    schema: {
      tags: ['qos'],
      summary: "Change a volume's own QoS limits (field by field) or attach a policy; exported devices follow at once",
      params: volumeParams,
      body: qosChangeBodySchema,
      response: info,
    },
  }, async (req) => qosInfoJson(await service.setVolumeQos(req.params.pool, req.params.vol, req.body)));

  app.delete<{ Params: VolumeParams }>('/v1/pools/:pool/volumes/:vol/qos', {
    schema: { tags: ['qos'], summary: "Clear a volume's own QoS limits and policy (its pool's default applies)", params: volumeParams, response: info },
  }, async (req) => qosInfoJson(await service.clearVolumeQos(req.params.pool, req.params.vol)));

  app.get<{ Params: PoolParams }>('/v1/pools/:pool/qos', {
    schema: { tags: ['qos'], summary: "A pool's default QoS (for its volumes that have none of their own)", params: poolParams, response: info },
  }, async (req) => qosInfoJson(await service.poolQos(req.params.pool)));

  app.patch<{ Params: PoolParams; Body: QosSettingChange }>('/v1/pools/:pool/qos', {
    schema: { tags: ['qos'], summary: "Change a pool's default QoS limits or policy", params: poolParams, body: qosChangeBodySchema, response: info },
  }, async (req) => qosInfoJson(await service.setPoolQos(req.params.pool, req.body)));

  app.delete<{ Params: PoolParams }>('/v1/pools/:pool/qos', {
    schema: { tags: ['qos'], summary: "Clear a pool's default QoS", params: poolParams, response: info },
  }, async (req) => qosInfoJson(await service.clearPoolQos(req.params.pool)));

  app.get('/v1/qos-policies', {
    schema: { tags: ['qos'], summary: 'List the QoS policies', response: { 200: { type: 'array', items: qosPolicySchema }, ...errorResponses } },
  }, async () => (await service.listQosPolicies()).map(qosPolicyJson));

  app.post<{ Body: { name: string; limits: QosLimits } }>('/v1/qos-policies', {
    schema: { tags: ['qos'], summary: 'Create a QoS policy (named limits that volumes and pools attach)', body: qosPolicyCreateBodySchema, response: { 201: qosPolicySchema, ...errorResponses } },
  }, async (req, reply) => reply.code(201).send(qosPolicyJson(await service.createQosPolicy(req.body.name, req.body.limits))));

  app.get<{ Params: PolicyParams }>('/v1/qos-policies/:name', {
    schema: { tags: ['qos'], summary: 'A QoS policy and how many volumes and pools attach it', params: policyParams, response: { 200: qosPolicySchema, ...errorResponses } },
  }, async (req) => qosPolicyJson(await service.qosPolicyInfo(req.params.name)));

  app.patch<{ Params: PolicyParams; Body: { limits: Record<string, number | null> } }>('/v1/qos-policies/:name', {
    schema: {
      tags: ['qos'],
      summary: "Change a policy's limits (field by field); every exported volume it applies to follows at once",
      params: policyParams,
      body: { type: 'object', required: ['limits'], additionalProperties: false, properties: { limits: { ...qosChangeBodySchema.properties.limits, type: 'object' } } },
      response: { 200: qosPolicySchema, ...errorResponses },
    },
  }, async (req) => qosPolicyJson(await service.setQosPolicy(req.params.name, req.body.limits)));

  app.delete<{ Params: PolicyParams }>('/v1/qos-policies/:name', {
    schema: { tags: ['qos'], summary: 'Delete a QoS policy (refused while a volume or pool attaches it)', params: policyParams, response: { 204: { type: 'null' }, ...errorResponses } },
  }, async (req, reply) => {
    await service.deleteQosPolicy(req.params.name);
    return reply.code(204).send();
  });
}
