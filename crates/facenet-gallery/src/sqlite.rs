//! The SQLite store: one file, WAL journal, a busy timeout so that concurrent `facenet`
//! processes wait for each other instead of failing, and every write in a transaction.
//!
//! One file holds several galleries (the CLI uses [`DEFAULT_GALLERY`]; a service keeps one per
//! tenant) and the service's API keys. Schema version 3; a version-1 file (one gallery) is
//! migrated in one transaction when opened, its faces becoming the default gallery's, and a
//! version-2 file gains the change record.
//!
//! Every write records, in its own transaction, which identities it touched and a generation
//! number (table `changes`: one row per gallery and identity, its `seq` the generation of the
//! last write that touched it; the row of identity `''` stands for the settings), so that a
//! process holding a gallery in memory catches up with other processes by reading only those
//! identities ([`GalleryStore::changes`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::tenants::{ApiKey, DEFAULT_GALLERY, Role, Tenants, check_gallery_name};
use crate::{
    FaceRecord, GalleryError, GalleryStore, ImportBatch, ModelInfo, NewFace, Result, Settings,
    check_faces, check_identity_name, now,
};

const SCHEMA_VERSION: &str = "3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS galleries (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gallery_meta (
    gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (gallery_id, key)
);
CREATE TABLE IF NOT EXISTS identities (
    id         INTEGER PRIMARY KEY,
    gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created    INTEGER NOT NULL,
    UNIQUE (gallery_id, name)
);
CREATE TABLE IF NOT EXISTS faces (
    id          INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    embedding   BLOB NOT NULL,     -- little-endian f32
    dim         INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,     -- the model's weights fingerprint
    source      TEXT NOT NULL,
    x1 REAL, y1 REAL, x2 REAL, y2 REAL,
    created     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_identity ON faces(identity_id);
CREATE TABLE IF NOT EXISTS changes (
    gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    identity   TEXT NOT NULL,     -- '' = the gallery's settings
    seq        INTEGER NOT NULL,  -- the generation of the last write that touched it
    PRIMARY KEY (gallery_id, identity)
);
CREATE INDEX IF NOT EXISTS changes_seq ON changes(seq);
CREATE INDEX IF NOT EXISTS changes_gallery_seq ON changes(gallery_id, seq);
CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,  -- public id, inside the key
    hash       TEXT NOT NULL,     -- SHA-256 of the whole key, hex
    gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    label      TEXT NOT NULL,
    created    INTEGER NOT NULL
);
";

/// Version 1 (one gallery per file, its settings in `meta`) to version 2, in one transaction.
const MIGRATE_1_TO_2: &str = "
CREATE TABLE galleries (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL
);
INSERT INTO galleries(id, name, created) VALUES (1, 'default', strftime('%s', 'now'));
CREATE TABLE gallery_meta (
    gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (gallery_id, key)
);
INSERT INTO gallery_meta(gallery_id, key, value)
    SELECT 1, key, value FROM meta WHERE key <> 'schema_version';
DELETE FROM meta WHERE key <> 'schema_version';
CREATE TABLE identities_v2 (
    id         INTEGER PRIMARY KEY,
    gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created    INTEGER NOT NULL,
    UNIQUE (gallery_id, name)
);
INSERT INTO identities_v2(id, gallery_id, name, created) SELECT id, 1, name, created FROM identities;
DROP TABLE identities;
ALTER TABLE identities_v2 RENAME TO identities;
UPDATE meta SET value = '2' WHERE key = 'schema_version';
";

/// The file and its one connection, shared by the galleries opened from it.
#[derive(Debug)]
struct Db {
    conn: Mutex<Connection>,
    path: String,
    file: Option<PathBuf>,
}

/// One gallery of an SQLite store. One connection per file, behind a mutex, shared by the
/// gallery handles opened from it ([`SqliteGallery::gallery`]): the store is shared by
/// threads (a service's handlers), and SQLite serialises writers anyway; other processes wait
/// for each other through the busy timeout.
#[derive(Debug, Clone)]
pub struct SqliteGallery {
    db: Arc<Db>,
    gallery: i64,
    name: String,
}

