/** What every command is: its own flags, parsed strictly, and what it runs once the config is loaded. */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { type Config, DEFAULT_CONFIG_PATH, serviceNameProblem } from "../config/mod.ts";

/** Bad command-line usage (exit 2). */
export class UsageError extends Error {}

/** One command line, parsed: the config to load, and what to run with it. */
export interface Invocation {
  configPath: string;
  help: boolean;
  run(config: Config): Promise<number>;
}

/** A command: `usage` is its line in the help text. */
export interface Command {
  name: string;
  usage: string;
  parse(args: string[]): Invocation;
}

/** Flags every command takes. */
const COMMON = {
  config: { type: "string", default: DEFAULT_CONFIG_PATH },
  help: { type: "boolean", short: "h", default: false },
} as const;

/**
 * Parses `args` (the command's name already taken out) against the command's own `options` and
 * the common ones; an unknown flag, or a flag of another command, is a {@link UsageError}.
 */
export function parseFlags<T extends NonNullable<ParseArgsConfig["options"]>>(
  command: string,
  args: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs({ args, options: { ...COMMON, ...options }, allowPositionals, strict: true });
  } catch (error) {
    // Node's message goes on to explain `--`; its first sentence says it.
    throw new UsageError(`${command}: ${(error as Error).message.split(". ")[0]}`);
  }
}

/** `--name`, else the configured service name; checked. */
export function serviceName(flag: string | undefined, config: Config): string {
  const name = flag ?? config.server.name;
  const problem = serviceNameProblem(name);
  if (problem) throw new UsageError(`--name: ${problem}`);
  return name;
}

/** The bearer token for Send/Subscribe: `--token`, else NOTIFICATION_TOKEN; none when both are unset. */
export function bearerToken(flag: string | undefined): string | undefined {
  return flag ?? (Deno.env.get("NOTIFICATION_TOKEN") || undefined);
}
