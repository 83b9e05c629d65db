// Validate a .glb with the Khronos glTF validator; prints its report as JSON.
// usage: node validate_gltf.js MODULE_DIR FILE.glb
const path = require("path");
const fs = require("fs");
const validator = require(path.join(process.argv[2], "gltf-validator"));
const file = process.argv[3];
validator
  .validateBytes(new Uint8Array(fs.readFileSync(file)), {
    uri: path.basename(file),
    externalResourceFunction: (uri) =>
      Promise.reject(new Error(`external resource ${uri}: a GLB must be self-contained`)),
  })
  .then((report) => console.log(JSON.stringify(report)))
  .catch((error) => { console.error(String(error)); process.exit(1); });
