/**
 * Server reflection (`grpc.reflection.v1` and `v1alpha`) that serves the descriptors protoc would
 * write, so grpcurl, Go's protodesc and Python's DescriptorPool accept them.
 *
 * @grpc/reflection serves what protobufjs produces, and three things there are not protoc's:
 * files are named after their package (`notification_v1.proto`), a map field's entry type is
 * named like the field (`Data`, protoc says `DataEntry`), and type references are relative. Go
 * rejects the map entries outright ("incorrect implicit map entry name"). The descriptors are
 * loaded with the field names as written (`keepCase`), corrected here, and handed to
 * @grpc/reflection, which reads nothing but their bytes. (node:fs, not Deno's API: the bench runs
 * this server code under Node too.)
 */
import { ReflectionService } from "@grpc/reflection";
import type * as grpc from "@grpc/grpc-js";
import { fromJSON, loadSync, type PackageDefinition } from "@grpc/proto-loader";
import descriptor from "protobufjs/ext/descriptor";
import protobuf from "protobufjs";
import { readFileSync } from "node:fs";
import { NOTIFICATION_PROTO } from "@notification-server/client";
import { PROTO_DIR } from "./protos.ts";

/**
 * Every public proto the server serves besides notification.proto (the client package's text),
 * reflection's own included (so ListServices names it too). cluster.proto is not here: the Cluster
 * service is internal to the instances and not advertised.
 */
const PROTO_FILES = [
  "grpc/health/v1/health.proto",
  "grpc/reflection/v1/reflection.proto",
  "grpc/reflection/v1alpha/reflection.proto",
];

/** The parts of protobufjs's descriptor messages this file reads and changes. */
interface FieldProto {
  name: string;
  typeName?: string;
}
interface MessageProto {
  name: string;
  field: FieldProto[];
  nestedType: MessageProto[];
  enumType: { name: string }[];
  options?: { mapEntry?: boolean };
}
interface FileProto {
  name: string;
  package: string;
  dependency: string[];
  messageType: MessageProto[];
  enumType: { name: string }[];
  service: { method: { inputType: string; outputType: string }[] }[];
}
interface FileProtoType {
  decode(bytes: Uint8Array): FileProto;
  encode(file: FileProto): { finish(): Uint8Array };
}

/** Adds reflection to `server`, listing `served` (fully qualified names) and reflection itself. */
export function addReflection(server: grpc.Server, served: readonly string[]): void {
  const services = [
    ...served,
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
  ];
  new ReflectionService(correctedDefinition(), { services }).addToServer(server);
}

/** Our protos' descriptors, corrected as described above, in the shape @grpc/reflection reads. */
function correctedDefinition(): PackageDefinition {
  const loaded = {
    ...loadSync(PROTO_FILES, { includeDirs: [PROTO_DIR], keepCase: true }),
    // Parsed here a second time, on purpose: the client package's parse has camelCase field names
    // (what grpc-js objects use), and descriptors must carry the .proto's own.
    ...fromJSON(protobuf.parse(NOTIFICATION_PROTO, { keepCase: true }).root.toJSON(), { keepCase: true }),
  };
  const fileType = (descriptor as unknown as { FileDescriptorProto: FileProtoType }).FileDescriptorProto;
  const pathOf = packagePaths();
  const files = new Map<string, Uint8Array>();
  for (const definition of Object.values(loaded)) {
    for (const bytes of (definition as { fileDescriptorProtos?: Uint8Array[] }).fileDescriptorProtos ?? []) {
      const file = fileType.decode(bytes);
      if (files.has(file.package)) continue;
      correct(file, pathOf);
      files.set(file.package, fileType.encode(file).finish());
    }
  }
  return { corrected: { fileDescriptorProtos: [...files.values()] } } as unknown as PackageDefinition;
}

/** package name -> file path, read from each proto's `package` line. */
function packagePaths(): Map<string, string> {
  const texts: [string, string][] = [
    ["notification.proto", NOTIFICATION_PROTO],
    ...PROTO_FILES.map((path): [string, string] => [path, readFileSync(`${PROTO_DIR}/${path}`, "utf8")]),
  ];
  const paths = new Map<string, string>();
  for (const [path, text] of texts) {
    const pkg = /^package\s+([\w.]+)\s*;/m.exec(text)?.[1];
    if (pkg) paths.set(pkg, path);
  }
  return paths;
}

/** protoc's name for the entry type of map field `field`: `foo_bar` -> `FooBarEntry`. */
function mapEntryName(field: string): string {
  return `${field.split("_").map((p) => p.charAt(0).toUpperCase() + p.slice(1)).join("")}Entry`;
}

function correct(file: FileProto, pathOf: Map<string, string>): void {
  file.name = pathOf.get(file.package) ?? file.name;
  file.dependency = file.dependency.map((d) => pathOf.get(d.replace(/\.proto$/, "").replace(/_/g, ".")) ?? d);
  // Rename map entries first, then qualify every reference against the final names.
  const renameMaps = (message: MessageProto) => {
    for (const field of message.field) {
      const entry = message.nestedType.find((n) => n.options?.mapEntry && n.name === field.typeName);
      if (entry) field.typeName = entry.name = mapEntryName(field.name);
    }
    message.nestedType.forEach(renameMaps);
  };
  file.messageType.forEach(renameMaps);
  const known = new Set<string>();
  const collect = (scope: string, message: MessageProto) => {
    const name = `${scope}.${message.name}`;
    known.add(name);
    for (const e of message.enumType) known.add(`${name}.${e.name}`);
    for (const nested of message.nestedType) collect(name, nested);
  };
  const root = file.package ? `.${file.package}` : "";
  for (const e of file.enumType) known.add(`${root}.${e.name}`);
  for (const m of file.messageType) collect(root, m);
  /** `.pkg.Msg.Ref` for a reference made inside `scope`, as protoc resolves it (innermost first). */
  const qualify = (ref: string | undefined, scope: string): string | undefined => {
    if (!ref || ref.startsWith(".")) return ref;
    for (let s = scope;; s = s.slice(0, s.lastIndexOf("."))) {
      if (known.has(`${s}.${ref}`)) return `${s}.${ref}`;
      if (s === "") return `.${ref}`;
    }
  };
  const qualifyFields = (scope: string, message: MessageProto) => {
    const name = `${scope}.${message.name}`;
    for (const field of message.field) {
      // protobufjs leaves `type_name: ""` on scalars; protoc writes none, and Python's
      // DescriptorPool resolves "" as a type name ('"" is not defined').
      const typeName = qualify(field.typeName, name);
      if (typeName) field.typeName = typeName;
      else delete field.typeName;
    }
    for (const nested of message.nestedType) qualifyFields(name, nested);
  };
  for (const m of file.messageType) qualifyFields(root, m);
  for (const service of file.service) {
    for (const method of service.method) {
      method.inputType = qualify(method.inputType, root)!;
      method.outputType = qualify(method.outputType, root)!;
    }
  }
}
