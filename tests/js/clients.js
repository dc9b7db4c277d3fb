// The two most used Node.js Redis clients, ioredis and node-redis (v4), against real Strata
// processes: what an application does with them — commands, pipelines, transactions with
// WATCH, Lua through EVALSHA, SCAN streams, pub/sub, databases, binary and large values —
// and, on a cluster, their cluster clients on the cluster listener and plain clients on any
// node. Driven by tests/tests/js_clients.rs:
//
//   node clients.js single PORT
//   node clients.js cluster PLAIN1,PLAIN2,PLAIN3 CLUSTER1,CLUSTER2,CLUSTER3
//   node clients.js failover CLUSTER1,CLUSTER2,CLUSTER3 MS   (the test kills a member)
//
// Prints "ok", or "FAIL" and one line per difference; exits non-zero on an exception.
'use strict';
const Redis = require('ioredis');
const { createClient, createCluster, commandOptions } = require('redis');

const failures = [];
function same(name, got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) failures.push(`${name}: got ${g}, want ${w}`);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function scanAll(client, match, count) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const s = client.scanStream({ match, count });
    s.on('data', (k) => seen.push(...k));
    s.on('end', () => resolve(seen));
    s.on('error', reject);
  });
}

// ioredis on one connection's worth of a node's plain port; `prefix` keeps runs apart.
async function ioredisPlain(port, prefix, expectAll) {
  const r = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 2 });
  const k = (s) => `${prefix}${s}`;
  same('ioredis SET', await r.set(k('a'), '1'), 'OK');
  same('ioredis INCR', await r.incr(k('a')), 2);
  // The default pipeline: one error in the middle answers in its place.
  const p = await r.pipeline().set(k('b'), 'x').get(k('b')).incr(k('b')).get(k('a')).exec();
  same('ioredis pipeline replies', [p[0][1], p[1][1], p[3][1]], ['OK', 'x', '2']);
  same('ioredis pipeline error', /not an integer/.test(p[2][0] && p[2][0].message), true);
  const tag = `{${prefix}}`;
  same('ioredis MULTI', await r.multi().set(`${tag}c`, '3').incr(`${tag}c`).get(`${tag}c`).exec(),
    [[null, 'OK'], [null, 4], [null, '4']]);
  // WATCH: a change by another connection aborts EXEC (null).
  const other = new Redis({ port, host: '127.0.0.1' });
  await r.watch(`${tag}w`);
  await other.set(`${tag}w`, 'theirs');
  same('ioredis WATCH abort', await r.multi().set(`${tag}w`, 'mine').exec(), null);
  same('ioredis WATCHed value', await r.get(`${tag}w`), 'theirs');
  // Lua through defineCommand: EVALSHA, NOSCRIPT, then EVAL, then EVALSHA again.
  r.defineCommand('addTwo', { numberOfKeys: 1, lua: "return redis.call('INCRBY', KEYS[1], 2)" });
  same('ioredis Lua', [await r.addTwo(k('l')), await r.addTwo(k('l'))], [2, 4]);
  // Expiry.
  same('ioredis SET PX', await r.set(k('e'), 'v', 'PX', 5000), 'OK');
  const pttl = await r.pttl(k('e'));
  same('ioredis PTTL in range', pttl > 0 && pttl <= 5000, true);
  same('ioredis GETEX PERSIST', await r.getex(k('e'), 'PERSIST'), 'v');
  same('ioredis TTL after PERSIST', await r.ttl(k('e')), -1);
  // Binary and large values.
  const bin = Buffer.from([0, 255, 13, 10, 36, 42, 1]);
  await r.set(k('bin'), bin);
  same('ioredis binary', (await r.getBuffer(k('bin'))).equals(bin), true);
  const big = 'x'.repeat(5 * 1024 * 1024);
  await r.set(k('big'), big);
  same('ioredis 5 MiB value', (await r.get(k('big'))).length, big.length);
  await r.del(k('big'));
  // Bits.
  same('ioredis BITFIELD', await r.bitfield(k('bf'), 'INCRBY', 'u8', 0, 200, 'INCRBY', 'u8', 0, 100), [200, 44]);
  // SCAN stream: every key once, whichever node holds it (a cluster's plain port lists the
  // whole cluster).
  const n = 300;
  const pipe = r.pipeline();
  for (let i = 0; i < n; i++) pipe.set(k(`s${i}`), String(i));
  await pipe.exec();
  const seen = await scanAll(r, `${prefix}s*`, 37);
  same('ioredis scanStream keys', new Set(seen).size, n);
  same('ioredis scanStream repeats', seen.length, n);
  if (expectAll) {
    same('ioredis DBSIZE counts them', (await r.dbsize()) >= n, true);
  }
  // Pub/sub: a message and a pattern message.
  const sub = new Redis({ port, host: '127.0.0.1' });
  const msg = new Promise((res) => sub.on('message', (ch, m) => res([ch, m])));
  const pmsg = new Promise((res) => sub.on('pmessage', (pat, ch, m) => res([pat, ch, m])));
  await sub.subscribe(k('chan'));
  await sub.psubscribe(`${prefix}pat*`);
  same('ioredis PUBLISH receivers', await r.publish(k('chan'), 'hello'), 1);
  same('ioredis message', await msg, [k('chan'), 'hello']);
  await r.publish(k('pat1'), 'yo');
  same('ioredis pmessage', await pmsg, [`${prefix}pat*`, k('pat1'), 'yo']);
  sub.disconnect();
  // Another database (a non-cluster client's db option sends SELECT).
  const r5 = new Redis({ port, host: '127.0.0.1', db: 5 });
  await r5.set(k('in5'), 'y');
  same('ioredis db 5', await r5.get(k('in5')), 'y');
  same('ioredis db 0 lacks it', await r.get(k('in5')), null);
  r5.disconnect();
  same('ioredis CLIENT SETNAME', await r.client('SETNAME', 'js-client'), 'OK');
  same('ioredis CLIENT GETNAME', await r.client('GETNAME'), 'js-client');
  same('ioredis INFO', (await r.info('server')).includes('redis_version:'), true);
  other.disconnect();
  r.disconnect();
}

