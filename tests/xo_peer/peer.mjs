// Xen Orchestra's XAPI client (npm `xen-api`, unmodified) driving the xapi simulator as a peer.
//
// Usage: node peer.mjs CONFIG.json
//   {"url": "https://127.0.0.1:P", "user": "root", "password": "...",
//    "vm_uuid": "...",            VM to snapshot, export and re-import
//    "sr_uuid": "...",            SR to import into (optional: the SR of the VM's first disk)
//    "xva_path": "/tmp/x.xva",    where the export is stored
//    "allow_unauthorized": false, (set NODE_EXTRA_CA_CERTS to the simulator's CA instead)
//    "transport": "auto"}         or "json-rpc" / "xml-rpc" (auto: JSON-RPC, XML-RPC fallback)
//
// Prints ONE JSON line on stdout: {"ok": true, calls, http, bytes, time_s, ...} or
// {"ok": false, "error": {...}}. Everything the client does goes through its own public API
// (connect, objects cache fed by event.from, callAsync, getResource, putResource, barrier); the
// only additions are counters wrapped around its transport so the figures are real.

import fs from 'node:fs'
import http from 'node:http'
import https from 'node:https'

import { createClient } from 'xen-api'

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
const started = process.hrtime.bigint()
const seconds = since => Number(process.hrtime.bigint() - since) / 1e9
// progress on stderr, so a crash inside a dependency still shows where it happened
const phase = name => process.stderr.write(`peer: ${name} at ${seconds(started).toFixed(3)} s\n`)

const calls = { total: 0, byMethod: {} }
const httpLog = []

// Every XAPI call of the client, including the ones it makes on its own (event loop, task
// watching, task.destroy), goes through Xapi#_call: count them there.
function countCalls(xapi) {
  const call = xapi._call
  xapi._call = function (method, ...rest) {
    calls.total++
    calls.byMethod[method] = (calls.byMethod[method] ?? 0) + 1
    if (!process.env.PEER_TRACE) return call.call(this, method, ...rest)
    const t = seconds(started)
    const done = () => process.stderr.write(`call ${method} ${t.toFixed(3)} -> ${seconds(started).toFixed(3)}\n`)
    const promise = call.call(this, method, ...rest)
    promise.then(done, done)
    return promise
  }
}

// RPC and getResource requests go through undici: record method, origin, path and status, so the
// summary shows which transport was used and that the 302 really happened.
function logUndiciRequests(xapi) {
  const dispatcher = xapi._undiciDispatcher
  const dispatch = dispatcher.dispatch.bind(dispatcher)
  dispatcher.dispatch = (opts, handler) => {
    const entry = { client: 'undici', method: opts.method, origin: new URL(String(opts.origin)).origin, path: opts.path }
    if (opts.query !== undefined) entry.query_keys = Object.keys(opts.query).sort()
    const onHeaders = handler.onHeaders
    if (typeof onHeaders === 'function') {
      handler.onHeaders = function (statusCode, ...rest) {
        entry.status = statusCode
        return onHeaders.call(this, statusCode, ...rest)
      }
    }
    httpLog.push(entry)
    return dispatch(opts, handler)
  }
}

// putResource uses node's http(s).request (through http-request-plus): log those too.
function logNodeRequests() {
  for (const [name, mod] of [['http', http], ['https', https]]) {
    const request = mod.request
    mod.request = function (url, opts, ...rest) {
      const req = request.call(this, url, opts, ...rest)
      const u = url instanceof URL ? url : new URL(String(url))
      const entry = {
        client: name,
        method: opts?.method ?? 'GET',
        origin: u.origin,
        path: u.pathname,
        query_keys: [...u.searchParams.keys()].sort(),
        content_length: opts?.headers?.['content-length'],
      }
      req.on('response', res => {
        entry.status = res.statusCode
      })
      httpLog.push(entry)
      return req
    }
  }
}

function cacheCounts(xapi) {
  const counts = {}
  for (const object of Object.values(xapi.objects.all)) {
    counts[object.$type] = (counts[object.$type] ?? 0) + 1
  }
  return counts
}

// Disks of a VM as the client's cache sees them (VBD and VDI objects came from events).
function disksOf(vm) {
  return vm.$VBDs
    .filter(vbd => vbd !== undefined && vbd.type === 'Disk' && !vbd.empty)
    .map(vbd => ({ userdevice: vbd.userdevice, vdi: vbd.VDI, vdi_uuid: vbd.$VDI?.uuid, sr: vbd.$VDI?.$SR?.uuid }))
    .sort((a, b) => Number(a.userdevice) - Number(b.userdevice))
}

async function exportVm(xapi, vmRef, path) {
  const response = await xapi.getResource('/export/', { query: { ref: vmRef, use_compression: 'false' } })
  const t = process.hrtime.bigint()
  const bytes = await drainToFile(response.body, path)
  const streamSeconds = seconds(t)
  const taskResult = await response.task
  return { bytes, taskResult, streamSeconds }
}

// Read the body in flowing mode and write synchronously, so the stream never applies
// backpressure. undici 6.x (the line xen-api@4.7.6 depends on) crashes with an uncatchable
// `assert(!this.paused)` when the server closes the socket while its HTTP/1 parser is paused
// under backpressure (nodejs/undici#5360, fixed in later majors only) -- and xapi's /export
// always ends by closing the socket (HTTP/1.0, no Content-Length).
function drainToFile(body, path) {
  const fd = fs.openSync(path, 'w')
  let bytes = 0
  return new Promise((resolve, reject) => {
    body.on('data', chunk => {
      fs.writeSync(fd, chunk)
      bytes += chunk.length
    })
    body.on('end', () => resolve(bytes))
    body.on('error', reject)
  }).finally(() => fs.closeSync(fd))
}

