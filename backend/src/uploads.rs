//! Uploading a dataset: several CSV files in one multipart request, each stored under
//! `uploads/<uuid>/<kind>/<sanitized name>`. A file's kind is recognised by its header line, so the user just
//! picks files; a file with an unknown header, too many files, or too many bytes refuses the whole upload with a
//! message that names the file, and nothing of it is kept. The caps ([`UploadLimits`]) are checked as the request
//! streams in: a file is counted before it is read, and bytes are counted chunk by chunk as they are written.

use crate::datasets::{self, DatasetView, UploadMeta, UPLOAD_META};
use crate::UploadLimits;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::Multipart;
use axum::http::StatusCode;
use coffee_model::model::FileKind;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// How far into a file its header line must end.
const MAX_HEADER_BYTES: usize = 4096;

/// An upload refused for a reason the user can fix: 400, or 413 when it is too large.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

impl Refused {
    fn new(message: String) -> Refused {
        Refused { status: StatusCode::BAD_REQUEST, message }
    }

    fn too_large(limits: UploadLimits) -> Refused {
        let message = format!(
            "too large: at most {} MiB per file and {} MiB per upload",
            limits.max_file_mib, limits.max_total_mib
        );
        Refused { status: StatusCode::PAYLOAD_TOO_LARGE, message }
    }

    /// A broken multipart stream; the request body's limit shows up here as a 413.
    fn multipart(e: MultipartError, limits: UploadLimits) -> Refused {
        match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Refused::too_large(limits),
            _ => Refused::new(format!("bad upload: {}", e.body_text())),
        }
    }

    fn naming(self, original: &str) -> Refused {
        Refused { message: format!("`{original}`: {}", self.message), ..self }
    }
}

/// Reads every file of the request into a new upload folder; on any failure the folder is removed.
pub async fn receive(data_dir: &Path, limits: UploadLimits, mut multipart: Multipart) -> Result<DatasetView, Refused> {
    let id = Uuid::new_v4();
    let dir = data_dir.join("uploads").join(id.to_string());
    let outcome = async {
        let mut names = HashSet::new();
        let mut left = limits.max_total_mib.saturating_mul(1 << 20);
        while let Some(field) = multipart.next_field().await.map_err(|e| Refused::multipart(e, limits))? {
            let Some(original) = field.file_name().map(str::to_owned) else { continue };
            if names.len() == limits.max_files {
                return Err(Refused::new(format!("too many files: at most {} per upload", limits.max_files)));
            }
            let name =
                sanitize(&original).ok_or_else(|| Refused::new(format!("`{original}`: not a .csv file name")))?;
            if !names.insert(name.clone()) {
                return Err(Refused::new(format!("`{original}`: two files with the same name")));
            }
            left -= store(field, &dir, &name, limits, left).await.map_err(|e| e.naming(&original))?;
        }
        if names.is_empty() {
            return Err(Refused::new("no files in the upload: choose one or more CSV files".into()));
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
            .map_err(|e| Refused::new(format!("cannot save the upload: {e}")))?;
        datasets::view(data_dir, &format!("upload-{id}")).ok_or_else(|| Refused::new("the upload vanished".into()))
    }
    .await;
    if outcome.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
        // Read (and drop) the rest of the request, at most the body limit, so the client is not cut off while
        // still sending and gets to read the refusal.
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
    }
    outcome
}

/// Streams one file to disk under its kind's folder, refusing it past the per-file cap or past `budget` (what is
/// left of the upload's total); returns its size.
async fn store(
    mut field: Field<'_>,
    dir: &Path,
    name: &str,
    limits: UploadLimits,
    budget: u64,
) -> Result<u64, Refused> {
    let io = |e: std::io::Error| Refused::new(e.to_string());
    let chunk = |r: Result<Option<axum::body::Bytes>, MultipartError>| r.map_err(|e| Refused::multipart(e, limits));
    // Buffer until the header line is complete, to know the folder.
    let mut head = Vec::new();
    let mut ended = false;
    let kind = loop {
        if let Some(end) = head.iter().position(|&b| b == b'\n') {
            break kind_of(&head[..end]).map_err(Refused::new)?;
        }
        if ended {
            if head.is_empty() {
                return Err(Refused::new("the file is empty".into()));
            }
            break kind_of(&head).map_err(Refused::new)?;
        }
        if head.len() > MAX_HEADER_BYTES {
            return Err(Refused::new("no header line".into()));
        }
        match chunk(field.chunk().await)? {
            Some(bytes) => head.extend_from_slice(&bytes),
            None => ended = true,
        }
    };
    // `dir` is this upload's folder, the kind's folder is a fixed name and `name` is sanitized: no path escapes.
    let path: PathBuf = dir.join(kind.dir_name()).join(name);
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io)?;
    let mut file = std::fs::File::create(&path).map_err(io)?;
    let limit = limits.max_file_mib.saturating_mul(1 << 20).min(budget);
    let mut size = head.len() as u64;
    if size > limit {
        return Err(Refused::too_large(limits));
    }
    file.write_all(&head).map_err(io)?;
    // A field that ended while its header was read has nothing more to give.
    if !ended {
        while let Some(bytes) = chunk(field.chunk().await)? {
            size += bytes.len() as u64;
            if size > limit {
                return Err(Refused::too_large(limits));
            }
            file.write_all(&bytes).map_err(io)?;
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
