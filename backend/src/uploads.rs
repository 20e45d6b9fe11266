//! Uploading a dataset: several CSV files in one multipart request, each stored under
//! `uploads/<uuid>/<kind>/<sanitized name>`. A file's kind is recognised by its header line, so the user just
//! picks files; a file with an unknown header, too many files, or too many bytes refuses the whole upload with a
//! message that names the file, and nothing of it is kept.

use crate::datasets::{self, DatasetView, UploadMeta, UPLOAD_META};
use axum::extract::multipart::Field;
use axum::extract::Multipart;
use coffee::model::FileKind;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The real dataset has a file per month of each kind: a few dozen files per dataset.
pub const MAX_FILES: usize = 200;
pub const MAX_FILE_BYTES: u64 = 64 << 20;
pub const MAX_TOTAL_BYTES: u64 = 256 << 20;
/// How far into a file its header line must end.
const MAX_HEADER_BYTES: usize = 4096;

/// An upload refused for a reason the user can fix (HTTP 400).
#[derive(Debug)]
pub struct Refused(pub String);

/// Reads every file of the request into a new upload folder; on any failure the folder is removed.
pub async fn receive(data_dir: &Path, mut multipart: Multipart) -> Result<DatasetView, Refused> {
    let id = Uuid::new_v4();
    let dir = data_dir.join("uploads").join(id.to_string());
    let outcome = async {
        let mut names = HashSet::new();
        let mut total = 0u64;
        while let Some(field) = multipart.next_field().await.map_err(|e| Refused(format!("bad upload: {e}")))? {
            let Some(original) = field.file_name().map(str::to_owned) else { continue };
            if names.len() == MAX_FILES {
                return Err(Refused(format!("too many files: at most {MAX_FILES} per upload")));
            }
            let name = sanitize(&original).ok_or_else(|| Refused(format!("`{original}`: not a .csv file name")))?;
            if !names.insert(name.clone()) {
                return Err(Refused(format!("`{original}`: two files with the same name")));
            }
            total += store(field, &dir, &original, &name, MAX_TOTAL_BYTES - total).await?;
        }
        if names.is_empty() {
            return Err(Refused("no files in the upload: choose one or more CSV files".into()));
        }
        let mut listed: Vec<String> = names.into_iter().collect();
        listed.sort();
        let name = match listed.as_slice() {
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} + {} more", rest.len()),
            [] => unreachable!("checked above"),
        };
        let meta = UploadMeta { name, created_ms: crate::now_ms() };
        std::fs::write(dir.join(UPLOAD_META), serde_json::to_vec(&meta).expect("serializes"))
            .map_err(|e| Refused(format!("cannot save the upload: {e}")))?;
        datasets::view(data_dir, &format!("upload-{id}")).ok_or_else(|| Refused("the upload vanished".into()))
    }
    .await;
    if outcome.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

/// Streams one file to disk under its kind's folder; returns its size.
async fn store(mut field: Field<'_>, dir: &Path, original: &str, name: &str, budget: u64) -> Result<u64, Refused> {
    let fail = |why: String| Refused(format!("`{original}`: {why}"));
    // Buffer until the header line is complete, to know the folder.
    let mut head = Vec::new();
    let mut ended = false;
    let kind = loop {
        if let Some(end) = head.iter().position(|&b| b == b'\n') {
            break kind_of(&head[..end]).map_err(fail)?;
        }
        if ended {
            if head.is_empty() {
                return Err(fail("the file is empty".into()));
            }
            break kind_of(&head).map_err(fail)?;
        }
        if head.len() > MAX_HEADER_BYTES {
            return Err(fail("no header line".into()));
        }
        match field.chunk().await.map_err(|e| fail(e.to_string()))? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => ended = true,
        }
    };
    let path: PathBuf = dir.join(kind.dir_name()).join(name);
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(|e| fail(e.to_string()))?;
    let mut file = std::fs::File::create(&path).map_err(|e| fail(e.to_string()))?;
    let limit = MAX_FILE_BYTES.min(budget);
    let too_large = || {
        fail(format!(
            "too large: at most {} MiB per file and {} MiB per upload",
            MAX_FILE_BYTES >> 20,
            MAX_TOTAL_BYTES >> 20
        ))
    };
    let mut size = head.len() as u64;
    if size > limit {
        return Err(too_large());
    }
    file.write_all(&head).map_err(|e| fail(e.to_string()))?;
    // A field that ended while its header was read has nothing more to give.
    if !ended {
        while let Some(chunk) = field.chunk().await.map_err(|e| fail(e.to_string()))? {
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large());
            }
            file.write_all(&chunk).map_err(|e| fail(e.to_string()))?;
        }
    }
    Ok(size)
}

/// The file kind whose exact header this is.
fn kind_of(line: &[u8]) -> Result<FileKind, String> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_start_matches('\u{feff}').trim_end_matches(['\r', '\n']);
    let columns: Vec<&str> = text.split(',').map(str::trim).collect();
    FileKind::ALL.into_iter().find(|k| k.header() == columns.as_slice()).ok_or_else(|| {
        let kinds: Vec<&str> = FileKind::ALL.iter().map(|k| k.dir_name()).collect();
        format!("header `{}` is not that of any dataset file ({})", truncate(text, 120), kinds.join(", "))
    })
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// A safe file name: the last path component only, `[A-Za-z0-9._-]` (others become `_`), at most 100 chars,
/// not hidden, ending in `.csv`.
pub fn sanitize(original: &str) -> Option<String> {
    let base = original.rsplit(['/', '\\']).next()?;
    let clean: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .take(100)
        .collect();
    let clean = clean.trim_start_matches('.').to_owned();
    let stem_ok = clean.len() > 4 && clean.to_ascii_lowercase().ends_with(".csv");
    stem_ok.then_some(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize("stores.csv").as_deref(), Some("stores.csv"));
        assert_eq!(sanitize("../../etc/passwd.csv").as_deref(), Some("passwd.csv"));
        assert_eq!(sanitize("C:\\x\\my file (1).CSV").as_deref(), Some("my_file__1_.CSV"));
        assert_eq!(sanitize("..csv"), None);
        assert_eq!(sanitize(".csv"), None);
        assert_eq!(sanitize("notes.txt"), None);
        assert_eq!(sanitize("/"), None);
    }

    #[test]
    fn kinds_come_from_headers() {
        assert_eq!(kind_of(b"user_id,gender,birthdate,registered_at\r"), Ok(FileKind::Users));
        assert_eq!(kind_of("\u{feff}user_id,gender,birthdate,registered_at".as_bytes()), Ok(FileKind::Users));
        assert!(kind_of(b"a,b,c").unwrap_err().contains("a,b,c"));
    }
}
