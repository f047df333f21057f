#!/usr/bin/env node
// End-to-end check of the Surplus gRPC API from a client that shares no code with the
// server:
//   1. server reflection lists surplus.v1.{Tenant,Operator,Finance,Worker}Service and
//      returns file descriptors that declare them with the methods used below;
//   2. with only the .proto files from proto/, an operator creates a tenant and issues
//      it a key; the tenant submits a job (twice with one request id: the same job
//      comes back) and reads it back.
//
// Environment: SURPLUS_ENDPOINT (default 127.0.0.1:50051), SURPLUS_API_KEY (an
// operator key, required), SURPLUS_TLS_CA (optional CA bundle; plaintext without),
// SURPLUS_PROTO_DIR (default: proto/ of this repository).
// Exit status: 0 when every check passes; 1 with one "reflection_client: FAIL: ..."
// line on stderr otherwise.

'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ENDPOINT = process.env.SURPLUS_ENDPOINT || '127.0.0.1:50051';
const OPERATOR_KEY = process.env.SURPLUS_API_KEY || '';
const TLS_CA = process.env.SURPLUS_TLS_CA || '';
const PROTO_DIR = process.env.SURPLUS_PROTO_DIR || path.resolve(__dirname, '..', '..', '..', 'proto');
const CALL_TIMEOUT_MS = 10000;
const REQUIRED_SERVICES = [
  'surplus.v1.TenantService',
  'surplus.v1.OperatorService',
  'surplus.v1.FinanceService',
  'surplus.v1.WorkerService',
];
const REQUIRED_METHODS = {
  'surplus.v1.TenantService': ['SubmitJob', 'GetJob'],
  'surplus.v1.OperatorService': ['CreateTenant', 'IssueApiKey'],
};

class CheckError extends Error {}

function check(condition, message) {
  if (!condition) throw new CheckError(message);
}

function log(message) {
  process.stdout.write(`reflection_client: ${message}\n`);
}

function credentials() {
  return TLS_CA ? grpc.credentials.createSsl(fs.readFileSync(TLS_CA)) : grpc.credentials.createInsecure();
}

function deadline() {
  return new Date(Date.now() + CALL_TIMEOUT_MS);
}

