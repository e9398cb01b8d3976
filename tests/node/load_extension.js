// The facevec extension in Node's better-sqlite3: loaded by path, its functions
// answer, and a nearest-face query (a scan and the facevec_knn index) finds the
// nearest vectors. Usage (CommonJS, so NODE_PATH can point at the driver):
//   npm install better-sqlite3@12
//   node tests/node/load_extension.js dist/facevec0
"use strict";
const assert = require("node:assert/strict");
const Database = require("better-sqlite3");

const extension = process.argv[2];
if (!extension) {
  console.error("usage: node load_extension.js PATH/facevec0");
  process.exit(2);
}

const db = new Database(":memory:");
db.loadExtension(extension);

const checks = [];
function check(name, fn) {
  checks.push([name, fn]);
}

const blob = (values) => Buffer.from(new Float32Array(values).buffer);

check("the SQL functions answer", () => {
  const row = db
    .prepare("SELECT euclidean_distance('[0,0]', '[3,4]') AS d, vector_dims(?) AS n")
    .get(blob([1, 2, 3]));
  assert.deepEqual(row, { d: 5, n: 3 });
});

check("errors name the function", () => {
  assert.throws(
    () => db.prepare("SELECT euclidean_distance('[1,2]', '[1]')").get(),
    /euclidean_distance: vectors have different dimensions: 2 and 1/,
  );
});

check("a scan and facevec_knn find the same nearest faces", () => {
  db.exec("CREATE TABLE face_meta (id INTEGER PRIMARY KEY, img_name TEXT, embedding BLOB)");
  const insert = db.prepare("INSERT INTO face_meta (img_name, embedding) VALUES (?, ?)");
  const vectors = [];
  for (let i = 0; i < 200; i++) {
    const v = Array.from({ length: 128 }, (_, j) => Math.sin(i * 131 + j * 7));
    vectors.push(v);
    insert.run(`img${i}.jpg`, blob(v));
  }
  const query = blob(vectors[42].map((x) => x + 0.001));
  const scan = db
    .prepare("SELECT img_name FROM face_meta ORDER BY euclidean_distance(embedding, ?) LIMIT 3")
    .all(query)
    .map((r) => r.img_name);
  assert.equal(scan[0], "img42.jpg");
  db.prepare("SELECT facevec_knn_build('face_meta', 'embedding')").get();
  const knn = db
    .prepare(
      "SELECT m.img_name FROM facevec_knn('face_meta', ?, 3) AS k " +
        "JOIN face_meta AS m ON m.id = k.rowid ORDER BY k.distance",
    )
    .all(query)
    .map((r) => r.img_name);
  assert.deepEqual(knn, scan);
});

let failed = 0;
for (const [name, fn] of checks) {
  try {
    fn();
    console.log(`ok   ${name}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${err.message}`);
  }
}
console.log(`${checks.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
