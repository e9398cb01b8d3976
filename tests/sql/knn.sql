-- facevec_knn under the sanitizers (tests/test_knn.py): build, query, change, sync, errors.
-- Errors are expected from some statements; only sanitizer reports fail the test.
CREATE TABLE face_meta(id INTEGER PRIMARY KEY, img_name TEXT, embedding BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 3000)
INSERT INTO face_meta SELECT i, 'img'||i, vector_from_json('[' || (i%7) || ',' || (i%11) || ',' || (i%13) || ',1.5]') FROM n;
SELECT facevec_knn_build('face_meta', 'embedding', 64);
SELECT rowid, distance FROM facevec_knn('face_meta', '[1,2,3,4]', 3);
SELECT rowid, distance FROM facevec_knn('face_meta', '[1,2,3,4]', 3, 'cosine', 0.5);
DELETE FROM face_meta WHERE id % 3 = 0;
UPDATE face_meta SET embedding = vector_from_json('[9,9,9,9]') WHERE id % 5 = 0;
INSERT INTO face_meta(embedding) VALUES (vector_from_json('[1,2,3,4]'));
SELECT rowid, distance FROM facevec_knn('face_meta', '[1,2,3,4]', 3, 'euclidean_l2');
SELECT facevec_knn_sync('face_meta', 100);
SELECT facevec_knn_sync('face_meta');
SELECT facevec_knn_status('face_meta');
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 100000);
SELECT * FROM facevec_knn('face_meta', '[1,2,3]', 3);
SELECT * FROM facevec_knn('face_meta', '[1,2,3,', 3);
SELECT * FROM facevec_knn('face_meta', x'0000', 3);
SELECT * FROM facevec_knn('nope', '[1,2,3,4]', 3);
SELECT * FROM facevec_knn('face_meta', '[1,2,3,4]', 3, 'bad');
SELECT * FROM facevec_knn('face_meta', '[0,0,0,0]', 3, 'cosine');
SELECT facevec_knn_build('face_meta', 'nope');
INSERT INTO face_meta(embedding) VALUES (x'00000000');
SELECT facevec_knn_sync('face_meta');
SELECT facevec_knn_create('face_meta');
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 50);
SELECT facevec_knn_sync('face_meta', 1000);
DELETE FROM face_meta WHERE id = 3001;
SELECT facevec_knn_sync('face_meta');
SELECT facevec_knn_drop('face_meta');
