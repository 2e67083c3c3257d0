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
import { runServer } from "./src/app.ts";
import { type CommandLine, parseCommandLine, USAGE, UsageError } from "./src/cli/mod.ts";
import { ConfigError, loadConfig } from "./src/config/mod.ts";
import { consoleLogger } from "./src/_util/logger.ts";

async function main(args: string[]): Promise<number> {
  let log = consoleLogger();
  let line: CommandLine;
  try {
    line = parseCommandLine(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${error.message}\n${USAGE}`);
    return 2;
  }
  if (line.help) {
    console.log(USAGE);
    return 0;
  }
  try {
    const config = await loadConfig(line.configPath);
    if (!line.command) {
      // From here on every line, a start-up error too, is in the format the config asks for.
      log = consoleLogger({ format: config.server.logFormat, level: config.server.logLevel });
      return await runServer(config, log);
    }
    return await line.command(config);
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
