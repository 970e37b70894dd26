//! The SQLite gallery: one file, WAL journal, a busy timeout so that concurrent `facenet`
//! processes wait for each other instead of failing, and every write in a transaction.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{
    FaceRecord, GalleryError, GalleryStore, ModelInfo, NewFace, Result, Settings, check_faces,
};

const SCHEMA_VERSION: &str = "1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identities (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL
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
";

/// A gallery in one SQLite file. One connection, behind a mutex: the store is shared by
/// threads (a service's handlers), and SQLite serialises writers anyway; other processes
/// wait for each other through the busy timeout.
#[derive(Debug)]
pub struct SqliteGallery {
    conn: Mutex<Connection>,
    path: String,
    file: Option<PathBuf>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl SqliteGallery {
    /// Opens (creating if needed) a gallery file.
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

    /// Opens an existing gallery file; a missing file is an error (for read-only commands).
    pub fn open_existing(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(GalleryError::Missing(path.display().to_string()));
        }
        Self::open(path)
    }

    /// An in-memory gallery (tests, one-off runs).
    pub fn in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(|source| GalleryError::Sqlite {
            path: ":memory:".into(),
            source,
        })?;
        Self::init(conn, ":memory:".into(), None)
    }

    fn init(conn: Connection, path: String, file: Option<PathBuf>) -> Result<Self> {
        let not_gallery = |e: rusqlite::Error| GalleryError::Corrupt {
            path: path.clone(),
            reason: format!("not a facenet gallery (SQLite says: {e})"),
        };
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(not_gallery)?;
        // journal_mode returns a row; in-memory databases answer "memory".
        let _: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(not_gallery)?;
        conn.execute_batch("PRAGMA foreign_keys=ON;")
            .map_err(not_gallery)?;
        conn.execute_batch(SCHEMA).map_err(not_gallery)?;
        let g = Self {
            conn: Mutex::new(conn),
            path,
            file,
        };
        match g.setting("schema_version")? {
            None => {
                g.conn()
                    .execute(
                        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?1)",
                        [SCHEMA_VERSION],
                    )
                    .map_err(|e| g.err(e))?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(GalleryError::Corrupt {
                    path: g.path.clone(),
                    reason: format!("schema version {v}, this facenet reads {SCHEMA_VERSION}"),
                });
            }
        }
        Ok(g)
    }

    /// The connection. A panic while it was held cannot leave it half-written (every write is
    /// a transaction that rolls back when dropped), so a poisoned lock is taken over.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> GalleryError {
        GalleryError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        self.conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| GalleryError::Corrupt {
                path: self.path.clone(),
                reason: format!("not a facenet gallery (SQLite says: {e})"),
            })
    }
}

