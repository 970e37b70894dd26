-- facenet gallery schema, version 1 (PostgreSQL 13+ with pgvector).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE galleries (
    id                BIGSERIAL PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    created           BIGINT NOT NULL,
    model_fingerprint TEXT,              -- the weights whose embeddings it holds
    model_dim         INTEGER,
    settings          TEXT NOT NULL DEFAULT '{}'   -- thresholds, target FIR, impostor table (JSON)
);

CREATE TABLE subjects (
    id         BIGSERIAL PRIMARY KEY,
    gallery_id BIGINT NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created    BIGINT NOT NULL,
    UNIQUE (gallery_id, name)
);

CREATE TABLE faces (
    id          BIGSERIAL PRIMARY KEY,
    subject_id  BIGINT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    gallery_id  BIGINT NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    embedding   vector NOT NULL,       -- unit-length embedding
    fingerprint TEXT NOT NULL,
    source      TEXT NOT NULL,
    x1 REAL, y1 REAL, x2 REAL, y2 REAL,
    created     BIGINT NOT NULL
);
CREATE INDEX faces_subject ON faces(subject_id);
CREATE INDEX faces_gallery ON faces(gallery_id);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,         -- public id, inside the key
    hash       TEXT NOT NULL,            -- SHA-256 of the whole key, hex
    gallery_id BIGINT NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    label      TEXT NOT NULL,
    created    BIGINT NOT NULL
);
