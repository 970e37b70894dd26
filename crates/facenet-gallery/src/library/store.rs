//! The library's tables, in the gallery's SQLite file beside its identities: photos, their
//! faces (box, landmarks, quality, embedding), people, and the user's "not this person".
//! Every write is one transaction, so a process killed at any moment leaves each photo whole
//! or absent.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::people::Point;
use super::types::{LibraryFace, Person, PhotoRow};
use crate::sqlite::{from_blob, sqlite_error, to_blob};
use crate::{GalleryError, ModelInfo, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS library_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS library_photos (
    id     INTEGER PRIMARY KEY,
    path   TEXT NOT NULL UNIQUE,
    hash   TEXT NOT NULL UNIQUE,
    size   INTEGER NOT NULL,
    mtime  INTEGER NOT NULL,
    width  INTEGER NOT NULL,
    height INTEGER NOT NULL,
    added  INTEGER NOT NULL,
    error  TEXT
);
CREATE TABLE IF NOT EXISTS library_people (
    id      INTEGER PRIMARY KEY,
    name    TEXT UNIQUE,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS library_faces (
    id        INTEGER PRIMARY KEY,
    photo_id  INTEGER NOT NULL REFERENCES library_photos(id) ON DELETE CASCADE,
    idx       INTEGER NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    score     REAL NOT NULL,
    landmarks BLOB NOT NULL,
    quality   REAL NOT NULL,
    embedding BLOB,
    person_id INTEGER REFERENCES library_people(id) ON DELETE SET NULL,
    pinned    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS library_faces_photo ON library_faces(photo_id);
CREATE INDEX IF NOT EXISTS library_faces_person ON library_faces(person_id);
CREATE TABLE IF NOT EXISTS library_rejects (
    face_id   INTEGER NOT NULL REFERENCES library_faces(id) ON DELETE CASCADE,
    person_id INTEGER NOT NULL REFERENCES library_people(id) ON DELETE CASCADE,
    PRIMARY KEY (face_id, person_id)
);
";

/// A photo's record before it is stored, with its faces.
#[derive(Debug, Clone)]
pub struct NewPhoto {
    /// Absolute path.
    pub path: String,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// Bytes.
    pub size: u64,
    /// Modification time (Unix seconds).
    pub mtime: i64,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Why it could not be read, if it could not (stored so that it is not retried unchanged).
    pub error: Option<String>,
    /// Its faces.
    pub faces: Vec<NewLibraryFace>,
}

/// A face to store.
#[derive(Debug, Clone)]
pub struct NewLibraryFace {
    /// Box `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Detector confidence.
    pub score: f32,
    /// Five landmarks.
    pub landmarks: [[f32; 2]; 5],
    /// Quality score (0..1).
    pub quality: f32,
    /// Unit embedding.
    pub embedding: Vec<f32>,
}

/// What a grouping pass writes: faces given a person (or none), and new people by their faces.
#[derive(Debug, Clone, Default)]
pub struct Regrouping {
    /// `(face, person)` to set.
    pub set: Vec<(i64, Option<i64>)>,
    /// New people, each as its faces.
    pub new_people: Vec<Vec<i64>>,
}

/// A grouping pass: the faces with embeddings and the user's `(face, person)` rejections in,
/// what to write out.
pub type GroupFn<'a> = dyn FnMut(&[Point], &HashSet<(i64, i64)>) -> Regrouping + 'a;

/// Where a library is kept: SQLite ([`SqliteLibrary`], the gallery's file) or PostgreSQL
/// (`super::postgres::PostgresLibrary`, the gallery's database). Every write is one transaction.
pub trait LibraryStore: Send + Sync + std::fmt::Debug {
    /// Where it is, for messages.
    fn location(&self) -> String;
    /// Where thumbnails of its faces are cached.
    fn thumbs_dir(&self) -> PathBuf;
    /// The model of the stored embeddings (None while empty).
    fn model(&self) -> Result<Option<ModelInfo>>;
    /// Records the model where none is recorded yet.
    fn record_model(&self, model: &ModelInfo) -> Result<()>;
    /// Every stored file: path -> (id, size, mtime), and hash -> (id, path).
    #[allow(clippy::type_complexity)]
    fn files(&self) -> Result<(HashMap<String, Known>, HashMap<String, (i64, String)>)>;
    /// Stores photos with their faces, moves known photos to new paths and drops replaced
    /// ones, in one transaction. Returns each photo's id, or None where another process
    /// stored the same content meanwhile (then its faces are not stored twice).
    fn write_batch(
        &self,
        photos: &[NewPhoto],
        moves: &[(i64, String, u64, i64)],
        drop: &[i64],
    ) -> Result<Vec<Option<i64>>>;
    /// Runs `f` on every face with an embedding and the user's rejections, then writes what
    /// it decides, all in one transaction that excludes other writers of the library (two
    /// indexers never form one person twice). Returns the new people's ids.
    fn regroup(&self, f: &mut GroupFn<'_>) -> Result<Vec<i64>>;
    /// Whether faces were stored since the last grouping (its watermark: the highest face id
    /// it saw), so that a rerun with nothing new skips grouping.
    fn needs_grouping(&self) -> Result<bool>;
    /// Every person with face and photo counts, named first, then by faces.
    fn people(&self) -> Result<Vec<Person>>;
    /// The id of the person of that name.
    fn person_named(&self, name: &str) -> Result<Option<i64>>;
    /// A person's faces, best quality first.
    fn faces_of(&self, person: i64) -> Result<Vec<LibraryFace>>;
    /// Every face with an embedding.
    fn all_faces(&self) -> Result<Vec<LibraryFace>>;
    /// One face.
    fn face(&self, id: i64) -> Result<LibraryFace>;
    /// Photos with at least one face of each person, by path.
    fn photos_with(&self, people: &[i64]) -> Result<Vec<PhotoRow>>;
    /// One photo.
    fn photo(&self, id: i64) -> Result<PhotoRow>;
    /// Counts: photos, photos that could not be read, faces, people, named people.
    fn counts(&self) -> Result<[usize; 5]>;
    /// Sets (or clears) a person's name.
    fn set_name(&self, person: i64, name: Option<&str>) -> Result<()>;
    /// Moves the faces and rejections of `sources` to `target`, deletes them, and names
    /// `target` `name`.
    fn merge(&self, target: i64, sources: &[i64], name: Option<&str>) -> Result<()>;
    /// A new person without faces.
    fn new_person(&self) -> Result<i64>;
    /// Places a face with a person (or none) for good, remembering that it left `left`.
    fn place_face(&self, face: i64, target: Option<i64>, left: Option<i64>) -> Result<()>;
    /// Deletes a person and erases their faces' embeddings; returns how many.
    fn forget(&self, person: i64) -> Result<usize>;
}

/// A known file: id, size, mtime.
pub type Known = (i64, u64, i64);

/// The library's tables in one SQLite file (the gallery's).
#[derive(Debug)]
pub struct SqliteLibrary {
    conn: Mutex<Connection>,
    path: String,
    /// Table-name prefix: `library_` for the default gallery, `library_x<hex name>_` for others.
    prefix: String,
}

impl SqliteLibrary {
    /// Opens (creating the tables if needed) the library of gallery `gallery` in `file`: each
    /// gallery of a file has its own library (its own tables), as it has its own identities.
    pub fn open(file: &Path, gallery: &str) -> Result<Self> {
        crate::tenants::check_gallery_name(gallery)?;
        let prefix = match gallery {
            crate::DEFAULT_GALLERY => "library_".to_string(),
            g => format!(
                "library_x{}_",
                g.bytes().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        };
        let path = file.display().to_string();
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| GalleryError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let err = |e| sqlite_error(path.clone(), e);
        let conn = Connection::open(file).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        let _: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| GalleryError::Corrupt {
                path: path.clone(),
                reason: format!("not a facenet library (SQLite says: {e})"),
            })?;
        conn.execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;")
            .map_err(err)?;
        let me = Self {
            conn: Mutex::new(conn),
            path,
            prefix,
        };
        me.conn().execute_batch(&me.q(SCHEMA)).map_err(me.err())?;
        Ok(me)
    }

    /// `sql` with the tables of this gallery's library (written as `library_*`).
    pub fn q(&self, sql: &str) -> String {
        if self.prefix == "library_" {
            sql.to_string()
        } else {
            sql.replace("library_", &self.prefix)
        }
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> GalleryError + '_ {
        move |e| sqlite_error(self.path.clone(), e)
    }

    /// Faces, with their photos, matching a WHERE clause over `f` (faces) and `p` (photos).
    fn faces_where(&self, clause: &str, args: impl rusqlite::Params) -> Result<Vec<LibraryFace>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT f.id, f.photo_id, p.path, f.idx, f.x1, f.y1, f.x2, f.y2, f.score, f.landmarks,
                    f.quality, f.embedding, f.person_id, f.pinned
             FROM library_faces f JOIN library_photos p ON p.id = f.photo_id
             WHERE {clause} ORDER BY f.quality DESC, f.id"
        );
        let mut st = conn.prepare(&self.q(&sql)).map_err(self.err())?;
        st.query_map(args, |r| {
            let lm = from_blob(&r.get::<_, Vec<u8>>(9)?);
            let mut landmarks = [[0f32; 2]; 5];
            for (k, v) in lm.chunks_exact(2).take(5).enumerate() {
                landmarks[k] = [v[0], v[1]];
            }
            Ok(LibraryFace {
                id: r.get(0)?,
                photo: r.get(1)?,
                path: r.get(2)?,
                index: r.get::<_, i64>(3)? as usize,
                bbox: [r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?],
                score: r.get(8)?,
                landmarks,
                quality: r.get(10)?,
                embedding: r
                    .get::<_, Option<Vec<u8>>>(11)?
                    .map(|b| from_blob(&b))
                    .unwrap_or_default(),
                person: r.get(12)?,
                pinned: r.get::<_, i64>(13)? != 0,
            })
        })
        .map_err(self.err())?
        .collect::<rusqlite::Result<_>>()
        .map_err(self.err())
    }

    /// Runs writes in one transaction.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<R>,
    ) -> Result<R> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err())?;
        let r = f(&tx).map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(r)
    }
}

