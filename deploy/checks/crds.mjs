// Validates custom resources that kubernetes-validate has no schema for, with the models of the
// npm package @kubernetes-models/prometheus-operator (generated from the operator's Go API types).
// Usage: node crds.mjs NODE_MODULES_DIR DOCS.json   (DOCS.json: a JSON list of ServiceMonitors)
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, docsFile] = process.argv.slice(2);
const models = {
  "monitoring.coreos.com/v1/ServiceMonitor":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js",
};
let failed = 0;
for (const doc of JSON.parse(readFileSync(docsFile, "utf8"))) {
  const id = `${doc.kind}/${doc.metadata?.name}`;
  const modPath = models[`${doc.apiVersion}/${doc.kind}`];
  if (!modPath) {
    console.log(`  FAIL ${id}: no model for ${doc.apiVersion}`);
    failed++;
    continue;
  }
  const mod = await import(pathToFileURL(join(modules, modPath)).href);
  try {
    new mod[doc.kind](doc).validate();
    console.log(`  ok   ${id} against ${modPath.split("/").slice(0, 2).join("/")}`);
  } catch (e) {
    console.log(`  FAIL ${id}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
