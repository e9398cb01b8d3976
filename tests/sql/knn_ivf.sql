-- facevec_knn's IVF option and facevec_knn_batch under the sanitizers (tests/test_knn_ivf.py):
-- build, query at several nprobe, change, sync, batches, and damaged IVF tables.
-- Errors are expected from some statements; only sanitizer reports fail the test.
CREATE TABLE face_meta(id INTEGER PRIMARY KEY, img_name TEXT, embedding BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 3000)
INSERT INTO face_meta SELECT i, 'img'||i, vector_from_json('[' || (i%7) || ',' || (i%11) || ',' || (i%13) || ',' || (i%17) || ']') FROM n;
SELECT facevec_knn_build('face_meta', 'embedding', NULL, '{"lists": 20}');
SELECT facevec_knn_status('face_meta');
SELECT rowid, distance FROM facevec_knn('face_meta', '[1,2,3,4]', 3);
SELECT rowid, distance FROM facevec_knn('face_meta', '[1,2,3,4]', 3, 'cosine', NULL, 1);
SELECT rowid, distance FROM facevec_knn('face_meta', '[1,2,3,4]', 3, 'euclidean', 2.5, 20);
DELETE FROM face_meta WHERE id % 3 = 0;
UPDATE face_meta SET embedding = vector_from_json('[9,9,9,9]') WHERE id % 5 = 0;
INSERT INTO face_meta(embedding) VALUES (vector_from_json('[1,2,3,4]'));
SELECT rowid, distance FROM facevec_knn('face_meta', '[1,2,3,4]', 3, 'euclidean_l2', NULL, 2);
SELECT facevec_knn_sync('face_meta');
SELECT facevec_knn_status('face_meta');
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 100000, NULL, NULL, 3);
SELECT query_no, rowid, distance FROM facevec_knn_batch('face_meta', '[[1,2,3,4],[4,3,2,1],[0,1,0,1],[1,1,1,1],[2,2,2,2],[3,3,3,3],[5,5,5,5],[6,6,6,6],[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1],[7,7,7,7]]', 5, NULL, NULL, 2) ORDER BY query_no, distance;
SELECT count(*) FROM facevec_knn_batch('face_meta', '[[1,2,3,4],[4,3,2,1],[0,1,0,1],[1,1,1,1],[2,2,2,2],[3,3,3,3],[5,5,5,5],[6,6,6,6],[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1],[7,7,7,7]]', 2000);
SELECT * FROM facevec_knn_batch('face_meta', '[[1,2,3,4],[1,2]]', 3);
SELECT * FROM facevec_knn_batch('face_meta', '[[1,2,3,4]', 3);
SELECT * FROM facevec_knn('face_meta', '[1,2,3,4]', 3, NULL, NULL, 0);
SELECT facevec_knn_build('face_meta', 'embedding', NULL, '{"lists": -1}');
SELECT facevec_knn_build('face_meta', 'embedding', NULL, '{"bad": 1}');
UPDATE face_meta_fvknn_chunklists SET slots = CAST(x'ffffff7f' || zeroblob(length(slots) - 4) AS BLOB) WHERE list = -1;
SELECT * FROM facevec_knn('face_meta', '[1,2,3,4]', 3, NULL, NULL, 1);
SELECT facevec_knn_status('face_meta');
UPDATE face_meta_fvknn_chunklists SET slots = x'00' WHERE list = -1;
SELECT * FROM facevec_knn('face_meta', '[1,2,3,4]', 3, NULL, NULL, 1);
SELECT facevec_knn_build('face_meta', 'embedding', NULL, '{"lists": 20}');
UPDATE face_meta_fvknn_ivf SET centroids = x'00';
SELECT * FROM facevec_knn('face_meta', '[1,2,3,4]', 3, NULL, NULL, 1);
SELECT facevec_knn_sync('face_meta');
UPDATE face_meta_fvknn_ivf SET centroids = zeroblob(320), lists = 100000000;
SELECT * FROM facevec_knn('face_meta', '[1,2,3,4]', 3, NULL, NULL, 1);
SELECT facevec_knn_build('face_meta', 'embedding', NULL, '{"lists": 20, "nprobe": 2}');
UPDATE face_meta_fvknn_chunklists SET list = 19 WHERE id = 1;
UPDATE face_meta_fvknn_ivf SET centroids = CAST(zeroblob(80) || x'0000c07f' || zeroblob(236) AS BLOB);
SELECT * FROM facevec_knn('face_meta', '[1,2,3,4]', 3, NULL, NULL, 1);
SELECT facevec_knn_build('face_meta', 'embedding', NULL, '{"lists": 20}');
SELECT facevec_knn_status('face_meta');
-- An IVF build driven a batch per call, with rows it cannot read left out, changes
-- between batches, a query meanwhile, and a damaged build state.
CREATE TABLE steps(id INTEGER PRIMARY KEY, embedding BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2000)
INSERT INTO steps SELECT i, vector_from_json('[' || (i%7) || ',' || (i%11) || ',' || (i%13) || ',' || (i%19) || ']') FROM n;
INSERT INTO steps VALUES (5001, x'0102'), (5002, vector_from_json('[1,2,3]'));
SELECT facevec_knn_create('steps', 'embedding', NULL, '{"lists": 10, "storage": "int8"}');
SELECT facevec_knn_sync('steps', 300);
SELECT facevec_knn_status('steps');
SELECT rowid, distance FROM facevec_knn('steps', '[1,2,3,4]', 3);
INSERT INTO steps(embedding) VALUES (vector_from_json('[1,2,3,4]'));
DELETE FROM steps WHERE id = 7;
SELECT facevec_knn_sync('steps', 300);
SELECT facevec_knn_build('steps', 'embedding', NULL, '{"lists": 10, "storage": "int8"}');
SELECT facevec_knn_status('steps');
SELECT rowid, distance FROM facevec_knn('steps', '[1,2,3,4]', 3, NULL, NULL, 10);
SELECT facevec_knn_create('steps', 'embedding', NULL, '{"lists": 10}');
SELECT facevec_knn_sync('steps', 300);
UPDATE steps_fvknn_build SET counts = x'00';
SELECT facevec_knn_sync('steps', 300);
SELECT facevec_knn_drop('steps');
