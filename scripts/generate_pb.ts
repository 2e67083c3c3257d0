/**
 * `deno task proto` (after the embedded copy): writes src/web/gen/notification_pb.ts, the @bufbuild/protobuf code of
 * packages/client/proto/notification.proto (protoc-gen-es, run in-process over protoc's descriptor
 * set), which the Connect and gRPC-Web side serves. src/web/gen/notification_pb_test.ts fails when
 * the file is stale: run this after editing the .proto.
 */
import { create, fromBinary } from "@bufbuild/protobuf";
import { CodeGeneratorRequestSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { protocGenEs } from "@bufbuild/protoc-gen-es";

const PROTO_DIR = new URL("../packages/client/proto/", import.meta.url);
const OUTPUT = new URL("../src/web/gen/notification_pb.ts", import.meta.url);

/** The generated module's text, from the .proto as it is now (needs Debian's `protoc`). */
export async function generatedModule(): Promise<string> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("protoc", {
      args: [
        `--proto_path=${PROTO_DIR.pathname}`,
        "--include_source_info",
        "--descriptor_set_out=/dev/stdout",
        "notification.proto",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    throw new Error(`protoc: cannot run it (${(error as Error).message}); scripts/setup.sh installs it`);
  }
  if (!output.success) throw new Error(`protoc: ${new TextDecoder().decode(output.stderr).trim()}`);
  const set = fromBinary(FileDescriptorSetSchema, output.stdout);
  const response = protocGenEs.run(create(CodeGeneratorRequestSchema, {
    fileToGenerate: ["notification.proto"],
    parameter: "target=ts,import_extension=ts",
    protoFile: set.file,
  }));
  if (response.error) throw new Error(`protoc-gen-es: ${response.error}`);
  const [file] = response.file;
  return `// deno-lint-ignore-file\n// deno-fmt-ignore-file\n${file.content}`;
}

if (import.meta.main) await Deno.writeTextFile(OUTPUT, await generatedModule());