impl SqliteGallery {
    /// Opens (creating if needed) a store file, at its default gallery.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| GalleryError::Corrupt {
                path: name.clone(),
                reason: format!("cannot create its folder: {e}"),
            })?;
        }
        let conn = Connection::open(path).map_err(|source| GalleryError::Sqlite {
            path: name.clone(),
            source,
        })?;
        Self::init(conn, name, Some(path.to_path_buf()))
    }

    /// Opens an existing store file; a missing file is an error (for read-only commands).
    pub fn open_existing(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(GalleryError::Missing(path.display().to_string()));
        }
        Self::open(path)
    }

    /// An in-memory store (tests, one-off runs).
    pub fn in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(|source| GalleryError::Sqlite {
            path: ":memory:".into(),
            source,
        })?;
        Self::init(conn, ":memory:".into(), None)
    }

    /// Another gallery of the same store (created, empty, if new), sharing the connection.
    pub fn gallery(&self, name: &str) -> Result<Self> {
        check_gallery_name(name)?;
        let conn = self.conn();
        let id = gallery_id(&conn, name, true).map_err(|e| self.err(e))?;
        Ok(Self {
            db: self.db.clone(),
            gallery: id.expect("created"),
            name: name.into(),
        })
    }

    /// The store's file (None in memory).
    pub fn file(&self) -> Option<&Path> {
        self.db.file.as_deref()
    }

    /// This gallery's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn init(mut conn: Connection, path: String, file: Option<PathBuf>) -> Result<Self> {
        let not_gallery = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                GalleryError::Corrupt {
                    path: path.clone(),
                    reason: format!("not a facenet gallery (SQLite says: {e})"),
                }
            }
            _ => sqlite_error(path.clone(), e),
        };
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(not_gallery)?;
        // journal_mode returns a row; in-memory databases answer "memory".
        let _: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(not_gallery)?;
        // Foreign keys stay off while a migration rebuilds a table they point at.
        conn.execute_batch("PRAGMA foreign_keys=OFF;")
            .map_err(not_gallery)?;
        let default = {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(not_gallery)?;
            let has_meta: bool = tx
                .query_row(
                    "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                    [],
                    |r| r.get(0),
                )
                .map_err(not_gallery)?;
            let version: Option<String> = if has_meta {
                tx.query_row(
                    "SELECT value FROM meta WHERE key = 'schema_version'",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(not_gallery)?
            } else {
                None
            };
            match version.as_deref() {
                Some("1") => {
                    tx.execute_batch(MIGRATE_1_TO_2)
                        .map_err(|e| GalleryError::Corrupt {
                            path: path.clone(),
                            reason: format!("migrating schema version 1 to 2 failed: {e}"),
                        })?
                }
                // Version 2 to 3 only adds the change record (SCHEMA below creates it).
                None | Some("2") | Some(SCHEMA_VERSION) => {}
                Some(v) => {
                    return Err(GalleryError::Corrupt {
                        path: path.clone(),
                        reason: format!(
                            "schema version {v}, this facenet reads up to {SCHEMA_VERSION}: \
                             use a newer facenet"
                        ),
                    });
                }
            }
            tx.execute_batch(SCHEMA).map_err(not_gallery)?;
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [SCHEMA_VERSION],
            )
            .map_err(not_gallery)?;
            let default = gallery_id(&tx, DEFAULT_GALLERY, true)
                .map_err(not_gallery)?
                .expect("created");
            tx.commit().map_err(not_gallery)?;
            default
        };
        conn.execute_batch("PRAGMA foreign_keys=ON;")
            .map_err(not_gallery)?;
        let db = Arc::new(Db {
            conn: Mutex::new(conn),
            path,
            file,
        });
        Ok(Self {
            db,
            gallery: default,
            name: DEFAULT_GALLERY.into(),
        })
    }

    /// The connection. A panic while it was held cannot leave it half-written (every write is
    /// a transaction that rolls back when dropped), so a poisoned lock is taken over.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> GalleryError {
        sqlite_error(GalleryStore::location(self), source)
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT value FROM gallery_meta WHERE gallery_id = ?1 AND key = ?2",
                params![self.gallery, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// A write transaction (the write lock taken at once).
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Adds faces to an identity (created if new) inside `tx`, after the model check; each
    /// face enrolled at `times[i]`.
    fn enroll_tx(
        &self,
        tx: &Transaction<'_>,
        identity: &str,
        faces: &[NewFace],
        times: &[i64],
        model: &ModelInfo,
    ) -> Result<Vec<i64>> {
        check_identity_name(identity)?;
        check_faces(faces, model)?;
        let err = |e| self.err(e);
        let get = |k: &str| -> rusqlite::Result<Option<String>> {
            tx.query_row(
                "SELECT value FROM gallery_meta WHERE gallery_id = ?1 AND key = ?2",
                params![self.gallery, k],
                |r| r.get(0),
            )
            .optional()
        };
        if let (Some(fp), Some(dim)) = (
            get("model_fingerprint").map_err(err)?,
            get("model_dim").map_err(err)?,
        ) && (fp != model.fingerprint || dim != model.dim.to_string())
        {
            return Err(GalleryError::ModelMismatch {
                gallery: fp.chars().take(12).collect(),
                gallery_dim: dim.parse().unwrap_or(0),
                given: model.short(),
                given_dim: model.dim,
            });
        }
        for (k, v) in [
            ("model_fingerprint", model.fingerprint.clone()),
            ("model_dim", model.dim.to_string()),
        ] {
            tx.execute(
                "INSERT INTO gallery_meta(gallery_id, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(gallery_id, key) DO UPDATE SET value = excluded.value",
                params![self.gallery, k, v],
            )
            .map_err(err)?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO identities(gallery_id, name, created) VALUES (?1, ?2, ?3)",
            params![self.gallery, identity, now()],
        )
        .map_err(err)?;
        let id = self.identity_id(tx, identity)?.expect("inserted");
        self.touch(tx, &[identity])?;
        let mut ids = Vec::with_capacity(faces.len());
        for (f, created) in faces.iter().zip(times) {
            let b = f.bbox.map(|b| b.map(|v| v as f64));
            tx.execute(
                "INSERT INTO faces(identity_id, embedding, dim, fingerprint, source, x1, y1, x2, y2, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    id,
                    to_blob(&f.embedding),
                    model.dim as i64,
                    model.fingerprint,
                    f.source,
                    b.map(|b| b[0]),
                    b.map(|b| b[1]),
                    b.map(|b| b[2]),
                    b.map(|b| b[3]),
                    created
                ],
            )
            .map_err(err)?;
            ids.push(tx.last_insert_rowid());
        }
        Ok(ids)
    }

    /// Records inside `tx` that it touches `identities` (`""`: the settings): each gets the
    /// next generation of the file.
    fn touch(&self, tx: &Transaction<'_>, identities: &[&str]) -> Result<()> {
        for name in identities {
            tx.execute(
                "INSERT INTO changes(gallery_id, identity, seq)
                 VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM changes))
                 ON CONFLICT(gallery_id, identity) DO UPDATE SET seq = excluded.seq",
                params![self.gallery, name],
            )
            .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn identity_id(&self, conn: &Connection, name: &str) -> Result<Option<i64>> {
        conn.query_row(
            "SELECT id FROM identities WHERE gallery_id = ?1 AND name = ?2",
            params![self.gallery, name],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.err(e))
    }
}