function bearer(key) {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${key}`);
  return md;
}

function codeName(code) {
  return Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);
}

// Promise around a unary call; failures name the method and the gRPC code.
function unary(client, method, request, key) {
  return new Promise((resolve, reject) => {
    client[method](request, bearer(key), { deadline: deadline() }, (err, response) => {
      if (err) {
        reject(new CheckError(`${method}: ${codeName(err.code)}: ${err.details || err.message}`));
      } else {
        resolve(response);
      }
    });
  });
}

// --- protobuf wire reading, just enough for FileDescriptorProto -----------------

function readVarint(buf, pos) {
  let result = 0;
  let shift = 0;
  for (;;) {
    check(pos < buf.length, 'truncated varint in a file descriptor');
    const byte = buf[pos++];
    result += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return [result, pos];
    shift += 7;
    check(shift < 64, 'varint too long in a file descriptor');
  }
}

// Yields [fieldNumber, wireType, value] for each field of a serialized message;
// value is a Buffer for length-delimited fields, a number otherwise.
function* fields(buf) {
  let pos = 0;
  while (pos < buf.length) {
    let key;
    [key, pos] = readVarint(buf, pos);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      let v;
      [v, pos] = readVarint(buf, pos);
      yield [field, wire, v];
    } else if (wire === 2) {
      let len;
      [len, pos] = readVarint(buf, pos);
      check(pos + len <= buf.length, 'truncated field in a file descriptor');
      yield [field, wire, buf.subarray(pos, pos + len)];
      pos += len;
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else {
      throw new CheckError(`unsupported wire type ${wire} in a file descriptor`);
    }
  }
}

// FileDescriptorProto: name = 1, package = 2, service = 6 (ServiceDescriptorProto:
// name = 1, method = 2 (MethodDescriptorProto: name = 1)).
function decodeFileDescriptor(buf) {
  const file = { name: '', package: '', services: {} };
  for (const [field, wire, value] of fields(buf)) {
    if (wire !== 2) continue;
    if (field === 1) file.name = value.toString('utf8');
    else if (field === 2) file.package = value.toString('utf8');
    else if (field === 6) {
      let serviceName = '';
      const methods = [];
      for (const [sf, sw, sv] of fields(value)) {
        if (sw !== 2) continue;
        if (sf === 1) serviceName = sv.toString('utf8');
        else if (sf === 2) {
          for (const [mf, mw, mv] of fields(sv)) {
            if (mw === 2 && mf === 1) methods.push(mv.toString('utf8'));
          }
        }
      }
      file.services[serviceName] = methods;
    }
  }
  return file;
}

// --- 1. reflection --------------------------------------------------------------

function loadReflection() {
  const def = protoLoader.loadSync(path.join(__dirname, 'reflection.proto'), {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def);
  return new pkg.grpc.reflection.v1alpha.ServerReflection(ENDPOINT, credentials());
}

// Sends the requests on one stream and collects one response per request.
function reflect(client, requests) {
  return new Promise((resolve, reject) => {
    const responses = [];
    const call = client.ServerReflectionInfo(bearer(OPERATOR_KEY), { deadline: deadline() });
    call.on('data', (r) => {
      responses.push(r);
      if (responses.length === requests.length) call.end();
    });
    call.on('error', (err) =>
      reject(new CheckError(`ServerReflectionInfo: ${codeName(err.code)}: ${err.details || err.message}`)),
    );
    call.on('end', () => resolve(responses));
    for (const r of requests) call.write(r);
    if (requests.length === 0) call.end();
  });
}

async function checkReflection() {
  const client = loadReflection();
  try {
    const [listed] = await reflect(client, [{ list_services: '*' }]);
    check(listed && listed.message_response === 'list_services_response',
      `list_services answered ${listed ? listed.message_response : 'nothing'}`);
    const names = listed.list_services_response.service.map((s) => s.name);
    log(`services: ${names.join(', ')}`);
    for (const want of REQUIRED_SERVICES) {
      check(names.includes(want), `reflection does not list ${want} (listed: ${names.join(', ')})`);
    }

    const answers = await reflect(client, REQUIRED_SERVICES.map((s) => ({ file_containing_symbol: s })));
    check(answers.length === REQUIRED_SERVICES.length, 'reflection answered fewer requests than sent');
    answers.forEach((answer, i) => {
      const service = REQUIRED_SERVICES[i];
      if (answer.message_response === 'error_response') {
        throw new CheckError(`file_containing_symbol ${service}: ${answer.error_response.error_message}`);
      }
      check(answer.message_response === 'file_descriptor_response',
        `file_containing_symbol ${service} answered ${answer.message_response}`);
      const files = answer.file_descriptor_response.file_descriptor_proto.map(decodeFileDescriptor);
      const shortName = service.split('.').pop();
      const declaring = files.find((f) => f.package === 'surplus.v1' && shortName in f.services);
      check(declaring, `no file descriptor declares ${service} (got ${files.map((f) => f.name).join(', ')})`);
      for (const method of REQUIRED_METHODS[service] || []) {
        check(declaring.services[shortName].includes(method),
          `${service} in ${declaring.name} has no method ${method}`);
      }
      log(`${service}: declared in ${declaring.name} with ${declaring.services[shortName].length} methods`);
    });
  } finally {
    client.close();
  }
}

// --- 2. a tenant's first job ----------------------------------------------------

function loadSurplus() {
  const def = protoLoader.loadSync(['surplus/v1/tenant.proto', 'surplus/v1/operator.proto'], {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def).surplus.v1;
}

async function checkTenantFlow() {
  const v1 = loadSurplus();
  const operator = new v1.OperatorService(ENDPOINT, credentials());
  const tenantService = new v1.TenantService(ENDPOINT, credentials());
  try {
    const tenantId = `e2e-${crypto.randomBytes(4).toString('hex')}`;
    const tenant = await unary(operator, 'CreateTenant',
      { id: tenantId, display_name: 'reflection client', max_gpus: 0, max_pending_jobs: 0 }, OPERATOR_KEY);
    check(tenant.id === tenantId, `CreateTenant returned tenant '${tenant.id}', want '${tenantId}'`);
    log(`created tenant ${tenant.id}`);

    const issued = await unary(operator, 'IssueApiKey',
      { role: 'ROLE_TENANT', tenant_id: tenantId, description: 'reflection client' }, OPERATOR_KEY);
    check(issued.api_key, 'IssueApiKey returned no api_key');
    check(issued.role === 'ROLE_TENANT', `IssueApiKey returned role ${issued.role}`);
    check(issued.tenant_id === tenantId, `IssueApiKey returned tenant '${issued.tenant_id}'`);
    log(`issued tenant key ${issued.key_id}`);

    const spec = {
      request_id: `e2e-${crypto.randomBytes(8).toString('hex')}`,
      name: 'reflection-client',
      shape: { slice_profile: '1g.10gb' },
      tier: 'TIER_SPOT',
      bid_micros_per_gpu_hour: '2100000', // $2.10 per GPU-hour
      max_runtime_seconds: '60',
      workload: { builtin: { kind: 'BUILTIN_KIND_SLEEP', duration_ms: '1000', params: {} } },
      gpu_model: '',
      requeue: false,
    };
    const submitted = await unary(tenantService, 'SubmitJob', { spec }, issued.api_key);
    check(submitted.job && submitted.job.id, 'SubmitJob returned no job id');
    check(submitted.created === true, 'SubmitJob of a new request id returned created=false');
    const jobId = submitted.job.id;
    log(`submitted job ${jobId} (${submitted.job.state})`);

    const again = await unary(tenantService, 'SubmitJob', { spec }, issued.api_key);
    check(again.job.id === jobId, `resubmitting request id ${spec.request_id} gave job ${again.job.id}, want ${jobId}`);
    check(again.created === false, 'resubmitting the same request id returned created=true');

    const job = await unary(tenantService, 'GetJob', { job_id: jobId }, issued.api_key);
    check(job.id === jobId, `GetJob returned job '${job.id}', want '${jobId}'`);
    check(job.tenant_id === tenantId, `GetJob returned tenant '${job.tenant_id}', want '${tenantId}'`);
    check(job.spec && job.spec.bid_micros_per_gpu_hour === '2100000',
      `GetJob returned bid ${job.spec && job.spec.bid_micros_per_gpu_hour}, want 2100000`);
    log(`job ${job.id} is ${job.state}`);
  } finally {
    operator.close();
    tenantService.close();
  }
}

async function main() {
  check(OPERATOR_KEY, 'SURPLUS_API_KEY (an operator key) is not set');
  check(fs.existsSync(path.join(PROTO_DIR, 'surplus', 'v1', 'tenant.proto')),
    `no surplus/v1/tenant.proto under ${PROTO_DIR} (set SURPLUS_PROTO_DIR)`);
  log(`endpoint ${ENDPOINT}`);
  await checkReflection();
  await checkTenantFlow();
  log('OK');
}

main().then(
  () => process.exit(0),
  (err) => {
    const message = err instanceof CheckError ? err.message : (err && err.stack) || String(err);
    process.stderr.write(`reflection_client: FAIL: ${String(message).split('\n')[0]}\n`);
    process.exit(1);
  },
);
