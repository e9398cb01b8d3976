-- facevec_knn on a forged or damaged index (tests/test_knn_hostile.py, and under
-- the sanitizers in tests/test_sanitizers.py). `select 'name', <check>;` prints
-- name|1; a statement ending in `-- error: <message>` must fail with that message.
-- Each forgery is undone by a rebuild before the next.
CREATE TABLE face_meta(id INTEGER PRIMARY KEY, img_name TEXT, embedding BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 150)
INSERT INTO face_meta SELECT i, 'img'||i, vector_from_json('[' || (i%7) || ',' || (i%11) || ',' || (i%13) || ',1.5]') FROM n;
CREATE VIEW truth AS SELECT id, euclidean_distance(embedding, '[1,2,3,4]') AS d FROM face_meta ORDER BY d, id;
CREATE VIEW answer AS SELECT group_concat(id || ':' || d) FROM truth;
select 'build', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 150;

-- k: any INTEGER up to 2^63-1 means "at most k"; no allocation of k entries.
select 'k-huge', (SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953)) = 150;
select 'k-max', (SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 9223372036854775807)) = 150;
SELECT * FROM facevec_knn('face_meta', '[1,2,3,4]', 0); -- error: facevec_knn: k must be >= 1, found 0
SELECT * FROM facevec_knn('face_meta', '[1,2,3,4]', -9223372036854775808); -- error: facevec_knn: k must be >= 1, found -9223372036854775808
-- threshold: NULL or +infinity for no limit, else a number >= 0.
select 'threshold-null', (SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000, 'cosine', NULL)) = 150;
select 'threshold-inf', (SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000, 'euclidean', 9e999)) = 150;
select 'threshold-zero', (SELECT count(*) FROM facevec_knn('face_meta', '[1,1,1,1.5]', 1000, 'euclidean', 0)) = 1;
SELECT * FROM facevec_knn('face_meta', '[1,2,3,4]', 3, 'cosine', -1); -- error: facevec_knn: threshold must be >= 0, found -1
SELECT * FROM facevec_knn('face_meta', '[1,2,3,4]', 3, 'cosine', -1e-300); -- error: facevec_knn: threshold must be >= 0, found -1e-300
SELECT * FROM facevec_knn('face_meta', '[1,2,3,4]', 3, 'euclidean', -9e999); -- error: facevec_knn: threshold must be >= 0, found -Inf

