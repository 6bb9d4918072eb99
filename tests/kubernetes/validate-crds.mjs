// Validates the rendered objects of custom resource kinds that kubernetes-validate has no schema
// for, against the schemas of their CRDs as packaged by kubernetes-models (types, enums,
// required fields). Reads a JSON array of objects on standard input; exit status 1 names each
// invalid object. Unknown kinds are errors, not skips.
import { Certificate } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const models = {
  "cert-manager.io/v1 Certificate": Certificate,
  "monitoring.coreos.com/v1 ServiceMonitor": ServiceMonitor,
};

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const objects = JSON.parse(Buffer.concat(chunks).toString("utf8"));
let failed = 0;
for (const object of objects) {
  const kind = `${object.apiVersion} ${object.kind}`;
  const name = object.metadata?.name;
  const Model = models[kind];
  if (!Model) {
    console.error(`ERROR ${kind} ${name}: no schema known for this kind`);
    failed++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`ok ${kind} ${name}`);
  } catch (e) {
    console.error(`ERROR ${kind} ${name}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
