import assert from "node:assert/strict";
import { embeddedModule } from "../scripts/embed_proto.ts";

Deno.test("the embedded notification.proto is generated from the file (run `deno task proto` after editing it)", async () => {
  const proto = await Deno.readTextFile(new URL("../proto/notification.proto", import.meta.url));
  const module = await Deno.readTextFile(new URL("./notification_proto.ts", import.meta.url));
  assert.equal(module, embeddedModule(proto));
});
