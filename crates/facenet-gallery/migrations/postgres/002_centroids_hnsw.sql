-- facenet gallery schema, version 2: each subject's centroid (the normalized mean of its unit
-- embeddings) kept beside it, so that the centroid rule reads one row per subject and can be
-- indexed; the parameters of a gallery's HNSW indexes (`facenet gallery index`).
ALTER TABLE subjects ADD COLUMN centroid vector;
UPDATE subjects s SET centroid = c.v
  FROM (SELECT subject_id, l2_normalize(avg(embedding)) AS v FROM faces GROUP BY subject_id) c
  WHERE c.subject_id = s.id;
ALTER TABLE galleries ADD COLUMN hnsw TEXT;   -- JSON {m, ef_construction, ef_search}, or NULL