-- Deleted slots, then changes left in the log.
DELETE FROM face_meta WHERE id BETWEEN 20 AND 25;
select 'sync', (SELECT facevec_knn_sync('face_meta')) = 6;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
DELETE FROM face_meta WHERE id = 6;
INSERT INTO face_meta(id, embedding) VALUES (151, vector_from_json('[1,2,3,4]'));
UPDATE face_meta SET id = 200 WHERE id = 7;
select 'pending-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- n_vectors
UPDATE facevec_knn_index SET n_vectors = 4611686018427387904;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (4611686018427387904 vectors in 3 chunks of 64); rebuild it with: facevec reindex
select 'n_vectors-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'n_vectors-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- n_vectors-negative
UPDATE facevec_knn_index SET n_vectors = -5;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (-5 vectors in 3 chunks of 64); rebuild it with: facevec reindex
select 'n_vectors-negative-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'n_vectors-negative-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- dim
UPDATE facevec_knn_index SET dim = 65;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (chunk 1 holds 1024 bytes of vectors, expected 16640); rebuild it with: facevec reindex
select 'dim-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'dim-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- dim-huge
UPDATE facevec_knn_index SET dim = 9223372036854775807;
SELECT facevec_knn_status('face_meta'); -- error: facevec_knn_status: the knn index of face_meta is corrupt (dimension 9223372036854775807); rebuild it with: facevec reindex
select 'dim-huge-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'dim-huge-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- chunk-size
UPDATE facevec_knn_index SET chunk_size = 4096;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (chunk 3 holds 8 bytes of valid, expected 512); rebuild it with: facevec reindex
select 'chunk-size-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'chunk-size-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- chunk-size-odd
UPDATE facevec_knn_index SET chunk_size = 65;
SELECT facevec_knn_status('face_meta'); -- error: facevec_knn_status: the knn index of face_meta is corrupt (chunk size 65 for dimension 4); rebuild it with: facevec reindex
select 'chunk-size-odd-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'chunk-size-odd-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- tail-used
UPDATE facevec_knn_index SET tail_used = 3;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (chunk 3 marks slot 3 valid, past the 3 in use); rebuild it with: facevec reindex
select 'tail-used-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'tail-used-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- tail-used-huge
UPDATE facevec_knn_index SET tail_used = 2147483648;
SELECT facevec_knn_sync('face_meta'); -- error: facevec_knn_sync: the knn index of face_meta is corrupt (2147483648 slots used in a tail chunk of 64); rebuild it with: facevec reindex
select 'tail-used-huge-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'tail-used-huge-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- tail-chunk
UPDATE facevec_knn_index SET tail_chunk = 4096;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (the last chunk is 3, the index names 4096); rebuild it with: facevec reindex
select 'tail-chunk-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'tail-chunk-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- tail-chunk-huge
UPDATE facevec_knn_index SET tail_chunk = 9223372036854775807;
SELECT facevec_knn_sync('face_meta'); -- error: facevec_knn_sync: the knn index of face_meta is corrupt (tail chunk 9223372036854775807); rebuild it with: facevec reindex
select 'tail-chunk-huge-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'tail-chunk-huge-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- vectors-short
UPDATE face_meta_fvknn_chunks SET vectors = substr(vectors, 1, 100) WHERE id = 2;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (chunk 2 holds 100 bytes of vectors, expected 1024); rebuild it with: facevec reindex
select 'vectors-short-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'vectors-short-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- vectors-long
UPDATE face_meta_fvknn_chunks SET vectors = vectors || x'00000000' WHERE id = 3;
SELECT facevec_knn_sync('face_meta'); -- error: facevec_knn_sync: the knn index of face_meta is corrupt (chunk 3 holds 1028 bytes of vectors, expected 1024); rebuild it with: facevec reindex
select 'vectors-long-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'vectors-long-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- valid-short
UPDATE face_meta_fvknn_chunks SET valid = x'ff' WHERE id = 2;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (chunk 2 holds 1 bytes of valid, expected 8); rebuild it with: facevec reindex
select 'valid-short-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'valid-short-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- rowids-short
UPDATE face_meta_fvknn_chunks SET rowids = substr(rowids, 1, 64) WHERE id = 1;
SELECT facevec_knn_sync('face_meta'); -- error: facevec_knn_sync: the knn index of face_meta is corrupt (chunk 1 holds 64 bytes of rowids, expected 512); rebuild it with: facevec reindex
select 'rowids-short-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'rowids-short-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- tail-bits
UPDATE face_meta_fvknn_chunks SET valid = x'ffffffffffffffff' WHERE id = 3;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (chunk 3 marks slot 16 valid, past the 16 in use); rebuild it with: facevec reindex
select 'tail-bits-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'tail-bits-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- bits-cleared
UPDATE face_meta_fvknn_chunks SET valid = zeroblob(8) WHERE id = 2;
SELECT facevec_knn_status('face_meta'); -- error: facevec_knn_status: the knn index of face_meta is corrupt (its chunks hold 80 vectors, it counts 144); rebuild it with: facevec reindex
select 'bits-cleared-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'bits-cleared-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- rowid-unknown
UPDATE face_meta_fvknn_chunks SET rowids = x'3f420f0000000000' || substr(rowids, 9) WHERE id = 1;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (slot 0 of chunk 1 holds row 999999, which the map puts nowhere); rebuild it with: facevec reindex
select 'rowid-unknown-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'rowid-unknown-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- rowid-twice
UPDATE face_meta_fvknn_chunks SET rowids = substr(rowids, 9, 8) || substr(rowids, 9) WHERE id = 1;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (row 2 is stored twice); rebuild it with: facevec reindex
select 'rowid-twice-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'rowid-twice-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- chunk-renumbered
UPDATE face_meta_fvknn_chunks SET id = 7 WHERE id = 3;
SELECT facevec_knn_sync('face_meta'); -- error: facevec_knn_sync: the knn index of face_meta is corrupt (chunk 7 is outside 1..3); rebuild it with: facevec reindex
select 'chunk-renumbered-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'chunk-renumbered-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- chunk-gone
DELETE FROM face_meta_fvknn_chunks WHERE id = 1;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (its chunks hold 80 vectors, it counts 144); rebuild it with: facevec reindex
select 'chunk-gone-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'chunk-gone-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- map-slot
UPDATE face_meta_fvknn_rowids SET slot = 9999 WHERE rid = 5;
SELECT facevec_knn_sync('face_meta'); -- error: facevec_knn_sync: the knn index of face_meta is corrupt (row 5 is mapped to slot 9999 of chunk 1); rebuild it with: facevec reindex
select 'map-slot-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'map-slot-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- map-other-row
UPDATE face_meta_fvknn_rowids SET slot = 8 WHERE rid = 5;
SELECT facevec_knn_sync('face_meta'); -- error: facevec_knn_sync: the knn index of face_meta is corrupt (row 5 is mapped to slot 8 of chunk 1, which holds another row); rebuild it with: facevec reindex
select 'map-other-row-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'map-other-row-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- map-past-tail
UPDATE face_meta_fvknn_rowids SET chunk = 3, slot = 40 WHERE rid = 151;
SELECT facevec_knn_sync('face_meta'); -- error: facevec_knn_sync: the knn index of face_meta is corrupt (row 151 is mapped to slot 40 of chunk 3); rebuild it with: facevec reindex
select 'map-past-tail-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'map-past-tail-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- log-real
INSERT INTO face_meta_fvknn_log(rid) VALUES (8.5);
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is corrupt (its log holds a REAL rowid); rebuild it with: facevec reindex
select 'log-real-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'log-real-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- trigger-gone
DROP TRIGGER face_meta_fvknn_del;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953); -- error: facevec_knn: the knn index of face_meta is stale: its triggers are missing (was the table dropped and created again?); rebuild it with: facevec reindex
select 'trigger-gone-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'trigger-gone-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- format
UPDATE facevec_knn_index SET format = 4;
SELECT facevec_knn_status('face_meta'); -- error: facevec_knn_status: the knn index of face_meta is corrupt (format 4, expected 1 to 3); rebuild it with: facevec reindex
select 'format-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,2]') WHERE id IN (5, 151);
UPDATE face_meta SET embedding = vector_from_json('[1,1,1,1]') WHERE id = 5;
UPDATE face_meta SET embedding = vector_from_json('[1,2,3,4]') WHERE id = 151;
select 'format-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);

