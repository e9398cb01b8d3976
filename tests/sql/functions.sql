-- facevec SQL battery (sqlean style): every SELECT yields 'name|1' when it passes.
-- Run with the extension loaded: sqlite3 :memory: -cmd '.load facevec0' < functions.sql
-- Vectors: JSON TEXT, and little-endian float32 BLOBs (x'0000803f' is 1.0).

-- distances, JSON arguments
select 'euclidean-json', abs(euclidean_distance('[1,2]', '[4,6]') - 5.0) < 1e-12;
select 'euclidean-squared-json', euclidean_distance_squared('[1,2]', '[4,6]') = 25.0;
select 'euclidean-self', euclidean_distance('[1.5,-2,3]', '[1.5,-2,3]') = 0.0;
select 'cosine-orthogonal', abs(cosine_distance('[1,0]', '[0,1]') - 1.0) < 1e-7;
select 'cosine-opposite', abs(cosine_distance('[1,1]', '[-2,-2]') - 2.0) < 1e-7;
select 'cosine-same-direction', abs(cosine_distance('[1,2,3]', '[2,4,6]')) < 1e-7;
select 'euclidean-l2-right-angle', abs(euclidean_l2_distance('[3,0]', '[0,5]') - sqrt(2)) < 1e-7;
select 'euclidean-l2-scaled', abs(euclidean_l2_distance('[1,2,3]', '[10,20,30]')) < 1e-6;
select 'inner-product', inner_product('[1,2,3]', '[4,5,6]') = 32.0;
select 'inner-product-negative', inner_product('[1,-2]', '[3,4]') = -5.0;
select 'result-is-real', typeof(euclidean_distance('[1]', '[2]')) = 'real';
select 'json-whitespace', euclidean_distance(' [ 1 , 2 ] ', '[1,2]') = 0.0;
select 'json-exponents', abs(euclidean_distance('[1e2, -2.5E-1]', '[100, -0.25]')) < 1e-12;

-- distances, BLOB arguments
select 'euclidean-blob', abs(euclidean_distance(x'0000803f00000040', x'0000804000000041') - sqrt(45)) < 1e-6;
select 'blob-equals-json', euclidean_distance(x'0000803f00000040', '[4,8]') = euclidean_distance('[1,2]', '[4,8]');
select 'blob-from-json', vector_from_json('[1,2]') = x'0000803f00000040';
select 'cosine-blob', abs(cosine_distance(vector_from_json('[1,0,0]'), vector_from_json('[0,0,3]')) - 1.0) < 1e-7;
select 'inner-blob', inner_product(vector_from_json('[0.5,0.25]'), x'0000803f0000803f') = 0.75;

-- extremes: float32 sums that would overflow (elements of 1e20) or underflow
-- (1e-30) are taken again in double
select 'l2-opposite-huge', abs(euclidean_l2_distance('[1e20,1e20,1e20]', '[-1e20,-1e20,-1e20]') - 2.0) < 1e-12;
select 'cosine-opposite-huge', abs(cosine_distance('[1e20,1e20,1e20]', '[-1e20,-1e20,-1e20]') - 2.0) < 1e-12;
select 'euclidean-huge', abs(euclidean_distance('[3e38,0]', '[-3e38,0]') / 6e38 - 1) < 1e-7;
select 'inner-product-huge', abs(inner_product('[3e38,3e38]', '[3e38,3e38]') / 1.8e77 - 1) < 1e-7;
select 'cosine-tiny', cosine_distance('[1e-30,0,0]', '[1,0,0]') = 0.0;
select 'euclidean-tiny', abs(euclidean_distance('[3e-30,0]', '[0,4e-30]') / 5e-30 - 1) < 1e-7;

-- vector_dims, vector_to_json, vector_from_json
select 'dims-json', vector_dims('[1,2,3]') = 3;
select 'dims-blob', vector_dims(x'0000803f00000040') = 2;
select 'dims-zeroblob', vector_dims(zeroblob(512)) = 128;
select 'dims-type', typeof(vector_dims('[1]')) = 'integer';
select 'to-json', vector_to_json(x'0000803f000000c0') = '[1,-2]';
select 'to-json-shortest', vector_to_json('[0.1, 3.5e-08, 1e30]') = '[0.1,3.5e-08,1e+30]';
select 'to-json-round-trip', vector_from_json(vector_to_json(x'cdcccc3dabaaaa3e')) = x'cdcccc3dabaaaa3e';
select 'to-json-negative-zero', vector_from_json(vector_to_json(x'00000080')) = x'00000080';
select 'from-json-blob-passthrough', vector_from_json(x'0000803f') = x'0000803f';
select 'from-json-type', typeof(vector_from_json('[1]')) = 'blob';