// node-redis v4 on a node's plain port.
async function nodeRedisPlain(port, prefix) {
  const c = createClient({ socket: { port, host: '127.0.0.1' } });
  c.on('error', (e) => failures.push(`node-redis error event: ${e.message}`));
  await c.connect();
  const k = (s) => `${prefix}${s}`;
  for (let i = 0; i < 200; i++) await c.set(k(`n${i}`), String(i));
  // scanIterator keeps the cursor in a JavaScript number (node-redis 4: `Number(cursor)`).
  const seen = [];
  for await (const key of c.scanIterator({ MATCH: `${prefix}n*`, COUNT: 33 })) seen.push(key);
  same('node-redis scanIterator keys', new Set(seen).size, 200);
  same('node-redis scanIterator repeats', seen.length, 200);
  const tag = `{${prefix}}`;
  same('node-redis MULTI', await c.multi().set(`${tag}m`, '1').incr(`${tag}m`).get(`${tag}m`).exec(), ['OK', 2, '2']);
  same('node-redis INCRBYFLOAT', await c.incrByFloat(k('f'), 1.5), '1.5');
  const c2 = c.duplicate();
  await c2.connect();
  await c.watch(`${tag}w`);
  await c2.set(`${tag}w`, 'x');
  let aborted = false;
  try {
    await c.multi().set(`${tag}w`, 'y').exec();
  } catch (e) {
    aborted = e.constructor.name === 'WatchError';
  }
  same('node-redis WATCH abort', aborted, true);
  same('node-redis EVAL', await c.eval("return redis.call('SET', KEYS[1], ARGV[1])", { keys: [k('ek')], arguments: ['ev'] }), 'OK');
  same('node-redis GET as a buffer', (await c.get(commandOptions({ returnBuffers: true }), k('ek'))).toString(), 'ev');
  same('node-redis EXISTS', await c.exists([k('n1'), k('n2'), k('none')]), 2);
  same('node-redis SET NX PX', await c.set(k('lock'), '1', { NX: true, PX: 1000 }), 'OK');
  same('node-redis SET NX PX held', await c.set(k('lock'), '1', { NX: true, PX: 1000 }), null);
  same('node-redis GETDEL', await c.getDel(k('ek')), 'ev');
  same('node-redis EXPIRETIME', (await c.expireTime(k('lock'))) > 0, true);
  const sub = c.duplicate();
  await sub.connect();
  const got = new Promise((res) => sub.subscribe(k('ch'), (m) => res(m)));
  await sleep(50);
  same('node-redis PUBLISH receivers', await c.publish(k('ch'), 'hi'), 1);
  same('node-redis message', await got, 'hi');
  await sub.quit();
  await c2.quit();
  await c.quit();
}

