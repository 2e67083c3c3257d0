/** Picks the address clients dial: never 0.0.0.0 or ::, which mean "any" only to a listener. */
import { formatHostPort, type HostPort, isWildcard } from "@notification-server/registry";

/** A chosen address and, when it was guessed from the interfaces, which interface. */
export interface Advertised {
  addr: string;
  /** Set when the host came from the machine's interfaces; logged so operators can check it. */
  derivedFrom?: string;
}

/** The subset of `Deno.NetworkInterfaceInfo` used here. */
export type InterfaceInfo = Pick<Deno.NetworkInterfaceInfo, "name" | "family" | "address">;

/**
 * `configured` if set; else the bind host when it is concrete; else the first non-loopback IPv4
 * (then IPv6) address of the machine, with the port actually bound.
 */
export function advertisedAddress(
  bind: HostPort,
  boundPort: number,
  configured: HostPort | undefined,
  interfaces: () => InterfaceInfo[] = () => Deno.networkInterfaces(),
): Advertised {
  if (configured) return { addr: formatHostPort(configured) };
  if (!isWildcard(bind.host)) return { addr: formatHostPort({ host: bind.host, port: boundPort }) };
  const all = interfaces();
  const pick = all.find((i) => i.family === "IPv4" && !i.address.startsWith("127.")) ??
    all.find((i) =>
      i.family === "IPv6" && i.address !== "::1" && !i.address.toLowerCase().startsWith("fe80")
    );
  if (!pick) {
    return {
      addr: formatHostPort({ host: "127.0.0.1", port: boundPort }),
      derivedFrom: "loopback (no other interface)",
    };
  }
  return {
    addr: formatHostPort({ host: pick.address, port: boundPort }),
    derivedFrom: `interface ${pick.name}`,
  };
}
