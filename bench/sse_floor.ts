/**
 * The floor of an SSE fan-out on Deno.serve, for bench/http.ts: bare `text/event-stream` responses
 * fed by pull, with no notification core behind them. `POST /` writes 20 events of the bench's size
 * to every open stream. Run as its own process: `deno run --allow-net bench/sse_floor.ts PORT`.
 */
const encoder = new TextEncoder();
const waiting = new Set<(chunk: Uint8Array) => void>();
const port = Number(Deno.args[0]);

Deno.serve({ hostname: "127.0.0.1", port, onListen: () => console.log("listening") }, async (request) => {
  if (request.method === "POST") {
    for (let i = 0; i < 20; i++) {
      const chunk = encoder.encode(`data: {"title":"f${i}","padding":"${"x".repeat(150)}"}\n\n`);
      const streams = [...waiting];
      waiting.clear();
      for (const give of streams) give(chunk);
      await new Promise((r) => setTimeout(r, 1));
    }
    return new Response("sent\n");
  }
  const queue: Uint8Array[] = [];
  let wake = () => {};
  const listen = () =>
    waiting.add((chunk) => {
      queue.push(chunk);
      listen();
      wake();
    });
  listen();
  const body = new ReadableStream<Uint8Array>({
    start: (controller) => controller.enqueue(encoder.encode("retry: 2000\n\n")),
    async pull(controller) {
      while (queue.length === 0) await new Promise<void>((resolve) => wake = resolve);
      controller.enqueue(queue.shift()!);
    },
  }, { highWaterMark: 0 });
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
});