// Each client family's cluster client on the cluster listener: routing, same-slot
// pipelines and transactions, CROSSSLOT, SCAN of every master, Lua, pub/sub.
async function clusterClients(ports) {
  const nodes = ports.map((port) => ({ host: '127.0.0.1', port }));
  const cl = new Redis.Cluster(nodes, { redisOptions: { maxRetriesPerRequest: 2 } });
  for (let i = 0; i < 200; i++) await cl.set(`ck${i}`, String(i));
  let good = 0;
  for (let i = 0; i < 200; i++) if ((await cl.get(`ck${i}`)) === String(i)) good++;
  same('ioredis Cluster reads its writes', good, 200);
  same('ioredis Cluster pipeline in one slot',
    await cl.pipeline().set('{u}a', '1').incr('{u}a').get('{u}a').exec(), [[null, 'OK'], [null, 2], [null, '2']]);
  same('ioredis Cluster MULTI', await cl.multi().set('{u}b', '1').incr('{u}b').exec(), [[null, 'OK'], [null, 2]]);
  let crossslot = '';
  try {
    await cl.mset('x1', '1', 'x2', '2');
  } catch (e) {
    crossslot = e.message;
  }
  same('ioredis Cluster MSET across slots is CROSSSLOT', /^CROSSSLOT/.test(crossslot), true);
  const keys = new Set();
  for (const node of cl.nodes('master')) (await scanAll(node, 'ck*', 40)).forEach((x) => keys.add(x));
  same('ioredis Cluster SCAN of every master', keys.size, 200);
  cl.defineCommand('addTwo', { numberOfKeys: 1, lua: "return redis.call('INCRBY', KEYS[1], 2)" });
  same('ioredis Cluster Lua', await cl.addTwo('lk'), 2);
  const sub = new Redis.Cluster([nodes[0]]);
  const got = new Promise((res) => sub.on('message', (ch, m) => res(m)));
  await sub.subscribe('cch');
  await sleep(100);
  await cl.publish('cch', 'hey');
  same('ioredis Cluster pub/sub', await got, 'hey');
  sub.disconnect();
  cl.disconnect();

  const nc = createCluster({ rootNodes: ports.map((p) => ({ url: `redis://127.0.0.1:${p}` })) });
  nc.on('error', (e) => failures.push(`node-redis cluster error event: ${e.message}`));
  await nc.connect();
  for (let i = 0; i < 100; i++) await nc.set(`nk${i}`, String(i));
  good = 0;
  for (let i = 0; i < 100; i++) if ((await nc.get(`nk${i}`)) === String(i)) good++;
  same('node-redis cluster reads its writes', good, 100);
  same('node-redis cluster MULTI', await nc.multi().set('{v}a', '5').incr('{v}a').exec(), ['OK', 6]);
  const nkeys = new Set();
  for (const m of nc.masters) {
    const client = await nc.nodeClient(m);
    for await (const key of client.scanIterator({ MATCH: 'nk*', COUNT: 25 })) nkeys.add(key);
  }
  same('node-redis cluster SCAN of every master', nkeys.size, 100);
  await nc.quit();
}

