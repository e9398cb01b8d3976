-- facevec error battery: each statement must fail with the message in its comment.
select euclidean_distance(1, '[1]'); -- euclidean_distance: argument 1 must be a float32 vector BLOB or a JSON array TEXT, found INTEGER
select euclidean_distance('[1]', 2.5); -- euclidean_distance: argument 2 must be a float32 vector BLOB or a JSON array TEXT, found REAL
select euclidean_distance_squared(x'', '[1]'); -- euclidean_distance_squared: argument 1 is an empty BLOB, expected float32 values
select cosine_distance(zeroblob(13), '[1]'); -- cosine_distance: argument 1: invalid float32 vector BLOB length, must be divisible by 4, found 13 bytes
select euclidean_l2_distance('[1]', x'000000'); -- euclidean_l2_distance: argument 2: invalid float32 vector BLOB length, must be divisible by 4, found 3 bytes
select inner_product('[1,2', '[1]'); -- inner_product: argument 1: malformed JSON array of numbers at character 4
select inner_product('[1]', '[1,,2]'); -- inner_product: argument 2: malformed JSON array of numbers at character 3
select vector_dims('[NaN]'); -- vector_dims: argument 1: malformed JSON array of numbers at character 1
select vector_dims('{"a": [1]}'); -- vector_dims: argument 1: malformed JSON array of numbers at character 0
select vector_dims(''); -- vector_dims: argument 1: malformed JSON array of numbers at character 0
select vector_dims('[1] x'); -- vector_dims: argument 1: malformed JSON array of numbers at character 4
select vector_from_json('[]'); -- vector_from_json: argument 1 is an empty JSON array
select vector_from_json('[1, 1e39]'); -- vector_from_json: argument 1: number out of float32 range at character 4
select vector_to_json(7); -- vector_to_json: argument 1 must be a float32 vector BLOB or a JSON array TEXT, found INTEGER
select euclidean_distance('[1,2,3]', '[1,2]'); -- euclidean_distance: vectors have different dimensions: 3 and 2
select cosine_distance('[0,0]', '[1,2]'); -- cosine_distance: undefined for a vector whose norm is 0
select euclidean_l2_distance('[1,2]', x'0000000000000080'); -- euclidean_l2_distance: undefined for a vector whose norm is 0
select euclidean_distance(x'0000c07f', '[1]'); -- euclidean_distance: result is NaN: a vector holds NaN or infinity
select inner_product(x'0000807f00000000', '[0,1]'); -- inner_product: result is NaN: a vector holds NaN or infinity
select vector_to_json(x'0000803f0000c07f'); -- vector_to_json: element 1 is NaN, which JSON cannot represent
select vector_to_json(x'000080ff'); -- vector_to_json: element 0 is infinite, which JSON cannot represent
