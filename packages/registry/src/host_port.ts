/** `host:port` strings, with IPv6 hosts in brackets ("[::1]:8080"). */

/** A parsed address; `host` is without brackets and may be "" (all interfaces). */
export interface HostPort {
  /** The host or IP, without brackets; "" for all interfaces. */
  readonly host: string;
  /** 0 to 65535. */
  readonly port: number;
}

/** Parses "host:port", ":port" or "[v6]:port"; returns a one-line problem string when it is not one. */
export function parseHostPort(text: string): HostPort | string {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]\s]*)):(\d{1,5})$/.exec(text.trim());
  if (!match) return `${JSON.stringify(text)} is not an address like 0.0.0.0:8080`;
  const port = Number(match[3]);
  if (port > 65535) return `${JSON.stringify(text)} has port ${port}, above 65535`;
  return { host: match[1] ?? match[2], port };
}

/** Formats back to "host:port", bracketing IPv6 hosts. */
export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * True for hosts that mean "any address" to a listener and must never be advertised, in every
 * spelling: "", 0.0.0.0, 0 (inet_aton's short form), ::, [0:0:0:0:0:0:0:0], ::ffff:0.0.0.0.
 */
export function isWildcard(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (/^[0.]*$/.test(h)) return true;
  if (!h.includes(":")) return false;
  const v4 = h.lastIndexOf(":") >= 0 && h.includes(".") ? h.slice(h.lastIndexOf(":") + 1) : "";
  if (v4 && !/^[0.]+$/.test(v4)) return false;
  const v6 = v4 ? h.slice(0, h.lastIndexOf(":") + 1) : h;
  return /^[0:]*$/.test(v6.replace(/^(0*:){0,5}ffff:$/, "::"));
}
