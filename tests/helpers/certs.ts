/** Certificates made here with openssl, for TLS tests and benchmarks. */

/** Runs `cmd`; its output, or an error with it. */
export async function sh(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed: ${text}`);
  return text;
}

/** A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all in `dir`. */
export async function makeCertificates(dir: string): Promise<void> {
  const o = (...args: string[]) => sh("openssl", args, dir);
  await o(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=test-ca",
  );
  for (const [name, usage] of [["server", "serverAuth,clientAuth"], ["client", "clientAuth"]]) {
    await o(
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
      "-subj",
      `/CN=${name}`,
    );
    await Deno.writeTextFile(
      `${dir}/${name}.ext`,
      `subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=${usage}\n`,
    );
    await o(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.pem`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    );
  }
}