/// A SQLite error of the file at `path`; a full or failing disk says so.
pub(crate) fn sqlite_error(path: String, source: rusqlite::Error) -> GalleryError {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure) => {
            GalleryError::Io {
                path,
                source: std::io::Error::other(format!(
                    "{source}: the disk is full or failing (nothing was written; the gallery \
                     is as it was)"
                )),
            }
        }
        _ => GalleryError::Sqlite { path, source },
    }
}

/// The id of a gallery, inserted first if `create`.
fn gallery_id(conn: &Connection, name: &str, create: bool) -> rusqlite::Result<Option<i64>> {
    if create {
        conn.execute(
            "INSERT OR IGNORE INTO galleries(name, created) VALUES (?1, ?2)",
            params![name, now()],
        )?;
    }
    conn.query_row("SELECT id FROM galleries WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
}

pub(crate) fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn face_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FaceRecord> {
    let bbox = match (
        r.get::<_, Option<f64>>(4)?,
        r.get::<_, Option<f64>>(5)?,
        r.get::<_, Option<f64>>(6)?,
        r.get::<_, Option<f64>>(7)?,
    ) {
        (Some(a), Some(b), Some(c), Some(d)) => Some([a as f32, b as f32, c as f32, d as f32]),
        _ => None,
    };
    Ok(FaceRecord {
        id: r.get(0)?,
        identity: r.get(1)?,
        embedding: from_blob(&r.get::<_, Vec<u8>>(2)?),
        source: r.get(3)?,
        bbox,
        created: r.get(8)?,
    })
}

const FACE_COLUMNS: &str = "f.id, i.name, f.embedding, f.source, f.x1, f.y1, f.x2, f.y2, f.created";

impl GalleryStore for SqliteGallery {
    fn location(&self) -> String {
        if self.name == DEFAULT_GALLERY {
            self.db.path.clone()
        } else {
            format!("{} (gallery {})", self.db.path, self.name)
        }
    }

    fn ann_path(&self) -> Option<PathBuf> {
        let file = self.db.file.as_ref()?;
        Some(if self.name == DEFAULT_GALLERY {
            file.with_extension("ann")
        } else {
            file.with_extension(format!("{}.ann", self.name))
        })
    }

    fn model(&self) -> Result<Option<ModelInfo>> {
        let fp = self.setting("model_fingerprint")?;
        let dim = self.setting("model_dim")?;
        Ok(match (fp, dim) {
            (Some(fingerprint), Some(dim)) => Some(ModelInfo {
                fingerprint,
                dim: dim.parse().map_err(|_| GalleryError::Corrupt {
                    path: GalleryStore::location(self),
                    reason: format!("model_dim `{dim}` is not a number"),
                })?,
            }),
            _ => None,
        })
    }

    fn enroll(&self, identity: &str, faces: &[NewFace], model: &ModelInfo) -> Result<Vec<i64>> {
        // IMMEDIATE: the write lock is taken before the model is read, so two processes
        // cannot both find the gallery empty and store different models.
        let times = vec![now(); faces.len()];
        self.write(|tx| self.enroll_tx(tx, identity, faces, &times, model))
    }

    fn import(&self, batch: &ImportBatch) -> Result<usize> {
        self.write(|tx| {
            let mut n = 0;
            for (name, faces, times) in &batch.identities {
                match &batch.model {
                    Some(m) if !faces.is_empty() => {
                        n += self.enroll_tx(tx, name, faces, times, m)?.len();
                    }
                    _ => {
                        check_identity_name(name)?;
                        tx.execute(
                            "INSERT OR IGNORE INTO identities(gallery_id, name, created)
                             VALUES (?1, ?2, ?3)",
                            params![self.gallery, name, now()],
                        )
                        .map_err(|e| self.err(e))?;
                        self.touch(tx, &[name])?;
                    }
                }
            }
            Ok(n)
        })
    }

    fn create_identity(&self, identity: &str) -> Result<()> {
        check_identity_name(identity)?;
        self.write(|tx| {
            if self.identity_id(tx, identity)?.is_some() {
                return Err(GalleryError::NameTaken(identity.into()));
            }
            tx.execute(
                "INSERT INTO identities(gallery_id, name, created) VALUES (?1, ?2, ?3)",
                params![self.gallery, identity, now()],
            )
            .map_err(|e| self.err(e))?;
            self.touch(tx, &[identity])
        })
    }

    fn identities(&self) -> Result<Vec<(String, usize)>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT i.name, COUNT(f.id) FROM identities i LEFT JOIN faces f ON f.identity_id = i.id
                 WHERE i.gallery_id = ?1 GROUP BY i.id ORDER BY i.name",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([self.gallery], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    fn faces(&self, identity: Option<&str>) -> Result<Vec<FaceRecord>> {
        let conn = self.conn();
        if let Some(name) = identity
            && self.identity_id(&conn, name)?.is_none()
        {
            return Err(GalleryError::UnknownIdentity(name.into()));
        }
        let mut st = conn
            .prepare(&format!(
                "SELECT {FACE_COLUMNS} FROM faces f JOIN identities i ON i.id = f.identity_id
                 WHERE i.gallery_id = ?1 AND (?2 IS NULL OR i.name = ?2) ORDER BY i.name, f.id"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![self.gallery, identity], face_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    fn identities_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<(String, usize)>, usize)> {
        let conn = self.conn();
        let err = |e| self.err(e);
        let total: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM identities WHERE gallery_id = ?1",
                [self.gallery],
                |r| r.get(0),
            )
            .map_err(err)?;
        let mut st = conn
            .prepare(
                "SELECT i.name, (SELECT COUNT(*) FROM faces f WHERE f.identity_id = i.id)
                 FROM identities i WHERE i.gallery_id = ?1 ORDER BY i.name LIMIT ?2 OFFSET ?3",
            )
            .map_err(err)?;
        let rows = st
            .query_map(params![self.gallery, limit as i64, offset as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
            })
            .map_err(err)?;
        let page = rows.collect::<std::result::Result<_, _>>().map_err(err)?;
        Ok((page, total as usize))
    }

    fn faces_page(
        &self,
        identity: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<FaceRecord>, usize)> {
        let conn = self.conn();
        let err = |e| self.err(e);
        if let Some(name) = identity
            && self.identity_id(&conn, name)?.is_none()
        {
            return Err(GalleryError::UnknownIdentity(name.into()));
        }
        let filter = "FROM faces f JOIN identities i ON i.id = f.identity_id
                      WHERE i.gallery_id = ?1 AND (?2 IS NULL OR i.name = ?2)";
        let total: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) {filter}"),
                params![self.gallery, identity],
                |r| r.get(0),
            )
            .map_err(err)?;
        let mut st = conn
            .prepare(&format!(
                "SELECT {FACE_COLUMNS} {filter} ORDER BY i.name, f.id LIMIT ?3 OFFSET ?4"
            ))
            .map_err(err)?;
        let rows = st
            .query_map(
                params![self.gallery, identity, limit as i64, offset as i64],
                face_row,
            )
            .map_err(err)?;
        let page = rows.collect::<std::result::Result<_, _>>().map_err(err)?;
        Ok((page, total as usize))
    }

    fn remove(&self, identity: &str) -> Result<usize> {
        let err = |e| self.err(e);
        self.write(|tx| {
            let id = self
                .identity_id(tx, identity)?
                .ok_or_else(|| GalleryError::UnknownIdentity(identity.into()))?;
            let n = tx
                .execute("DELETE FROM faces WHERE identity_id = ?1", [id])
                .map_err(err)?;
            tx.execute("DELETE FROM identities WHERE id = ?1", [id])
                .map_err(err)?;
            self.touch(tx, &[identity])?;
            Ok(n)
        })
    }

    fn remove_face(&self, id: i64) -> Result<FaceRecord> {
        self.write(|tx| {
            let face = tx
                .query_row(
                    &format!(
                        "SELECT {FACE_COLUMNS} FROM faces f JOIN identities i ON i.id = f.identity_id
                         WHERE f.id = ?1 AND i.gallery_id = ?2"
                    ),
                    params![id, self.gallery],
                    face_row,
                )
                .optional()
                .map_err(|e| self.err(e))?
                .ok_or(GalleryError::UnknownFace(id))?;
            tx.execute("DELETE FROM faces WHERE id = ?1", [id])
                .map_err(|e| self.err(e))?;
            self.touch(tx, &[&face.identity])?;
            Ok(face)
        })
    }

    fn rename(&self, old: &str, new: &str) -> Result<()> {
        check_identity_name(new)?;
        self.write(|tx| {
            let id = self
                .identity_id(tx, old)?
                .ok_or_else(|| GalleryError::UnknownIdentity(old.into()))?;
            if self.identity_id(tx, new)?.is_some() {
                return Err(GalleryError::NameTaken(new.into()));
            }
            tx.execute(
                "UPDATE identities SET name = ?1 WHERE id = ?2",
                params![new, id],
            )
            .map_err(|e| self.err(e))?;
            self.touch(tx, &[old, new])
        })
    }

    fn settings(&self) -> Result<Settings> {
        let corrupt = |key: &str, v: &str| GalleryError::Corrupt {
            path: GalleryStore::location(self),
            reason: format!(
                "the stored {key} `{}` is unreadable",
                v.chars().take(40).collect::<String>()
            ),
        };
        let threshold = match self.setting("threshold")? {
            Some(v) => Some(v.parse().map_err(|_| corrupt("threshold", &v))?),
            None => None,
        };
        let target_fir = match self.setting("target_fir")? {
            Some(v) => Some(v.parse().map_err(|_| corrupt("target_fir", &v))?),
            None => None,
        };
        let impostor = match self.setting("impostor_table")? {
            Some(v) => Some(serde_json::from_str(&v).map_err(|_| corrupt("impostor_table", &v))?),
            None => None,
        };
        let cohort = match self.setting("cohort_table")? {
            Some(v) => Some(serde_json::from_str(&v).map_err(|_| corrupt("cohort_table", &v))?),
            None => None,
        };
        Ok(Settings {
            threshold,
            target_fir,
            impostor,
            cohort,
        })
    }

    fn set_settings(&self, settings: &Settings) -> Result<()> {
        settings.check()?;
        fn encode<T: serde::Serialize>(what: &str, t: Option<&T>) -> Result<Option<String>> {
            t.map(|t| {
                serde_json::to_string(t)
                    .map_err(|e| GalleryError::Invalid(format!("cannot encode the {what}: {e}")))
            })
            .transpose()
        }
        let impostor = encode("impostor table", settings.impostor.as_ref())?;
        let cohort = encode("cohort table", settings.cohort.as_ref())?;
        let values = [
            ("threshold", settings.threshold.map(|t| t.to_string())),
            ("target_fir", settings.target_fir.map(|f| f.to_string())),
            ("impostor_table", impostor),
            ("cohort_table", cohort),
        ];
        self.write(|tx| {
            for (key, value) in values {
                match value {
                    Some(v) => tx.execute(
                        "INSERT INTO gallery_meta(gallery_id, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT(gallery_id, key) DO UPDATE SET value = excluded.value",
                        params![self.gallery, key, v],
                    ),
                    None => tx.execute(
                        "DELETE FROM gallery_meta WHERE gallery_id = ?1 AND key = ?2",
                        params![self.gallery, key],
                    ),
                }
                .map_err(|e| self.err(e))?;
            }
            self.touch(tx, &[""])
        })
    }

    fn changes(&self, since: i64) -> Result<Option<crate::Changes>> {
        let conn = self.conn();
        let err = |e| self.err(e);
        let generation: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM changes WHERE gallery_id = ?1",
                [self.gallery],
                |r| r.get(0),
            )
            .map_err(err)?;
        let mut changes = crate::Changes {
            generation,
            ..Default::default()
        };
        if generation > since {
            let mut st = conn
                .prepare_cached(
                    "SELECT identity FROM changes WHERE gallery_id = ?1 AND seq > ?2 ORDER BY identity",
                )
                .map_err(err)?;
            let rows = st
                .query_map(params![self.gallery, since], |r| r.get::<_, String>(0))
                .map_err(err)?;
            for name in rows {
                let name = name.map_err(err)?;
                if name.is_empty() {
                    changes.settings = true;
                } else {
                    changes.identities.push(name);
                }
            }
        }
        Ok(Some(changes))
    }
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ApiKey, String, String)> {
    let role: String = r.get(2)?;
    Ok((
        ApiKey {
            id: r.get(0)?,
            gallery: r.get(1)?,
            role: Role::Read,
            label: r.get(3)?,
            created: r.get(4)?,
        },
        role,
        r.get(5)?,
    ))
}

