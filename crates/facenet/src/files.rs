//! Files: the image extensions every command reads, the walkers of photo folders, and the one
//! atomic writer (temporary file in the same folder, fsync, rename) behind every file this
//! project writes that a crash must never leave half-written.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// File extensions read as images (lower case): JPEG, PNG, BMP, WebP, TIFF, GIF, and the
/// netpbm formats (PGM/PPM/PNM: the AT&T/ORL face set is PGM).
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "gif", "pgm", "ppm", "pnm", "pbm",
];

/// Whether a path has one of the [`IMAGE_EXTENSIONS`] (any case).
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Image files below `dir`, recursively, sorted. A missing or unreadable folder is an error
/// that names it.
pub fn walk_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let p = entry.map_err(|e| Error::io(&d, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if is_image(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The `person/photo` files of a labelled folder (one sub-folder per person, images directly
/// inside), as `(person, path)` sorted by person then file.
pub fn dataset_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut people: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    people.sort();
    let mut out = Vec::new();
    for p in people {
        let name = p
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&p)
            .map_err(|e| Error::io(&p, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|f| f.is_file() && is_image(f))
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (name.clone(), f)));
    }
    Ok(out)
}

/// Writes `bytes` to `path` through a temporary file in the same folder (created if needed),
/// fsync and a rename: a reader sees the old file or the complete new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// [`write_atomic`] of a value as JSON (pretty-printed).
pub fn write_json_atomic(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.into(),
        what: "cannot encode".into(),
        source,
    })?;
    write_atomic(path, &bytes)
}

/// [`write_atomic`] of an image, encoded by the file's extension (PNG for `.png`).
pub fn save_image_atomic(img: &image::RgbImage, path: &Path) -> Result<()> {
    let format = image::ImageFormat::from_path(path).unwrap_or(image::ImageFormat::Png);
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format)
        .map_err(|source| Error::Encode {
            path: path.into(),
            source,
        })?;
    write_atomic(path, bytes.get_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walkers_keep_images_of_every_supported_kind_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "b/2.PGM",
            "b/1.jpg",
            "a/x.png",
            "a/notes.txt",
            "a/deep/y.webp",
        ] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let all = walk_images(dir.path()).unwrap();
        let rel: Vec<String> = all
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(rel, ["a/deep/y.webp", "a/x.png", "b/1.jpg", "b/2.PGM"]);
        let ds = dataset_files(dir.path()).unwrap();
        let people: Vec<&str> = ds.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(people, ["a", "b", "b"]);
        let err = walk_images(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn atomic_write_replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
