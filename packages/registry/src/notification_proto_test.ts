import assert from "node:assert/strict";
import { NOTIFICATION_PROTO } from "./notification_proto.ts";

Deno.test("the embedded notification.proto is the file's text (edit both together)", async () => {
  const file = await Deno.readTextFile(new URL("../proto/notification.proto", import.meta.url));
  assert.equal(NOTIFICATION_PROTO, file);
});
