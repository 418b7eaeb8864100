// Validates AsyncAPI documents with the AsyncAPI project's own parser (@asyncapi/parser 3.x), the
// Avro schema parser (@asyncapi/avro-schema-parser) registered for Avro payloads. For AsyncAPI 3
// documents the parser's rules do not run a custom format's validation (they turn Avro into JSON
// Schema without complaint about an unknown type), so every Avro payload is also checked here with
// that schema parser's own `validate` (avsc). Usage:
//   node .ci/validate-asyncapi.js FILE…   (NODE_PATH must hold the parsers: .ci/validate-asyncapi does it)
// Prints every diagnostic; exits 1 if a document has an error or an Avro payload does not parse.
'use strict';

const fs = require('fs');
const { Parser, DiagnosticSeverity } = require('@asyncapi/parser');
const { AvroSchemaParser } = require('@asyncapi/avro-schema-parser');

const AVRO = 'application/vnd.apache.avro';

/** The Avro payloads of the raw document: [path, schema] of each message's multi-format schema. */
function avroPayloads(raw) {
  const found = [];
  const visit = (messages, path) => {
    for (const [id, message] of Object.entries(messages || {})) {
      const payload = message && message.payload;
      if (payload && typeof payload.schemaFormat === 'string' && payload.schemaFormat.startsWith(AVRO)) {
        found.push([[...path, id, 'payload', 'schema'], payload.schema]);
      }
    }
  };
  for (const [id, channel] of Object.entries(raw.channels || {})) visit(channel.messages, ['channels', id, 'messages']);
  visit((raw.components || {}).messages, ['components', 'messages']);
  return found;
}

async function validate(file) {
  const text = fs.readFileSync(file, 'utf8');
  const avroParser = AvroSchemaParser();
  const parser = new Parser();
  parser.registerSchemaParser(avroParser);
  const { document, diagnostics } = await parser.parse(text, { source: file });
  let errors = 0;
  let raw = {};
  try {
    raw = JSON.parse(text);
  } catch (e) {
    // YAML: the parser has said what it thinks.
  }
  for (const [path, schema] of avroPayloads(raw)) {
    for (const problem of await avroParser.validate({ data: schema, path })) {
      errors += 1;
      console.log(`${file}: error: Avro schema: ${problem.message} at /${path.join('/')}`);
    }
  }
  for (const d of diagnostics) {
    const severity = ['error', 'warning', 'information', 'hint'][d.severity] || String(d.severity);
    if (d.severity === DiagnosticSeverity.Error) errors += 1;
    console.log(`${file}: ${severity}: ${d.message} (${d.code}) at /${(d.path || []).join('/')}`);
  }
  if (!document) {
    console.log(`${file}: not a valid AsyncAPI document`);
    return false;
  }
  const avro = avroPayloads(raw).length;
  const channels = document.allChannels().length;
  const operations = document.allOperations().length;
  console.log(`${file}: AsyncAPI ${document.version()}: ${channels} channels, ${operations} operations, ` +
    `${avro} Avro payloads checked; ${errors} error(s)`);
  return errors === 0;
}

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error('usage: validate-asyncapi.js FILE…');
    process.exit(2);
  }
  let ok = true;
  for (const file of files) ok = (await validate(file)) && ok;
  process.exit(ok ? 0 : 1);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