impl LibraryStore for SqliteLibrary {
    fn location(&self) -> String {
        self.path.clone()
    }

    /// Where thumbnails of this library's faces are cached: beside the file, per gallery.
    fn thumbs_dir(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("{}.thumbs", self.path)).join(&self.prefix)
    }

    /// The model of the stored embeddings (None while empty).
    fn model(&self) -> Result<Option<ModelInfo>> {
        let conn = self.conn();
        let v: Option<String> = conn
            .query_row(
                &self.q("SELECT value FROM library_meta WHERE key = 'model'"),
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        v.map(|s| {
            serde_json::from_str(&s).map_err(|e| GalleryError::Corrupt {
                path: self.path.clone(),
                reason: format!("library_meta.model: {e}"),
            })
        })
        .transpose()
    }

    fn record_model(&self, model: &ModelInfo) -> Result<()> {
        let json = serde_json::to_string(model).expect("ModelInfo serializes");
        self.conn()
            .execute(
                &self.q("INSERT OR IGNORE INTO library_meta(key, value) VALUES ('model', ?1)"),
                [json],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Every stored file: path -> (id, size, mtime), and hash -> (id, path).
    #[allow(clippy::type_complexity)]
    fn files(&self) -> Result<(HashMap<String, Known>, HashMap<String, (i64, String)>)> {
        let conn = self.conn();
        let mut st = conn
            .prepare(&self.q("SELECT id, path, hash, size, mtime FROM library_photos"))
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(self.err())?;
        let (mut by_path, mut by_hash) = (HashMap::new(), HashMap::new());
        for row in rows {
            let (id, path, hash, size, mtime) = row.map_err(self.err())?;
            by_path.insert(path.clone(), (id, size as u64, mtime));
            by_hash.insert(hash, (id, path));
        }
        Ok((by_path, by_hash))
    }

    /// Stores photos with their faces, moves known photos to new paths and drops replaced
    /// ones, in one transaction. Returns the new photos' ids.
    fn write_batch(
        &self,
        photos: &[NewPhoto],
        moves: &[(i64, String, u64, i64)],
        drop: &[i64],
    ) -> Result<Vec<Option<i64>>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err())?;
        let now = crate::now();
        let mut ids = Vec::with_capacity(photos.len());
        {
            for id in drop {
                tx.execute(&self.q("DELETE FROM library_photos WHERE id = ?1"), [id])
                    .map_err(self.err())?;
            }
            let mut mv = tx
                .prepare(
                    &self.q(
                        "UPDATE library_photos SET path = ?2, size = ?3, mtime = ?4 WHERE id = ?1",
                    ),
                )
                .map_err(self.err())?;
            for (id, path, size, mtime) in moves {
                mv.execute(params![id, path, *size as i64, mtime])
                    .map_err(self.err())?;
            }
            let mut ph = tx
                .prepare(
                    &self.q("INSERT OR IGNORE INTO library_photos(path, hash, size, mtime, width, height, added, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                )
                .map_err(self.err())?;
            let mut fa = tx
                .prepare(
                    &self.q("INSERT INTO library_faces(photo_id, idx, x1, y1, x2, y2, score, landmarks, quality, embedding)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                )
                .map_err(self.err())?;
            for p in photos {
                let added = ph
                    .execute(params![
                        p.path,
                        p.hash,
                        p.size as i64,
                        p.mtime,
                        p.width,
                        p.height,
                        now,
                        p.error
                    ])
                    .map_err(self.err())?;
                if added == 0 {
                    // Another process stored this content (or path) meanwhile.
                    ids.push(None);
                    continue;
                }
                let id = tx.last_insert_rowid();
                ids.push(Some(id));
                for (k, f) in p.faces.iter().enumerate() {
                    let lm: Vec<f32> = f.landmarks.iter().flatten().copied().collect();
                    fa.execute(params![
                        id,
                        k as i64,
                        f.bbox[0],
                        f.bbox[1],
                        f.bbox[2],
                        f.bbox[3],
                        f.score,
                        to_blob(&lm),
                        f.quality,
                        to_blob(&f.embedding)
                    ])
                    .map_err(self.err())?;
                }
            }
        }
        tx.commit().map_err(self.err())?;
        Ok(ids)
    }

    fn regroup(&self, f: &mut GroupFn<'_>) -> Result<Vec<i64>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err())?;
        let points = {
            let mut st = tx
                .prepare(&self.q(
                    "SELECT id, person_id, pinned, embedding, photo_id, quality FROM library_faces
                     WHERE embedding IS NOT NULL ORDER BY id",
                ))
                .map_err(self.err())?;
            st.query_map([], |r| {
                Ok(Point {
                    id: r.get(0)?,
                    person: r.get(1)?,
                    pinned: r.get::<_, i64>(2)? != 0,
                    embedding: from_blob(&r.get::<_, Vec<u8>>(3)?),
                    photo: r.get(4)?,
                    quality: r.get(5)?,
                })
            })
            .map_err(self.err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())?
        };
        let rejects: HashSet<(i64, i64)> = {
            let mut st = tx
                .prepare(&self.q("SELECT face_id, person_id FROM library_rejects"))
                .map_err(self.err())?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.err())?
                .collect::<rusqlite::Result<_>>()
                .map_err(self.err())?
        };
        let Regrouping { set, new_people } = f(&points, &rejects);
        let now = crate::now();
        let mut created = Vec::new();
        {
            let mut up = tx
                .prepare(&self.q("UPDATE library_faces SET person_id = ?2 WHERE id = ?1"))
                .map_err(self.err())?;
            for (face, person) in &set {
                up.execute(params![face, person]).map_err(self.err())?;
            }
            for faces in &new_people {
                tx.execute(
                    &self.q("INSERT INTO library_people(created) VALUES (?1)"),
                    [now],
                )
                .map_err(self.err())?;
                let id = tx.last_insert_rowid();
                created.push(id);
                for f in faces {
                    up.execute(params![f, id]).map_err(self.err())?;
                }
            }
            // People left without faces (their faces moved or their photos left) go, unless
            // named: a name is the user's and stays until forgotten.
            tx.execute(
                &self.q("DELETE FROM library_people WHERE name IS NULL AND id NOT IN
                 (SELECT person_id FROM library_faces WHERE person_id IS NOT NULL)"),
                [],
            )
            .map_err(self.err())?;
        }
        let seen = points.iter().map(|p| p.id).max().unwrap_or(0);
        tx.execute(
            &self.q("INSERT INTO library_meta(key, value) VALUES ('grouped', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value"),
            [seen.to_string()],
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(created)
    }

    fn needs_grouping(&self) -> Result<bool> {
        self.conn()
            .query_row(
                &self.q(
                    "SELECT COALESCE((SELECT MAX(id) FROM library_faces), 0) >
                     COALESCE((SELECT CAST(value AS INTEGER) FROM library_meta WHERE key = 'grouped'), 0)",
                ),
                [],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// Every person with face and photo counts, named first, then by faces.
    fn people(&self) -> Result<Vec<Person>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(&self.q(
                "SELECT p.id, p.name, COUNT(f.id), COUNT(DISTINCT f.photo_id),
                        (SELECT c.id FROM library_faces c WHERE c.person_id = p.id
                         ORDER BY c.quality DESC, c.id LIMIT 1)
                 FROM library_people p LEFT JOIN library_faces f ON f.person_id = p.id
                 GROUP BY p.id
                 ORDER BY p.name IS NULL, COUNT(f.id) DESC, p.id",
            ))
            .map_err(self.err())?;
        st.query_map([], |r| {
            Ok(Person {
                id: r.get(0)?,
                name: r.get(1)?,
                faces: r.get::<_, i64>(2)? as usize,
                photos: r.get::<_, i64>(3)? as usize,
                cover: r.get(4)?,
            })
        })
        .map_err(self.err())?
        .collect::<rusqlite::Result<_>>()
        .map_err(self.err())
    }

    fn person_named(&self, name: &str) -> Result<Option<i64>> {
        self.conn()
            .query_row(
                &self.q("SELECT id FROM library_people WHERE name = ?1"),
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// A person's faces, best quality first.
    fn faces_of(&self, person: i64) -> Result<Vec<LibraryFace>> {
        self.faces_where("f.person_id = ?1", [person])
    }

    /// Every face with an embedding.
    fn all_faces(&self) -> Result<Vec<LibraryFace>> {
        self.faces_where("f.embedding IS NOT NULL", [])
    }

    /// One face.
    fn face(&self, id: i64) -> Result<LibraryFace> {
        self.faces_where("f.id = ?1", [id])?.pop().ok_or_else(|| {
            GalleryError::NotInLibrary(format!("no face {id} in the photo library {}", self.path))
        })
    }

    /// Photos with at least one face of each person, by path.
    fn photos_with(&self, people: &[i64]) -> Result<Vec<PhotoRow>> {
        let conn = self.conn();
        let list = people
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "SELECT p.id, p.path, p.width, p.height FROM library_photos p
             WHERE (SELECT COUNT(DISTINCT f.person_id) FROM library_faces f
                    WHERE f.photo_id = p.id AND f.person_id IN ({list})) = ?1
             ORDER BY p.path"
        );
        let mut st = conn.prepare(&self.q(&sql)).map_err(self.err())?;
        st.query_map([people.len() as i64], |r| {
            Ok(PhotoRow {
                id: r.get(0)?,
                path: r.get(1)?,
                width: r.get(2)?,
                height: r.get(3)?,
            })
        })
        .map_err(self.err())?
        .collect::<rusqlite::Result<_>>()
        .map_err(self.err())
    }

    /// One photo.
    fn photo(&self, id: i64) -> Result<PhotoRow> {
        self.conn()
            .query_row(
                &self.q("SELECT id, path, width, height FROM library_photos WHERE id = ?1"),
                [id],
                |r| {
                    Ok(PhotoRow {
                        id: r.get(0)?,
                        path: r.get(1)?,
                        width: r.get(2)?,
                        height: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(self.err())?
            .ok_or_else(|| {
                GalleryError::NotInLibrary(format!(
                    "no photo {id} in the photo library {}",
                    self.path
                ))
            })
    }

    /// Counts: photos, photos that could not be read, faces, people, named people.
    fn counts(&self) -> Result<[usize; 5]> {
        let conn = self.conn();
        let n = |sql: &str| -> Result<usize> {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|v| v as usize)
                .map_err(self.err())
        };
        Ok([
            n(&self.q("SELECT COUNT(*) FROM library_photos"))?,
            n(&self.q("SELECT COUNT(*) FROM library_photos WHERE error IS NOT NULL"))?,
            n(&self.q("SELECT COUNT(*) FROM library_faces"))?,
            n(&self.q("SELECT COUNT(*) FROM library_people"))?,
            n(&self.q("SELECT COUNT(*) FROM library_people WHERE name IS NOT NULL"))?,
        ])
    }

    fn set_name(&self, person: i64, name: Option<&str>) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                &self.q("UPDATE library_people SET name = ?2 WHERE id = ?1"),
                params![person, name],
            )
        })
        .map(|_| ())
    }

    fn merge(&self, target: i64, sources: &[i64], name: Option<&str>) -> Result<()> {
        self.write(|tx| {
            for s in sources {
                tx.execute(
                    &self.q("UPDATE library_faces SET person_id = ?2 WHERE person_id = ?1"),
                    [s, &target],
                )?;
                tx.execute(
                    &self.q(
                        "UPDATE OR IGNORE library_rejects SET person_id = ?2 WHERE person_id = ?1",
                    ),
                    [s, &target],
                )?;
                tx.execute(&self.q("DELETE FROM library_people WHERE id = ?1"), [s])?;
            }
            tx.execute(
                &self.q("UPDATE library_people SET name = ?2 WHERE id = ?1"),
                params![target, name],
            )
        })
        .map(|_| ())
    }

    fn new_person(&self) -> Result<i64> {
        self.write(|tx| {
            tx.execute(
                &self.q("INSERT INTO library_people(created) VALUES (?1)"),
                [crate::now()],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    fn place_face(&self, face: i64, target: Option<i64>, left: Option<i64>) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                &self.q("UPDATE library_faces SET person_id = ?2, pinned = 1 WHERE id = ?1"),
                params![face, target],
            )?;
            if let Some(old) = left {
                tx.execute(
                    &self.q(
                        "INSERT OR IGNORE INTO library_rejects(face_id, person_id) VALUES (?1, ?2)",
                    ),
                    [face, old],
                )?;
            }
            if let Some(t) = target {
                tx.execute(
                    &self.q("DELETE FROM library_rejects WHERE face_id = ?1 AND person_id = ?2"),
                    [face, t],
                )?;
            }
            tx.execute(
                &self.q("DELETE FROM library_people WHERE name IS NULL AND id NOT IN
                     (SELECT person_id FROM library_faces WHERE person_id IS NOT NULL)"),
                [],
            )
        })
        .map(|_| ())
    }

    fn forget(&self, person: i64) -> Result<usize> {
        self.write(|tx| {
            let n = tx.execute(
                &self.q(
                    "UPDATE library_faces SET embedding = NULL, person_id = NULL, pinned = 1
                     WHERE person_id = ?1",
                ),
                [person],
            )?;
            tx.execute(
                &self.q("DELETE FROM library_people WHERE id = ?1"),
                [person],
            )?;
            Ok(n)
        })
    }
}