impl SqliteGallery {
    fn keys_where(&self, filter: &str, arg: Option<&str>) -> Result<Vec<(ApiKey, String)>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(&format!(
                "SELECT k.id, g.name, k.role, k.label, k.created, k.hash
                 FROM api_keys k JOIN galleries g ON g.id = k.gallery_id {filter}
                 ORDER BY g.name, k.id"
            ))
            .map_err(|e| self.err(e))?;
        let rows = match arg {
            Some(a) => st.query_map([a], key_row),
            None => st.query_map([], key_row),
        }
        .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (mut key, role, hash) = row.map_err(|e| self.err(e))?;
            key.role = Role::parse(&role)?;
            out.push((key, hash));
        }
        Ok(out)
    }
}

impl Tenants for SqliteGallery {
    fn location(&self) -> String {
        self.db.path.clone()
    }

    fn gallery(&self, name: &str) -> Result<Arc<dyn GalleryStore>> {
        Ok(Arc::new(SqliteGallery::gallery(self, name)?))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn galleries(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT name FROM galleries ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = st.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    fn insert_key(&self, key: &ApiKey, hash: &str) -> Result<()> {
        check_gallery_name(&key.gallery)?;
        self.write(|tx| {
            let gallery = gallery_id(tx, &key.gallery, true)
                .map_err(|e| self.err(e))?
                .expect("created");
            tx.execute(
                "INSERT INTO api_keys(id, hash, gallery_id, role, label, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    key.id,
                    hash,
                    gallery,
                    key.role.as_str(),
                    key.label,
                    key.created
                ],
            )
            .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    fn key(&self, id: &str) -> Result<Option<(ApiKey, String)>> {
        Ok(self.keys_where("WHERE k.id = ?1", Some(id))?.pop())
    }

    fn keys(&self) -> Result<Vec<ApiKey>> {
        Ok(self
            .keys_where("", None)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    fn revoke_key(&self, id: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx
                .execute("DELETE FROM api_keys WHERE id = ?1", [id])
                .map_err(|e| self.err(e))?
                > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store_tests::{face, model};

    /// Every store test, on a file (two handles = two processes) and in memory.
    #[test]
    fn sqlite_passes_the_store_tests() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        crate::store_tests::all(&|| {
            let path = dir.path().join(format!(
                "g{}.db",
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            Box::new(move || Arc::new(SqliteGallery::open(&path).unwrap()))
        });
        crate::store_tests::enroll_list_show_rename_remove(&|| {
            Arc::new(SqliteGallery::in_memory().unwrap())
        });
    }

    #[test]
    fn transaction_rolls_back_on_a_database_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let g = SqliteGallery::open(&path).unwrap();
        g.enroll("ada", &[face(1.0, 0.0, "a.jpg")], &model())
            .unwrap();
        // Make every face insert fail inside the transaction, after the identity insert.
        g.conn()
            .execute_batch(
                "CREATE TRIGGER no_faces BEFORE INSERT ON faces BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
            )
            .unwrap();
        assert!(
            g.enroll("zed", &[face(0.0, 1.0, "z.jpg")], &model())
                .is_err()
        );
        drop(g);
        let g = SqliteGallery::open(&path).unwrap();
        assert_eq!(g.identities().unwrap(), vec![("ada".into(), 1)]);
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.db");
        std::fs::write(&path, b"this is not a database, just some bytes........").unwrap();
        let e = SqliteGallery::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("junk.db") && e.contains("not a facenet gallery"),
            "{e}"
        );
    }

    /// A schema-1 file (one gallery per file) opens as the default gallery of a schema-2 store,
    /// with its faces, model and settings.
    #[test]
    fn version_1_file_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE identities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created INTEGER NOT NULL);
                 CREATE TABLE faces (id INTEGER PRIMARY KEY,
                     identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
                     embedding BLOB NOT NULL, dim INTEGER NOT NULL, fingerprint TEXT NOT NULL,
                     source TEXT NOT NULL, x1 REAL, y1 REAL, x2 REAL, y2 REAL, created INTEGER NOT NULL);
                 INSERT INTO meta VALUES ('schema_version', '1'), ('model_fingerprint', 'abc123'),
                     ('model_dim', '2'), ('threshold', '0.8');
                 INSERT INTO identities VALUES (7, 'ada', 1);
                 INSERT INTO faces VALUES (3, 7, x'0000803f00000000', 2, 'abc123', 'a.jpg', 1, 2, 3, 4, 1);",
            )
            .unwrap();
        }
        let g = SqliteGallery::open(&path).unwrap();
        assert_eq!(g.model().unwrap(), Some(model()));
        assert_eq!(g.settings().unwrap().threshold, Some(0.8));
        let faces = g.faces(Some("ada")).unwrap();
        assert_eq!(
            (faces[0].id, faces[0].embedding.clone()),
            (3, vec![1.0, 0.0])
        );
        g.enroll("ada", &[face(0.0, 1.0, "b.jpg")], &model())
            .unwrap();
        // Foreign keys still cascade after the rebuilt table.
        assert_eq!(g.remove("ada").unwrap(), 2);
        assert_eq!(
            g.conn()
                .query_row("SELECT COUNT(*) FROM faces", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            0
        );
        drop(g);
        // A file from a newer facenet is refused, naming the version.
        let c = Connection::open(&path).unwrap();
        c.execute(
            "UPDATE meta SET value = '9' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        drop(c);
        let e = SqliteGallery::open(&path).unwrap_err().to_string();
        assert!(e.contains("schema version 9"), "{e}");
    }
}
