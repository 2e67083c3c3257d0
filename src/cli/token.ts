/**
 * `token --sub S [--scope X] [--recipients R,P*] [--ttl 1h]`: an HS256 token for development, signed
 * with the configured secret.
 */
import type { Config } from "../config/mod.ts";
import { parseDuration } from "../_util/duration.ts";
import { makeToken } from "../auth/tokens.ts";
import { RecipientGrants } from "../auth/grants.ts";
import { type Command, parseFlags, UsageError } from "./command.ts";
import { printLine } from "./output.ts";

export const tokenCommand: Command = {
  name: "token",
  usage: "token --sub SUBJECT [--scope SCOPES] [--recipients NAME,PREFIX*,...] [--ttl 1h]",
  parse(args) {
    const { values } = parseFlags("token", args, {
      sub: { type: "string" },
      scope: { type: "string" },
      recipients: { type: "string" },
      ttl: { type: "string", default: "1h" },
    });
    const sub = values.sub;
    if (!sub) throw new UsageError("token needs --sub SUBJECT (the recipient it may subscribe to)");
    return {
      configPath: values.config,
      help: values.help,
      run: (config) => printToken({ ...values, sub }, config),
    };
  },
};

/** Prints the token the flags describe. */
async function printToken(
  flags: { sub: string; scope?: string; recipients?: string; ttl: string },
  config: Config,
): Promise<number> {
  if (!config.server.auth) {
    throw new UsageError(`token needs notification-server.auth in ${config.path} (the secret it signs with)`);
  }
  const ttlMs = parseDuration(flags.ttl);
  if (!ttlMs) throw new UsageError(`--ttl: ${JSON.stringify(flags.ttl)} is not a duration like 1h or 15m`);
  const recipients = flags.recipients?.split(",").map((r) => r.trim()).filter((r) => r !== "");
  try {
    RecipientGrants.parse(recipients);
  } catch (error) {
    throw new UsageError(`--recipients: ${(error as Error).message}`);
  }
  printLine(
    await makeToken(config.server.auth, {
      sub: flags.sub,
      scope: flags.scope,
      recipients,
      ttlSeconds: Math.max(1, Math.round(ttlMs / 1000)),
    }),
  );
  return 0;
}