fn identity_id(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT id FROM identities WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(GalleryError::Invalid(
            "an identity name must not be empty".into(),
        ));
    }
    Ok(())
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl GalleryStore for SqliteGallery {
    fn location(&self) -> String {
        self.path.clone()
    }

    fn ann_path(&self) -> Option<PathBuf> {
        self.file.as_ref().map(|f| f.with_extension("ann"))
    }

    fn model(&self) -> Result<Option<ModelInfo>> {
        let fp = self.setting("model_fingerprint")?;
        let dim = self.setting("model_dim")?;
        Ok(match (fp, dim) {
            (Some(fingerprint), Some(dim)) => Some(ModelInfo {
                fingerprint,
                dim: dim.parse().map_err(|_| GalleryError::Corrupt {
                    path: self.path.clone(),
                    reason: format!("model_dim `{dim}` is not a number"),
                })?,
            }),
            _ => None,
        })
    }

    fn enroll(&self, identity: &str, faces: &[NewFace], model: &ModelInfo) -> Result<usize> {
        check_name(identity)?;
        check_faces(faces, model)?;
        let mut conn = self.conn();
        let err = |source| GalleryError::Sqlite {
            path: self.path.clone(),
            source,
        };
        // IMMEDIATE: the write lock is taken before the model is read, so two processes
        // cannot both find the gallery empty and store different models.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let get = |k: &str| -> rusqlite::Result<Option<String>> {
            tx.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
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
                "INSERT INTO meta(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![k, v],
            )
            .map_err(err)?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO identities(name, created) VALUES (?1, ?2)",
            params![identity, now()],
        )
        .map_err(err)?;
        let id: i64 = tx
            .query_row(
                "SELECT id FROM identities WHERE name = ?1",
                [identity],
                |r| r.get(0),
            )
            .map_err(err)?;
        for f in faces {
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
                    now()
                ],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(faces.len())
    }

    fn identities(&self) -> Result<Vec<(String, usize)>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT i.name, COUNT(f.id) FROM identities i LEFT JOIN faces f ON f.identity_id = i.id
                 GROUP BY i.id ORDER BY i.name",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    fn faces(&self, identity: Option<&str>) -> Result<Vec<FaceRecord>> {
        let conn = self.conn();
        if let Some(name) = identity
            && identity_id(&conn, name).map_err(|e| self.err(e))?.is_none()
        {
            return Err(GalleryError::UnknownIdentity(name.into()));
        }
        let mut st = conn
            .prepare(
                "SELECT f.id, i.name, f.embedding, f.source, f.x1, f.y1, f.x2, f.y2, f.created
                 FROM faces f JOIN identities i ON i.id = f.identity_id
                 WHERE ?1 IS NULL OR i.name = ?1 ORDER BY i.name, f.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([identity], |r| {
                let x1: Option<f64> = r.get(4)?;
                let bbox = match (
                    x1,
                    r.get::<_, Option<f64>>(5)?,
                    r.get::<_, Option<f64>>(6)?,
                    r.get::<_, Option<f64>>(7)?,
                ) {
                    (Some(a), Some(b), Some(c), Some(d)) => {
                        Some([a as f32, b as f32, c as f32, d as f32])
                    }
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
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    fn remove(&self, identity: &str) -> Result<usize> {
        let mut conn = self.conn();
        let err = |source| GalleryError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let tx = conn.transaction().map_err(err)?;
        let id = identity_id(&tx, identity)
            .map_err(err)?
            .ok_or_else(|| GalleryError::UnknownIdentity(identity.into()))?;
        let n = tx
            .execute("DELETE FROM faces WHERE identity_id = ?1", [id])
            .map_err(err)?;
        tx.execute("DELETE FROM identities WHERE id = ?1", [id])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(n)
    }

    fn rename(&self, old: &str, new: &str) -> Result<()> {
        check_name(new)?;
        let mut conn = self.conn();
        let err = |source| GalleryError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let tx = conn.transaction().map_err(err)?;
        let id = identity_id(&tx, old)
            .map_err(err)?
            .ok_or_else(|| GalleryError::UnknownIdentity(old.into()))?;
        if identity_id(&tx, new).map_err(err)?.is_some() {
            return Err(GalleryError::NameTaken(new.into()));
        }
        tx.execute(
            "UPDATE identities SET name = ?1 WHERE id = ?2",
            params![new, id],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    fn settings(&self) -> Result<Settings> {
        let corrupt = |key: &str, v: &str| GalleryError::Corrupt {
            path: self.path.clone(),
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
        Ok(Settings {
            threshold,
            target_fir,
            impostor,
        })
    }

    fn set_settings(&self, settings: &Settings) -> Result<()> {
        settings.check()?;
        let impostor = match &settings.impostor {
            Some(t) => Some(serde_json::to_string(t).map_err(|e| {
                GalleryError::Invalid(format!("cannot encode the impostor table: {e}"))
            })?),
            None => None,
        };
        let values = [
            ("threshold", settings.threshold.map(|t| t.to_string())),
            ("target_fir", settings.target_fir.map(|f| f.to_string())),
            ("impostor_table", impostor),
        ];
        let mut conn = self.conn();
        let err = |source| GalleryError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let tx = conn.transaction().map_err(err)?;
        for (key, value) in values {
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO meta(key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![key, v],
                ),
                None => tx.execute("DELETE FROM meta WHERE key = ?1", [key]),
            }
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelInfo {
        ModelInfo {
            fingerprint: "abc123".into(),
            dim: 2,
        }
    }

    fn face(x: f32, y: f32, src: &str) -> NewFace {
        NewFace {
            embedding: vec![x, y],
            source: src.into(),
            bbox: Some([1.0, 2.0, 3.0, 4.0]),
        }
    }

    #[test]
    fn enroll_list_show_rename_remove() {
        let g = SqliteGallery::in_memory().unwrap();
        assert_eq!(g.model().unwrap(), None);
        g.enroll("ada", &[face(1.0, 0.0, "a.jpg")], &model())
            .unwrap();
        g.enroll("ada", &[face(0.8, 0.6, "b.jpg")], &model())
            .unwrap();
        g.enroll("bob", &[face(0.0, 1.0, "c.jpg")], &model())
            .unwrap();
        assert_eq!(g.model().unwrap(), Some(model()));
        assert_eq!(
            g.identities().unwrap(),
            vec![("ada".into(), 2), ("bob".into(), 1)]
        );
        let f = g.faces(Some("ada")).unwrap();
        assert_eq!(f[1].embedding, vec![0.8, 0.6]);
        assert_eq!(f[0].bbox, Some([1.0, 2.0, 3.0, 4.0]));
        g.rename("bob", "robert").unwrap();
        assert!(matches!(
            g.rename("ada", "robert"),
            Err(GalleryError::NameTaken(_))
        ));
        assert!(matches!(
            g.faces(Some("bob")),
            Err(GalleryError::UnknownIdentity(_))
        ));
        assert_eq!(g.remove("ada").unwrap(), 2);
        assert!(matches!(
            g.remove("ada"),
            Err(GalleryError::UnknownIdentity(_))
        ));
        assert_eq!(g.faces(None).unwrap().len(), 1);
    }

    #[test]
    fn other_model_is_refused() {
        let g = SqliteGallery::in_memory().unwrap();
        g.enroll("ada", &[face(1.0, 0.0, "a.jpg")], &model())
            .unwrap();
        let other = ModelInfo {
            fingerprint: "fff".into(),
            dim: 2,
        };
        let e = g
            .enroll("ada", &[face(1.0, 0.0, "x.jpg")], &other)
            .unwrap_err();
        assert!(matches!(e, GalleryError::ModelMismatch { .. }), "{e}");
        assert!(e.to_string().contains("abc123"));
    }

    #[test]
    fn failed_enrolment_writes_nothing() {
        let g = SqliteGallery::in_memory().unwrap();
        g.enroll("ada", &[face(1.0, 0.0, "a.jpg")], &model())
            .unwrap();
        // The second face has the wrong length: the whole call is refused, the new identity
        // and the first (valid) face are not written.
        let bad = NewFace {
            embedding: vec![1.0, 2.0, 3.0],
            source: "bad.jpg".into(),
            bbox: None,
        };
        assert!(
            g.enroll("carl", &[face(0.0, 1.0, "ok.jpg"), bad], &model())
                .is_err()
        );
        assert_eq!(g.identities().unwrap(), vec![("ada".into(), 1)]);
        assert!(
            g.enroll("  ", &[face(0.0, 1.0, "x.jpg")], &model())
                .is_err()
        );
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

    /// One store shared by threads (as a service's handlers share it): concurrent enrolments
    /// into the same and into different identities lose nothing and create no duplicate.
    #[test]
    fn one_store_shared_by_threads() {
        let dir = tempfile::tempdir().unwrap();
        let g = std::sync::Arc::new(SqliteGallery::open(&dir.path().join("g.db")).unwrap());
        std::thread::scope(|s| {
            for t in 0..4 {
                let g = g.clone();
                s.spawn(move || {
                    for k in 0..10 {
                        let name = if k % 2 == 0 { "shared" } else { "own" };
                        let name = format!("{name}{}", if k % 2 == 0 { 0 } else { t });
                        g.enroll(&name, &[face(1.0, 0.0, &format!("{t}-{k}"))], &model())
                            .unwrap();
                        g.faces(None).unwrap();
                    }
                });
            }
        });
        let ids = g.identities().unwrap();
        assert_eq!(ids.len(), 5, "{ids:?}");
        assert!(ids.contains(&("shared0".into(), 20)), "{ids:?}");
        assert_eq!(ids.iter().map(|i| i.1).sum::<usize>(), 40);
    }

    #[test]
    fn two_connections_share_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let a = SqliteGallery::open(&path).unwrap();
        let b = SqliteGallery::open(&path).unwrap();
        a.enroll("ada", &[face(1.0, 0.0, "a.jpg")], &model())
            .unwrap();
        b.enroll("bob", &[face(0.0, 1.0, "b.jpg")], &model())
            .unwrap();
        assert_eq!(a.identities().unwrap().len(), 2);
    }
}
