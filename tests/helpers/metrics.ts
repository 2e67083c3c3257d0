/** Reading a service's `/metrics` in tests. */

/** Samples of a Prometheus text exposition: `name{labels}` -> value. */
export async function scrape(
  port: number,
): Promise<
  { text: string; value(series: string): number | undefined; etcdCalls(operation: string): number }
> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    samples.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return {
    text,
    value: (series) => samples.get(series),
    /** Successful etcd calls of `operation` ("Range", "Txn", ...) so far. */
    etcdCalls: (operation) =>
      samples.get(
        `notification_server_etcd_request_duration_seconds_count{operation="${operation}",code="OK"}`,
      ) ?? 0,
  };
}
