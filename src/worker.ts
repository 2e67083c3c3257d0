/** The serving worker's module (serving/workers/worker.ts), with this instance's delivery mode. */
import { runWorker } from "./serving/workers/worker.ts";
import { deliveryMode } from "./mode.ts";

if (import.meta.main) runWorker({ mode: deliveryMode });
