-- The photo library of each gallery: photos, every face of every photo, people, and the
-- user's "not this person". Embeddings are real[] (they are compared in the process).
-- Idempotent (IF NOT EXISTS), as a database rolled back to an earlier schema version may
-- still hold these tables.
CREATE TABLE IF NOT EXISTS library_meta (
    gallery_id BIGINT NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (gallery_id, key)
);
CREATE TABLE IF NOT EXISTS library_photos (
    id         BIGSERIAL PRIMARY KEY,
    gallery_id BIGINT NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    mtime      BIGINT NOT NULL,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    added      BIGINT NOT NULL,
    error      TEXT,
    UNIQUE (gallery_id, path),
    UNIQUE (gallery_id, hash)
);
CREATE TABLE IF NOT EXISTS library_people (
    id         BIGSERIAL PRIMARY KEY,
    gallery_id BIGINT NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    name       TEXT,
    created    BIGINT NOT NULL,
    UNIQUE (gallery_id, name)
);
CREATE TABLE IF NOT EXISTS library_faces (
    id        BIGSERIAL PRIMARY KEY,
    photo_id  BIGINT NOT NULL REFERENCES library_photos(id) ON DELETE CASCADE,
    idx       INTEGER NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    score     REAL NOT NULL,
    landmarks REAL[] NOT NULL,
    quality   REAL NOT NULL,
    embedding REAL[],
    person_id BIGINT REFERENCES library_people(id) ON DELETE SET NULL,
    pinned    BOOLEAN NOT NULL DEFAULT false,
    UNIQUE (photo_id, idx)
);
CREATE INDEX IF NOT EXISTS library_faces_person ON library_faces(person_id);
CREATE TABLE IF NOT EXISTS library_rejects (
    face_id   BIGINT NOT NULL REFERENCES library_faces(id) ON DELETE CASCADE,
    person_id BIGINT NOT NULL REFERENCES library_people(id) ON DELETE CASCADE,
    PRIMARY KEY (face_id, person_id)
);
