// Verifies Standard Webhooks signatures with the JavaScript `standardwebhooks` package, for
// hookd's tests: an implementation that shares no code with hookd or the Python verifiers.
//
//   node verify.mjs            stdin: {"requests": [{"secrets": ["whsec_..."], "headers": {...},
//                              "body_b64": "..."}]}; stdout: one JSON array, per request a list
//                              of {"ok": bool, "error": string|null}, one per secret.
//   node verify.mjs serve      stdin: one line {"secrets": {"/path": ["whsec_...", ...]}}. Listens
//                              on 127.0.0.1 (any free port), prints "listening PORT", then one
//                              JSON line per request: {"path", "webhook_id", "results"}; answers
//                              204 when every secret of the path verifies, else 401.
//                              Ends when stdin closes.
import { createServer } from "node:http";
import { Webhook } from "standardwebhooks";

function verifyOne(secrets, headers, body) {
  return secrets.map((secret) => {
    try {
      // The body as it arrived, bytes and all (a Buffer: no re-encoding).
      new Webhook(secret).verify(body, headers, { jsonParse: false });
      return { ok: true, error: null };
    } catch (err) {
      return { ok: false, error: `${err.name}: ${err.message}` };
    }
  });
}

async function readAll(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

async function batch() {
  const input = JSON.parse(await readAll(process.stdin));
  const out = input.requests.map((r) =>
    verifyOne(r.secrets, r.headers, Buffer.from(r.body_b64, "base64")),
  );
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

function firstLine(stream) {
  return new Promise((resolve, reject) => {
    let text = "";
    const onData = (chunk) => {
      text += chunk.toString("utf8");
      const nl = text.indexOf("\n");
      if (nl >= 0) {
        stream.off("data", onData);
        resolve(text.slice(0, nl));
      }
    };
    stream.on("data", onData);
    stream.once("end", () => reject(new Error("stdin closed before the configuration line")));
  });
}

async function serve() {
  const config = JSON.parse(await firstLine(process.stdin));
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const secrets = config.secrets[req.url.split("?")[0]] ?? [];
      const results = verifyOne(secrets, req.headers, Buffer.concat(chunks));
      const ok = results.length > 0 && results.every((r) => r.ok);
      process.stdout.write(
        `${JSON.stringify({ path: req.url, webhook_id: req.headers["webhook-id"] ?? null, results })}\n`,
      );
      res.writeHead(ok ? 204 : 401);
      res.end();
    });
  });
  server.listen(0, "127.0.0.1", () => {
    process.stdout.write(`listening ${server.address().port}\n`);
  });
  // The test closes stdin to stop the receiver.
  process.stdin.on("end", () => {
    server.close();
    server.closeAllConnections();
  });
  process.stdin.resume();
}

if (process.argv[2] === "serve") {
  await serve();
} else {
  await batch();
}
