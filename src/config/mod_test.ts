import assert from "node:assert/strict";
import { availableCpus } from "./cpus.ts";
import { ConfigError, loadConfig, parseConfig } from "./mod.ts";

const FILE = "config/platform/config.yaml";
const noEnv = () => undefined;

const BASE = `notification-server:
  addr: "0.0.0.0:8080"
  name: "notification-server"
etcd:
  endpoints: ["localhost:2379"]
  dial-timeout: 5s
`;

function errorOf(yaml: string, env: (n: string) => string | undefined = noEnv): string {
  try {
    parseConfig(yaml, FILE, { env });
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
    assert.ok(!error.message.includes("\n"), `one line: ${error.message}`);
    return error.message;
  }
  throw new Error("expected a ConfigError");
}

Deno.test("parseConfig() reads the original design's file with defaults for the rest", () => {
  const config = parseConfig(BASE, FILE, { env: noEnv });
  assert.deepEqual(config.server.addr, { host: "0.0.0.0", port: 8080 });
  assert.equal(config.server.name, "notification-server");
  assert.deepEqual(config.etcd.endpoints, ["localhost:2379"]);
  assert.equal(config.etcd.dialTimeoutMs, 5000);
  assert.equal(config.etcd.leaseTtlSeconds, 10);
  assert.equal(config.etcd.prefix, "/services");
  assert.equal(config.etcd.layout, "instance");
  assert.equal(config.etcd.startupTimeoutMs, 30_000);
  assert.equal(config.server.shutdownTimeoutMs, 10_000);
  assert.equal(config.server.workers, availableCpus(), "workers: auto by default");
  const withWorkers = (value: string) =>
    parseConfig(BASE.replace(/(name: "notification-server")/, `$1\n  workers: ${value}`), FILE, {
      env: noEnv,
    })
      .server.workers;
  assert.equal(withWorkers("3"), 3);
  assert.equal(withWorkers("auto"), availableCpus());
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.etcd.endpoints));
});

Deno.test("parseConfig() reads a broker section with defaults for what it leaves out", () => {
  const none = parseConfig(BASE, FILE, { env: noEnv });
  assert.equal(none.server.broker, undefined);
  const config = parseConfig(
    BASE.replace(
      'name: "notification-server"',
      'name: "x"\n  broker: { nats: { servers: ["n1:4222", "nats://n2:4222"], history-ttl: 168h } }',
    ),
    FILE,
    { env: noEnv },
  );
  assert.deepEqual(config.server.broker?.nats, {
    servers: ["n1:4222", "nats://n2:4222"],
    user: undefined,
    password: undefined,
    token: undefined,
    nkeySeedFile: undefined,
    credsFile: undefined,
    tls: undefined,
    stream: "NOTIFICATIONS",
    subjectPrefix: "notifications",
    historySize: 100,
    historyTtlMs: 168 * 3_600_000,
    replicas: 1,
    publishTimeoutMs: 2_000,
    duplicateWindowMs: 120_000,
  });
  const withBroker = (nats: string) =>
    BASE.replace(
      'name: "notification-server"',
      `name: "x"\n  broker: { nats: { servers: ["n1:4222"], ${nats} } }`,
    );
  assert.match(
    errorOf(withBroker("history-ttl: 1m, duplicate-window: 5m")),
    /broker\.nats\.duplicate-window: is longer than history-ttl/,
  );
  assert.equal(
    parseConfig(withBroker("duplicate-window: 10s"), FILE, { env: noEnv }).server.broker?.nats
      .duplicateWindowMs,
    10_000,
  );
});

Deno.test("parseConfig() reads the shipped config/platform/config.yaml", async () => {
  const text = await Deno.readTextFile(new URL("../../config/platform/config.yaml", import.meta.url));
  const config = parseConfig(text, FILE, { env: noEnv });
  assert.equal(config.server.metadata.version, "1.0.0");
});

