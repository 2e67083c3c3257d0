import assert from "node:assert/strict";
import { generatedModule } from "../../../scripts/generate_pb.ts";

Deno.test("notification_pb.ts is generated from notification.proto (run `deno task proto` after editing it)", async () => {
  const module = await Deno.readTextFile(new URL("./notification_pb.ts", import.meta.url));
  assert.equal(module, await generatedModule());
});