-- tail-chunk-far: chunk ids would not fit beside a slot in one int64
UPDATE face_meta_fvknn_chunks SET id = 1125899906842624 WHERE id = 3;
UPDATE facevec_knn_index SET tail_chunk = 1125899906842624;
SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 10); -- error: facevec_knn: the knn index of face_meta is corrupt (tail chunk 1125899906842624); rebuild it with: facevec reindex
select 'tail-chunk-far-rebuilt', (SELECT facevec_knn_build('face_meta', 'embedding', 64)) = 144;

-- A build cursor that skips rows: the query reads them from the table, the
-- sync that ends the build finds them missing.
select 'create', (SELECT facevec_knn_create('face_meta', 'embedding', 64)) = 0;
select 'partial', (SELECT facevec_knn_sync('face_meta', 100)) = 100;
UPDATE facevec_knn_index SET build_next = 140;
select 'cursor-right', (SELECT group_concat(rowid || ':' || distance) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = (SELECT * FROM answer);
SELECT facevec_knn_sync('face_meta'); -- error: facevec_knn_sync: the knn index of face_meta is corrupt (it holds 113 vectors, the table 144); rebuild it with: facevec reindex
select 'cursor-rebuilt', (SELECT facevec_knn_build('face_meta')) = 144;
select 'drop', (SELECT facevec_knn_drop('face_meta')) = 1;

-- What the file's schema may call: views and triggers cannot reach the index.
select 'rebuild', (SELECT facevec_knn_build('face_meta')) = 144;
CREATE VIEW nearest AS SELECT rowid FROM facevec_knn('face_meta', '[1,2,3,4]', 2305843009213693953);
CREATE VIEW sync_view AS SELECT facevec_knn_sync('face_meta');
CREATE TABLE audit(x);
CREATE TRIGGER audit_knn AFTER INSERT ON audit BEGIN SELECT facevec_knn_drop('face_meta'); END;
SELECT count(*) FROM nearest; -- error: unsafe use of virtual table "facevec_knn"
SELECT * FROM sync_view; -- error: unsafe use of facevec_knn_sync()
INSERT INTO audit VALUES (1); -- error: unsafe use of facevec_knn_drop()
CREATE VIEW pure AS SELECT euclidean_distance(embedding, '[1,2,3,4]') AS d FROM face_meta;
PRAGMA trusted_schema = OFF;
select 'pure-view-untrusted', (SELECT count(*) FROM pure WHERE d IS NOT NULL) = 144;
INSERT INTO face_meta(embedding) VALUES (vector_from_json('[1,2,3,4]'));
select 'trigger-untrusted', json_extract(facevec_knn_status('face_meta'), '$.pending') = 1;
PRAGMA trusted_schema = ON;

-- Names: schema main only, no NUL, any character in status.
CREATE TEMP TABLE face_meta(id INTEGER PRIMARY KEY, embedding BLOB);
INSERT INTO temp.face_meta VALUES (1, vector_from_json('[1,2,3,4]'));
select 'temp-ignored', (SELECT count(*) FROM facevec_knn('face_meta', '[1,2,3,4]', 1000)) = 145;
select 'temp-sync', (SELECT facevec_knn_sync('face_meta')) = 1;
DROP TABLE temp.face_meta;
SELECT facevec_knn_sync('face_meta' || char(0) || 'evil'); -- error: facevec_knn_sync: table (argument 1) contains a NUL character
CREATE TABLE "we""ird\
name"(id INTEGER PRIMARY KEY, embedding BLOB);
INSERT INTO "we""ird\
name" VALUES (1, x'0000803f');
select 'status-no-index', facevec_knn_status((SELECT name FROM sqlite_schema WHERE name LIKE 'we%' AND type = 'table')) IS NULL;
select 'status-json-built', (SELECT facevec_knn_build((SELECT name FROM sqlite_schema WHERE name LIKE 'we%' AND type = 'table'))) = 1;
select 'status-json-valid', json_valid(facevec_knn_status((SELECT name FROM sqlite_schema WHERE name LIKE 'we%' AND type = 'table' AND name NOT LIKE '%fvknn%')));