Deno.test("parseConfig() applies environment overrides and names them in errors", () => {
  const env = (name: string) =>
    ({
      ETCD_ENDPOINTS: "10.0.0.1:2379, 10.0.0.2:2379",
      NOTIFICATION_ADDR: "127.0.0.1:9000",
      ETCD_USERNAME: "u",
      ETCD_PASSWORD: "p",
    })[name];
  const config = parseConfig(BASE, FILE, { env });
  assert.deepEqual(config.etcd.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
  assert.deepEqual(config.server.addr, { host: "127.0.0.1", port: 9000 });
  assert.equal(config.etcd.username, "u");
  assert.equal(config.etcd.password, "p");
  assert.equal(
    errorOf(BASE, (n) => n === "ETCD_ENDPOINTS" ? "nohost" : undefined),
    `${FILE}: etcd.endpoints (from ETCD_ENDPOINTS): "nohost" is not an endpoint like localhost:2379`,
  );
});

const CASES: [string, string, string][] = [
  ["dial-timeout: 5s", 'dial-timeout: "soon"', 'etcd.dial-timeout: "soon" is not a duration like 5s'],
  ["dial-timeout: 5s", "dial-timeout: 0s", 'etcd.dial-timeout: "0s" must be more than 0'],
  [
    'addr: "0.0.0.0:8080"',
    'addr: "8080"',
    'notification-server.addr: "8080" is not an address like 0.0.0.0:8080',
  ],
  [
    'addr: "0.0.0.0:8080"',
    'addr: "0.0.0.0:99999"',
    'notification-server.addr: "0.0.0.0:99999" has port 99999, above 65535',
  ],
  ['name: "notification-server"', 'name: "a/b"', 'notification-server.name: "a/b" is not a service name'],
  ['endpoints: ["localhost:2379"]', "endpoints: []", "etcd.endpoints: expected at least one endpoint"],
  ['endpoints: ["localhost:2379"]', 'endpoints: "localhost:2379"', "etcd.endpoints: expected a list"],
  [
    "dial-timeout: 5s",
    "dial-timeout: 5s\n  lease-ttl: 1500ms",
    'etcd.lease-ttl: "1500ms" is not a whole number of seconds',
  ],
  [
    "dial-timeout: 5s",
    'dial-timeout: 5s\n  layout: "flat"',
    'etcd.layout: "flat" is not one of "instance", "service"',
  ],
  ["dial-timeout: 5s", 'dial-timeout: 5s\n  prefix: "services/"', 'etcd.prefix: "services/" must start with'],
  [
    "dial-timeout: 5s",
    "dial-timeout: 5s\n  dial_timeout: 5s",
    "etcd.dial_timeout: unknown key (expected one of",
  ],
  ["dial-timeout: 5s", 'dial-timeout: 5s\n  username: "root"', "etcd.password: expected a password"],
  [
    "dial-timeout: 5s",
    'dial-timeout: 5s\n  tls: { ca-file: "/nonexistent/ca.pem" }',
    'etcd.tls.ca-file: "/nonexistent/ca.pem" cannot be read',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  advertise-addr: "0.0.0.0:8080"',
    'notification-server.advertise-addr: "0.0.0.0:8080" is not an address clients can dial',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  instance-id: "a/b"',
    'notification-server.instance-id: "a/b" is not an instance id',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  max-subscribers: -1',
    'notification-server.max-subscribers: "-1" is not a whole number',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  workers: 0',
    'notification-server.workers: "0" is not auto or a whole number from 1 to 256',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  workers: "many"',
    'notification-server.workers: "many" is not auto or a whole number',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  metadata: [1, 2]',
    "notification-server.metadata: expected a mapping, found a list",
  ],
  [
    'name: "notification-server"',
    "name: 42",
    'notification-server.name: expected a string, found number "42"',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  auth: { jwt: { issuer: "me" } }',
    "notification-server.auth.jwt: expected one of hmac-secret-file, public-key-file or jwks-file, found none",
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  auth: { jwt: { hmac-secret-file: "/nonexistent/jwt.key" } }',
    'notification-server.auth.jwt.hmac-secret-file: "/nonexistent/jwt.key" cannot be read',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  auth: { jwt: { secret: "x" } }',
    "notification-server.auth.jwt.secret: unknown key (expected one of",
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  broker: { nats: { servers: [] } }',
    'notification-server.broker.nats.servers: expected at least one server like "localhost:4222"',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  broker: { nats: { servers: ["a b"] } }',
    'notification-server.broker.nats.servers: "a b" is not a server like localhost:4222',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  broker: { nats: { servers: ["n:4222"], replicas: 2 } }',
    "notification-server.broker.nats.replicas: 2 is not 1, 3 or 5",
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  broker: { nats: { servers: ["n:4222"], stream: "a.b" } }',
    'notification-server.broker.nats.stream: "a.b" is not a stream name',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  broker: { nats: { servers: ["n:4222"], subject-prefix: "a.>" } }',
    'notification-server.broker.nats.subject-prefix: "a.>" is not a subject prefix',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  broker: { nats: { servers: ["n:4222"], user: "u" } }',
    "notification-server.broker.nats.password: missing (user and password go together)",
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  broker: { nats: { servers: ["n:4222"], user: "u", password: "p", token: "t" } }',
    "notification-server.broker.nats: more than one of user/password, token, nkey-seed-file, creds-file",
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  broker: { nats: { servers: ["n:4222"], history-ttl: "soon" } }',
    'notification-server.broker.nats.history-ttl: "soon" is not a duration like 5s',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  broker: { nats: { servers: ["n:4222"], creds-file: "/nonexistent/u.creds" } }',
    'notification-server.broker.nats.creds-file: "/nonexistent/u.creds" cannot be read',
  ],
  [
    'name: "notification-server"',
    'name: "x"\n  broker: { kafka: {} }',
    "notification-server.broker.kafka: unknown key (expected one of: nats)",
  ],
];

for (const [from, to, expected] of CASES) {
  Deno.test(`parseConfig() rejects ${to.split("\n").pop()!.trim()} with a one-line error`, () => {
    assert.ok(BASE.includes(from));
    const message = errorOf(BASE.replace(from, to));
    assert.ok(message.startsWith(`${FILE}: `), message);
    assert.ok(message.includes(expected), `${message}\n  should include\n${expected}`);
  });
}

Deno.test("parseConfig() reports missing sections, unknown top-level keys and YAML syntax errors", () => {
  assert.equal(errorOf("etcd:\n  endpoints: [a:1]\n"), `${FILE}: notification-server: missing section`);
  assert.match(
    errorOf(`${BASE}extra: 1\n`),
    /: extra: unknown key \(expected one of: notification-server, etcd\)$/,
  );
  assert.match(
    errorOf("notification-server: [\n"),
    /^config\/platform\/config\.yaml: line \d+: invalid YAML: /,
  );
  assert.match(
    errorOf(BASE.replace('addr: "0.0.0.0:8080"', "")),
    /notification-server\.addr: missing \(required\)$/,
  );
});

Deno.test("parseConfig() reads the password from password-file without its trailing newline", async () => {
  const file = await Deno.makeTempFile();
  await Deno.writeTextFile(file, "s3cret\n");
  const config = parseConfig(
    BASE.replace("dial-timeout: 5s", `dial-timeout: 5s\n  username: "u"\n  password-file: "${file}"`),
    FILE,
    {
      env: noEnv,
    },
  );
  assert.equal(config.etcd.password, "s3cret");
  await Deno.remove(file);
});

Deno.test("parseConfig() refuses durations past 24h: timers would overflow and leases outlive anyone", () => {
  for (
    const [field, line] of [
      ["etcd.lease-ttl", "  lease-ttl: 1000h"],
      ["etcd.dial-timeout", "  dial-timeout: 25h"],
      ["etcd.startup-timeout", "  startup-timeout: 1000h"],
    ] as const
  ) {
    const yaml = BASE.replace("  dial-timeout: 5s\n", "") + `${line}\n`;
    assert.match(errorOf(yaml), new RegExp(`^${FILE}: ${field}: ".*" is above the maximum of 24h$`));
  }
  for (const key of ["shutdown-timeout", "drain-delay"]) {
    const yaml = BASE.replace(
      `  name: "notification-server"\n`,
      `  name: "notification-server"\n  ${key}: 1000h\n`,
    );
    assert.match(
      errorOf(yaml),
      new RegExp(`notification-server.${key}: "1000h" is above the maximum of 24h`),
    );
  }
  assert.equal(parseConfig(BASE + "  lease-ttl: 24h\n", FILE, { env: noEnv }).etcd.leaseTtlSeconds, 86_400);
});

Deno.test("parseConfig() keeps metadata as written and bounds it", () => {
  const yaml = BASE.replace(
    `  name: "notification-server"\n`,
    `  name: "notification-server"\n  metadata: { version: 1.10, mask: 0x1F, big: 12345678901234567890, on: true, s: "x" }\n`,
  );
  assert.deepEqual(parseConfig(yaml, FILE, { env: noEnv }).server.metadata, {
    version: "1.10",
    mask: "0x1F",
    big: "12345678901234567890",
    on: "true",
    s: "x",
  });
  const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"]));
  const tooMany = BASE.replace(
    `  name: "notification-server"\n`,
    `  name: "notification-server"\n  metadata: ${JSON.stringify(many)}\n`,
  );
  assert.equal(errorOf(tooMany), `${FILE}: notification-server.metadata: 65 keys; at most 64`);
  const long = BASE.replace(
    `  name: "notification-server"\n`,
    `  name: "notification-server"\n  metadata: { v: "${"x".repeat(513)}" }\n`,
  );
  assert.equal(
    errorOf(long),
    `${FILE}: notification-server.metadata.v: value of 513 characters; at most 512`,
  );
});

Deno.test("parseConfig() turns a YAML alias bomb into a one-line config error", () => {
  const bomb = `a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
`;
  assert.match(errorOf(BASE + bomb), new RegExp(`^${FILE}: invalid YAML: .*alias`, "i"));
});

Deno.test("parseConfig() never takes a wildcard for an address to advertise, in any spelling", () => {
  for (
    const addr of ["0.0.0.0:80", "0:80", "[::]:80", "[0:0:0:0:0:0:0:0]:80", "[::ffff:0.0.0.0]:80", ":80"]
  ) {
    const yaml = BASE.replace(
      `  name: "notification-server"\n`,
      `  name: "notification-server"\n  advertise-addr: "${addr}"\n`,
    );
    assert.match(errorOf(yaml), /advertise-addr: .* is not an address clients can dial/, addr);
  }
  const ok = BASE.replace(
    `  name: "notification-server"\n`,
    `  name: "notification-server"\n  advertise-addr: "[::1]:80"\n`,
  );
  assert.deepEqual(parseConfig(ok, FILE, { env: noEnv }).server.advertiseAddr, { host: "::1", port: 80 });
});

Deno.test("parseConfig() refuses ETCD_ENDPOINTS set but empty", () => {
  assert.equal(
    errorOf(BASE, (n) => n === "ETCD_ENDPOINTS" ? "" : undefined),
    `${FILE}: etcd.endpoints (from ETCD_ENDPOINTS): set but empty: unset it or give host:port[,host:port]`,
  );
});

Deno.test("loadConfig() refuses a FIFO and an endless file with one line, without hanging", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const fifo = `${dir}/config.yaml`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.ok(made.success);
    await assert.rejects(loadConfig(fifo), (e: Error) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.message, `${fifo}: not a regular file (a config file must be a plain YAML file)`);
      return true;
    });
    const huge = `${dir}/huge.yaml`;
    await Deno.writeFile(huge, new Uint8Array(2 * 1024 * 1024).fill(0x61));
    await assert.rejects(loadConfig(huge), /huge.yaml: larger than 1024 KiB; is this the config file\?/);
    await assert.rejects(loadConfig("/dev/zero"), /\/dev\/zero: not a regular file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseConfig() asks the machine only through ConfigIO: files, secrets and CPUs", () => {
  const asked: string[] = [];
  const io = {
    fileProblem: (
      path: string,
    ) => (asked.push(`file ${path}`), path === "/missing" ? `"${path}" is gone` : undefined),
    readText: (path: string) => (asked.push(`read ${path}`), "s3cret\n"),
    cpus: () => (asked.push("cpus"), 7),
  };
  const yaml = BASE.replace(/(name: "notification-server")/, "$1\n  workers: auto") +
    `  password-file: "/etc/pw"\n  username: "svc"\n`;
  const config = parseConfig(yaml, FILE, { env: noEnv, io });
  assert.equal(config.server.workers, 7);
  assert.equal(config.etcd.password, "s3cret");
  assert.deepEqual(asked, ["cpus", "file /etc/pw", "read /etc/pw"]);
  assert.throws(
    () => parseConfig(yaml.replace("/etc/pw", "/missing"), FILE, { env: noEnv, io }),
    (error: Error) =>
      error instanceof ConfigError && error.message === `${FILE}: etcd.password-file: "/missing" is gone`,
  );
});

