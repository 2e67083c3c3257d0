/**
 * The command line: with no command the service runs (main.ts); otherwise one of `discover`,
 * `send`, `subscribe` and `token`, each in its own file with its own flags, so a command refuses
 * the flags of another.
 */
import type { Config } from "../config/mod.ts";
import { type Command, parseFlags, UsageError } from "./command.ts";
import { discoverCommand } from "./discover.ts";
import { sendCommand } from "./send.ts";
import { subscribeCommand } from "./subscribe.ts";
import { tokenCommand } from "./token.ts";

export { UsageError };

const COMMANDS: readonly Command[] = [discoverCommand, sendCommand, subscribeCommand, tokenCommand];

export const USAGE = [
  "usage: notification-server [--config PATH]",
  ...COMMANDS.map((c) => `       notification-server ${c.usage} [--config PATH]`),
  "  --token defaults to NOTIFICATION_TOKEN; token signs with notification-server.auth.jwt.hmac-secret-file",
].join("\n");

/** A parsed command line: the config to load, and the command to run with it (none: the service). */
export interface CommandLine {
  configPath: string;
  help: boolean;
  command?: (config: Config) => Promise<number>;
}

/** Parses `args`; throws {@link UsageError} for an unknown command or flag. */
export function parseCommandLine(args: string[]): CommandLine {
  if (args.includes("--help") || args.includes("-h")) return { configPath: "", help: true };
  const at = commandIndex(args);
  if (at < 0) {
    const { values } = parseFlags("notification-server", args, {});
    return { configPath: values.config, help: values.help };
  }
  const name = args[at];
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) throw new UsageError(`Unknown command ${JSON.stringify(name)}`);
  const invocation = command.parse([...args.slice(0, at), ...args.slice(at + 1)]);
  return { configPath: invocation.configPath, help: invocation.help, command: invocation.run };
}

/** Where the command's name is: the first word that is neither a flag nor `--config`'s value. */
function commandIndex(args: string[]): number {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--config") i++;
    else if (!args[i].startsWith("-")) return i;
  }
  return -1;
}
