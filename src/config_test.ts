import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "./config.ts";

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
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.etcd.endpoints));
});

Deno.test("parseConfig() reads the shipped config/platform/config.yaml", async () => {
  const text = await Deno.readTextFile(new URL("../config/platform/config.yaml", import.meta.url));
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
    'name: "x"\n  metadata: [1, 2]',
    "notification-server.metadata: expected a mapping, found a list",
  ],
  [
    'name: "notification-server"',
    "name: 42",
    'notification-server.name: expected a string, found number "42"',
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