async function importXva(xapi, path, srRef) {
  const { size } = fs.statSync(path)
  const body = fs.createReadStream(path)
  // xapi refuses chunked uploads; with a length the client sends a real Content-Length.
  // Without one (config.import_without_length) it sends its 1 PiB Content-Length hack and cuts
  // the socket once the body is sent: xapi must stop after the archive's last disk block.
  if (!config.import_without_length) body.length = size
  const vmRefs = await xapi.putResource(body, '/import/', { query: { sr_id: srRef } })
  return { bytes: size, vmRefs }
}

async function main() {
  const xapi = createClient({
    url: config.url,
    auth: { user: config.user, password: config.password },
    allowUnauthorized: Boolean(config.allow_unauthorized),
    transport: config.transport ?? 'auto',
    // short delays keep the test fast; the protocol is the same
    debounce: 50,
    eventPollDelay: 1000,
  })
  countCalls(xapi)
  logUndiciRequests(xapi)
  logNodeRequests()
  const time = {}

  let t = process.hrtime.bigint()
  phase('connect')
  await xapi.connect()
  time.connect = seconds(t)
  t = process.hrtime.bigint()
  phase('objects')
  await xapi.objectsFetched
  time.objects_fetched = seconds(t)
  const cacheAfterFetch = cacheCounts(xapi)

  const vm = xapi.getObjectByUuid(config.vm_uuid)
  const sourceDisks = disksOf(vm)
  if (sourceDisks.length === 0) throw new Error(`VM ${config.vm_uuid} has no disks in the cache`)
  const sr = config.sr_uuid ? xapi.getObjectByUuid(config.sr_uuid) : xapi.getObjectByRef(xapi.getObjectByRef(sourceDisks[0].vdi).SR)

  t = process.hrtime.bigint()
  phase('snapshot')
  const snapshotRef = await xapi.callAsync('VM.snapshot', vm.$ref, `xo-peer ${vm.name_label}`)
  // the snapshot must reach the cache through event.from
  const snapshot = await xapi.barrier(snapshotRef)
  time.snapshot = seconds(t)
  if (!snapshot.is_a_snapshot || snapshot.snapshot_of !== vm.$ref) throw new Error('snapshot record is wrong')

  t = process.hrtime.bigint()
  phase('export')
  const exported = await exportVm(xapi, snapshotRef, config.xva_path)
  time.export = seconds(t)

  t = process.hrtime.bigint()
  phase('import')
  const imported = await importXva(xapi, config.xva_path, sr.$ref)
  time.import = seconds(t)
  if (!Array.isArray(imported.vmRefs) || imported.vmRefs.length !== 1) {
    throw new Error(`import task result is not one VM ref: ${JSON.stringify(imported.vmRefs)}`)
  }
  phase('barrier new VM')
  const newVm = await xapi.barrier(imported.vmRefs[0])

  // clean up the snapshot (VM and its disks) and check the deletions reach the cache as events
  t = process.hrtime.bigint()
  phase('cleanup')
  const snapshotVdis = disksOf(snapshot).map(disk => disk.vdi)
  await xapi.callAsync('VM.destroy', snapshotRef)
  for (const vdi of snapshotVdis) await xapi.callAsync('VDI.destroy', vdi)
  await xapi.barrier()
  time.cleanup = seconds(t)
  const gone = [snapshotRef, ...snapshotVdis].filter(ref => xapi.getObjectByRef(ref, undefined) === undefined)

  const summary = {
    ok: true,
    transport: config.transport ?? 'auto',
    client: 'xen-api@' + JSON.parse(fs.readFileSync(new URL('./node_modules/xen-api/package.json', import.meta.url))).version,
    calls: { total: calls.total, by_method: calls.byMethod },
    http: httpLog,
    redirects: httpLog.filter(entry => entry.status === 302).length,
    bytes: { exported: exported.bytes, imported: imported.bytes, total: exported.bytes + imported.bytes },
    time_s: { ...time, export_stream: exported.streamSeconds, total: seconds(started) },
    export_task_result: exported.taskResult,
    vm: { ref: vm.$ref, uuid: vm.uuid, disks: sourceDisks },
    snapshot: { ref: snapshotRef, removed_from_cache: gone.length === snapshotVdis.length + 1 },
    sr: { ref: sr.$ref, uuid: sr.uuid },
    new_vm: { ref: newVm.$ref, uuid: newVm.uuid, name_label: newVm.name_label, is_a_template: newVm.is_a_template, disks: disksOf(newVm) },
    cache_after_fetch: cacheAfterFetch,
    cache_at_end: cacheCounts(xapi),
  }
  await xapi.disconnect()
  return summary
}

main().then(
  summary => {
    process.stdout.write(JSON.stringify(summary) + '\n')
    // the client's event loop keeps an event.from pending: do not wait for it
    process.exit(0)
  },
  error => {
    const report = {
      ok: false,
      error: { message: String(error?.message ?? error), code: error?.code, params: error?.params, call: error?.call, stack: error?.stack },
      calls: { total: calls.total, by_method: calls.byMethod },
      http: httpLog,
    }
    process.stdout.write(JSON.stringify(report) + '\n')
    process.exit(1)
  }
)