Deno.test("auth keys are checked at start: one source, an HMAC secret of 32 bytes or more, a real key", async () => {
  const { exportSPKI, generateKeyPair } = await import("jose");
  const pem = await exportSPKI((await generateKeyPair("ES256", { extractable: true })).publicKey);
  const files: Record<string, string> = {
    "/k/short": "x\n",
    "/k/empty": "\n",
    "/k/good": `${"k".repeat(32)}\n`,
    "/k/pem": pem,
    "/k/notpem": "hello",
    "/k/jwks-empty": '{"keys": []}',
    "/k/jwks-bad": "{",
  };
  const io = { fileProblem: () => undefined, readText: (path: string) => files[path], cpus: () => 1 };
  const parse = (jwt: string) =>
    parseConfig(BASE.replace(/(name: "notification-server")/, `$1\n  auth: { jwt: { ${jwt} } }`), FILE, {
      env: noEnv,
      io,
    });
  const refused = (jwt: string, expected: string) =>
    assert.throws(() => parse(jwt), (error: Error) => {
      assert.ok(error instanceof ConfigError && !error.message.includes("\n"), error.message);
      assert.ok(error.message.includes(expected), `${error.message}\n  should include\n${expected}`);
      return true;
    });
  refused(
    'hmac-secret-file: "/k/short"',
    'notification-server.auth.jwt.hmac-secret-file: "/k/short" holds 1 bytes; an HMAC secret needs at least 32',
  );
  refused(
    'hmac-secret-file: "/k/empty"',
    'notification-server.auth.jwt.hmac-secret-file: "/k/empty" is empty',
  );
  refused(
    'hmac-secret-file: "/k/good", public-key-file: "/k/pem"',
    "notification-server.auth.jwt: expected one of hmac-secret-file, public-key-file or jwks-file, found hmac-secret-file and public-key-file",
  );
  refused('public-key-file: "/k/notpem"', '"/k/notpem" is not a PEM public key');
  refused('jwks-file: "/k/jwks-empty"', '"/k/jwks-empty" holds no keys');
  refused('jwks-file: "/k/jwks-bad"', '"/k/jwks-bad" is not JSON');
  assert.equal(parse('hmac-secret-file: "/k/good"').server.auth?.jwt.hmacSecretFile, "/k/good");
  assert.equal(parse('public-key-file: "/k/pem"').server.auth?.jwt.publicKeyFile, "/k/pem");
});

