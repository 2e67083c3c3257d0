import type { Config } from "./config.ts";
export class UsageError extends Error {}
export function runCommand(command: string, _rest: string[], _v: unknown, _c: Config): Promise<number> {
  throw new UsageError(`Unknown command ${JSON.stringify(command)}`);
}