// A check-and-set loop (WATCH, GET, MULTI, SET, EXEC) from ioredis clients on every plain
// port at once: no increment is lost.
async function checkAndSet(ports, key, perClient) {
  const clients = ports.map((port) => new Redis({ port, host: '127.0.0.1' }));
  await clients[0].del(key);
  await Promise.all(clients.map(async (r) => {
    for (let i = 0; i < perClient; i++) {
      for (;;) {
        await r.watch(key);
        const v = Number((await r.get(key)) || 0);
        if ((await r.multi().set(key, String(v + 1)).exec()) !== null) break;
      }
    }
  }));
  // Every node reads the final count within the coherence bound (docs/semantics.md G2: a
  // node's copy may lag the last EXEC by the invalidation's flight, 1.5 s at worst).
  const want = String(perClient * ports.length);
  for (const r of clients) {
    let got = await r.get(key);
    for (let waited = 0; got !== want && waited < 2000; waited += 20) {
      await sleep(20);
      got = await r.get(key);
    }
    same(`check-and-set through ${r.options.port}`, got, want);
  }
  clients.forEach((r) => r.disconnect());
}

// ioredis's `Redis.Cluster` writing for `ms` while the test kills a member (kill -9): every
// acknowledged write reads back afterwards, and errors (redirections to the dead member until
// failure detection moves its slots) end at least 3 s before the run does.
async function failover(ports, ms) {
  const cl = new Redis.Cluster(ports.map((port) => ({ host: '127.0.0.1', port })), {
    redisOptions: { maxRetriesPerRequest: 3 },
    clusterRetryStrategy: (times) => Math.min(100 * times, 1000),
  });
  cl.on('error', () => {});
  const acked = new Map();
  let errors = 0;
  let lastErrorAt = -1;
  let lastError = '';
  const start = Date.now();
  for (let i = 0; Date.now() - start < ms; i++) {
    const key = `fo${i % 500}`;
    try {
      await cl.set(key, String(i));
      acked.set(key, String(i));
    } catch (e) {
      errors += 1;
      lastErrorAt = Date.now() - start;
      lastError = e.message;
    }
  }
  let lost = 0;
  for (const [key, value] of acked) {
    let got;
    try {
      got = await cl.get(key);
    } catch (e) {
      got = `error ${e.message}`;
    }
    if (got !== value) lost += 1;
  }
  same('failover: acknowledged writes lost', lost, 0);
  same('failover: writes went on', acked.size, 500);
  if (lastErrorAt > ms - 3000) {
    failures.push(`failover: ${errors} errors, the last at ${lastErrorAt} ms of ${ms}: ${lastError}`);
  }
  console.error(`failover: ${errors} errors, the last at ${lastErrorAt} ms: ${lastError}`);
  cl.disconnect();
}

async function main() {
  const [mode, a, b] = process.argv.slice(2);
  if (mode === 'single') {
    const port = Number(a);
    await ioredisPlain(port, 'io:', true);
    await nodeRedisPlain(port, 'nr:');
    await checkAndSet([port, port, port], '{cas}single', 50);
  } else if (mode === 'cluster') {
    const plain = a.split(',').map(Number);
    const cluster = b.split(',').map(Number);
    // Plain clients on each node: keys written through one are listed through another.
    await ioredisPlain(plain[0], 'io:', true);
    const r = new Redis({ port: plain[1], host: '127.0.0.1' });
    same('a plain port lists the keys written through another',
      new Set(await scanAll(r, 'io:s*', 50)).size, 300);
    r.disconnect();
    await nodeRedisPlain(plain[2], 'nr:');
    await clusterClients(cluster);
    await checkAndSet(plain, '{cas}cluster', 30);
  } else if (mode === 'failover') {
    await failover(a.split(',').map(Number), Number(b));
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  console.log(failures.length ? `FAIL\n${failures.join('\n')}` : 'ok');
}

main().catch((e) => {
  console.log('ERROR', e);
  process.exit(1);
});