-- NULL in, NULL out
select 'null-euclidean-1', euclidean_distance(NULL, '[1]') is null;
select 'null-euclidean-2', euclidean_distance('[1]', NULL) is null;
select 'null-squared', euclidean_distance_squared(NULL, NULL) is null;
select 'null-cosine', cosine_distance(NULL, 1) is null;
select 'null-l2', euclidean_l2_distance(x'00', NULL) is null;
select 'null-inner', inner_product(NULL, '[1]') is null;
select 'null-dims', vector_dims(NULL) is null;
select 'null-to-json', vector_to_json(NULL) is null;
select 'null-from-json', vector_from_json(NULL) is null;

-- sqrt, facevec_version, facevec_isa
select 'sqrt-int', sqrt(16) = 4.0;
select 'sqrt-real', sqrt(2.25) = 1.5;
select 'sqrt-text', sqrt('9') = 3.0;
select 'sqrt-null', sqrt(NULL) is null;
select 'sqrt-negative', sqrt(-1) is null;
select 'sqrt-not-a-number', sqrt('abc') is null;
select 'version', facevec_version() glob '[0-9]*.[0-9]*.[0-9]*';
select 'isa', facevec_isa() in ('avx512', 'avx2', 'neon', 'scalar');

-- long vectors, built with a recursive CTE (4096 and 4099 elements)
create temp table big as
  with recursive c(i) as (select 1 union all select i + 1 from c where i < 4099)
  select '[' || group_concat(i % 7 - 3, ',') || ']' as a,
         '[' || group_concat(i % 5 - 2, ',') || ']' as b,
         '[' || group_concat(0.5, ',') || ']' as half,
         (select '[' || group_concat(i % 3, ',') || ']' from c where i <= 4096) as c4096
  from c;
select 'big-dims', vector_dims(a) = 4099 and vector_dims(c4096) = 4096 from big;
select 'big-self', euclidean_distance(a, a) = 0.0 from big;
select 'big-blob-json', euclidean_distance(vector_from_json(a), b) = euclidean_distance(a, b) from big;
select 'big-inner', inner_product(half, half) = 4099 * 0.25 from big;
select 'big-squared', euclidean_distance_squared(half, vector_from_json(half)) = 0.0 from big;

-- the query the extension exists for, over BLOBs at every byte offset in the page
create temp table face_meta (id integer primary key, pad text, img_name text, embedding blob);
insert into face_meta (pad, img_name, embedding) values
  ('', 'a.jpg', vector_from_json('[0,0,0,0,0,0,0,0,0,1]')),
  ('x', 'b.jpg', vector_from_json('[0,0,0,0,0,0,0,0,0,2]')),
  ('xx', 'c.jpg', vector_from_json('[0,0,0,0,0,0,0,0,0,3]')),
  ('xxx', 'd.jpg', vector_from_json('[0,0,0,0,0,0,0,0,0,4]')),
  ('xxxx', 'e.jpg', vector_from_json('[0,0,0,0,0,0,0,0,0,5]')),
  ('xxxxx', 'f.jpg', vector_from_json('[0,0,0,0,0,0,0,0,0,6]')),
  ('xxxxxx', 'g.jpg', vector_from_json('[0,0,0,0,0,0,0,0,0,7]'));
select 'order-by-limit', group_concat(img_name) = 'd.jpg,c.jpg,e.jpg' from
  (select img_name from face_meta order by euclidean_distance(embedding, '[0,0,0,0,0,0,0,0,0,3.9]') limit 3);
select 'misaligned-rows', sum(euclidean_distance(embedding, '[0,0,0,0,0,0,0,0,0,0]') = id) = 7 from face_meta;
select 'misaligned-json', count(*) = 7 from face_meta where vector_from_json(vector_to_json(embedding)) = embedding;
select 'misaligned-cosine', sum(abs(cosine_distance(embedding, '[0,0,0,0,0,0,0,0,0,1]')) < 1e-7) = 7 from face_meta;
select 'misaligned-substr', euclidean_distance(substr(cast(x'00' || vector_from_json('[3,4]') as blob), 2), '[0,0]') = 5.0;
