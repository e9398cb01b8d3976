-- facevec_knn on a forged or damaged index (tests/test_knn_hostile.py, and under
-- the sanitizers in tests/test_sanitizers.py). `select 'name', <check>;` prints
-- name|1; a statement ending in `-- error: <message>` must fail with that message.
CREATE TABLE face_meta(id INTEGER PRIMARY KEY, img_name TEXT, embedding BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 40)
INSERT INTO face_meta SELECT i, 'img'||i, vector_from_json('[' || (i%7) || ',' || (i%11) || ',' || (i%13) || ',1.5]') FROM n;
select 'build', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 40;

-- k: any INTEGER up to 2^63-1 means "at most k"; no allocation of k entries.
select 'k-huge', (SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953)) = 40;
select 'k-max', (SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 9223372036854775807)) = 40;
UPDATE facevec_knn_index SET n_vectors = 4611686018427387904;
select 'k-huge-forged-count', (SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953)) = 40;
