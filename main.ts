/**
 * Entry point: argument parsing and wiring only.
 *
 *   main.ts [--config PATH]                      run the service
 *   main.ts discover <name> [--watch] [--json]   list (and follow) instances
 *   main.ts send --to R --title T --body B       send a notification through etcd:///<name>
 *   main.ts subscribe --to R [--json]            print R's notifications, across instance restarts
 *   main.ts token --sub S [--scope X] [--ttl 1h]  print an HS256 token signed with the auth secret
 *
 * Exit codes: 0 done, 1 runtime failure (etcd, bind, conflict), 2 bad configuration or usage.
 */
import * as grpc from "@grpc/grpc-js";
import { parseArgs } from "node:util";
import { runServer } from "./src/app.ts";
import { runCommand, UsageError } from "./src/cli/mod.ts";
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfig } from "./src/config/mod.ts";
import { consoleLogger } from "./src/_util/logger.ts";

const USAGE = `usage: notification-server [--config PATH]
       notification-server discover <name> [--watch] [--json] [--config PATH]
       notification-server send --to RECIPIENT [--title T] [--body B] [--data k=v ...] [--name NAME] [--token JWT] [--config PATH]
       notification-server subscribe --to RECIPIENT [--json] [--name NAME] [--token JWT] [--config PATH]
       notification-server token --sub SUBJECT [--scope SCOPES] [--ttl 1h] [--config PATH]
  --token defaults to NOTIFICATION_TOKEN; token signs with notification-server.auth.jwt.hmac-secret-file`;

async function main(args: string[]): Promise<number> {
  let log = consoleLogger();
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        config: { type: "string", default: DEFAULT_CONFIG_PATH },
        watch: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        to: { type: "string" },
        title: { type: "string", default: "" },
        body: { type: "string", default: "" },
        data: { type: "string", multiple: true, default: [] },
        name: { type: "string" },
        token: { type: "string" },
        sub: { type: "string" },
        scope: { type: "string" },
        ttl: { type: "string", default: "1h" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (parsed.values.help) {
    console.log(USAGE);
    return 0;
  }
  const [command, ...rest] = parsed.positionals;
  try {
    const config = await loadConfig(parsed.values.config);
    if (command === undefined) {
      // From here on every line, a start-up error too, is in the format the config asks for.
      log = consoleLogger({ format: config.server.logFormat, level: config.server.logLevel });
      return await runServer(config, log);
    }
    return await runCommand(command, rest, parsed.values, config);
  } catch (error) {
    if (error instanceof ConfigError) {
      consoleLogger({ format: error.logFormat }).error(error.message);
      return 2;
    }
    if (error instanceof UsageError) {
      console.error(`${error.message}\n${USAGE}`);
      return 2;
    }
    log.error((error as Error).message ?? String(error));
    return 1;
  }
}

if (import.meta.main) {
  // grpc-js logs its own copy of errors we report in one line (a bind failure printed twice);
  // GRPC_VERBOSITY / GRPC_NODE_VERBOSITY still turn its log on for debugging.
  if (Deno.env.get("GRPC_VERBOSITY") === undefined && Deno.env.get("GRPC_NODE_VERBOSITY") === undefined) {
    grpc.setLogVerbosity(grpc.logVerbosity.NONE);
  }
  Deno.exit(await main(Deno.args));
}