Deno.test("parseConfig() reads the http section: off when absent, defaults, and one line for each problem", () => {
  const withHttp = (http: string) =>
    BASE.replace('name: "notification-server"', `name: "x"\n  http: ${http}`);
  assert.equal(parseConfig(BASE, FILE, { env: noEnv }).server.http, undefined);
  const config = parseConfig(
    withHttp('{ addr: ":8081", cors: { allowed-origins: ["https://app.example.com"] }, sse-retry: 5s }'),
    FILE,
    { env: noEnv },
  );
  assert.deepEqual(config.server.http, {
    addr: { host: "", port: 8081 },
    allowedOrigins: ["https://app.example.com"],
    page: true,
    maxBodyBytes: 1024 * 1024,
    sseKeepaliveMs: 15_000,
    sseRetryMs: 5_000,
  });
  const cases: [string, RegExp][] = [
    ["{ cors: {} }", /notification-server\.http\.addr: /],
    [
      '{ addr: ":8080" }',
      /notification-server\.http\.addr: ":8080" is the gRPC port; HTTP needs a port of its own/,
    ],
    [
      '{ addr: ":8081", cors: { allowed-origins: ["app.example.com"] } }',
      /http\.cors\.allowed-origins: "app\.example\.com" is not an origin/,
    ],
    ['{ addr: ":8081", cors: { allowed-origins: ["https://a.com/path"] } }', /is not an origin/],
    ['{ addr: ":8081", page: "yes" }', /notification-server\.http\.page: expected true or false/],
    ['{ addr: ":8081", colour: 1 }', /notification-server\.http.*colour/],
    ['{ addr: ":8081", sse-retry: 0s }', /notification-server\.http\.sse-retry/],
  ];
  for (const [http, expected] of cases) assert.match(errorOf(withHttp(http)), expected, http);
});
