//! The datasets a session can run on, all inside the data folder: the bundled `sample/`, the generated
//! `generated/<scale>/`, and uploads `uploads/<id>/`. A dataset is named by an id (`sample`, `generated-tiny`,
//! `upload-<uuid>`) that [`resolve`] maps to a folder, so no request ever builds a path from its own text.

use coffee_model::model::FileKind;
use coffee_tools::gen::{GenOptions, Scale};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The seed of generated datasets: fixed, so `generated-tiny` is the same data every time.
const GEN_SEED: u64 = 7;
/// Written last into a generated folder, so a half-written one (the console stopped mid-way) is redone.
const COMPLETE_MARKER: &str = ".complete";
/// An upload's display name and files, beside its CSV folders.
pub const UPLOAD_META: &str = "upload.json";

pub use coffee_types::DatasetView;

/// What an upload remembers about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadMeta {
    pub name: String,
    pub created_ms: u64,
}

/// Every dataset present, sample first, then generated, then uploads (newest first).
pub fn list(data_dir: &Path) -> Vec<DatasetView> {
    let mut all = Vec::new();
    if let Some(view) = view(data_dir, "sample") {
        all.push(view);
    }
    for scale in ["tiny", "reduced"] {
        if let Some(view) = view(data_dir, &format!("generated-{scale}")) {
            all.push(view);
        }
    }
    let mut uploads: Vec<(u64, DatasetView)> = std::fs::read_dir(data_dir.join("uploads"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let id = format!("upload-{}", Uuid::parse_str(&name).ok()?);
            let created = read_meta(&data_dir.join("uploads").join(&name)).map_or(0, |m| m.created_ms);
            Some((created, view(data_dir, &id)?))
        })
        .collect();
    uploads.sort_by_key(|(created, _)| std::cmp::Reverse(*created));
    all.extend(uploads.into_iter().map(|(_, v)| v));
    all
}

/// The folder of a dataset id, if the id is well formed and its folder is a complete dataset.
pub fn resolve(data_dir: &Path, id: &str) -> Option<PathBuf> {
    let dir = match id {
        "sample" => data_dir.join("sample"),
        "generated-tiny" | "generated-reduced" => {
            let dir = data_dir.join("generated").join(&id["generated-".len()..]);
            dir.join(COMPLETE_MARKER).is_file().then_some(dir)?
        }
        _ => {
            // Parsing as a UUID (and printing it back) keeps `..`, `/` and friends out of the path.
            let upload = Uuid::parse_str(id.strip_prefix("upload-")?).ok()?;
            data_dir.join("uploads").join(upload.to_string())
        }
    };
    dir.is_dir().then_some(dir)
}

/// The view of one dataset id, if it exists.
pub fn view(data_dir: &Path, id: &str) -> Option<DatasetView> {
    let dir = resolve(data_dir, id)?;
    let (kind, name) = match id {
        "sample" => ("sample", "Bundled sample".to_owned()),
        "generated-tiny" => ("generated", "Generated · tiny".to_owned()),
        "generated-reduced" => ("generated", "Generated · reduced".to_owned()),
        _ => ("upload", read_meta(&dir).map_or_else(|| "Upload".to_owned(), |m| m.name)),
    };
    let (files, rows, bytes) = measure(&dir);
    Some(DatasetView { id: id.to_owned(), name, kind: kind.to_owned(), files, rows, bytes })
}

fn read_meta(dir: &Path) -> Option<UploadMeta> {
    serde_json::from_slice(&std::fs::read(dir.join(UPLOAD_META)).ok()?).ok()
}

/// CSV files, data rows and bytes of a dataset folder. Rows are newline counts less one header per file:
/// enough for a progress bar, and far cheaper than parsing.
pub fn measure(dir: &Path) -> (usize, u64, u64) {
    let (mut files, mut rows, mut bytes) = (0, 0, 0);
    for kind in FileKind::ALL {
        for path in coffee_model::dataset::files_of(dir, kind).unwrap_or_default() {
            files += 1;
            bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
            rows += count_lines(&path).saturating_sub(1);
        }
    }
    (files, rows, bytes)
}

fn count_lines(path: &Path) -> u64 {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(path) else { return 0 };
    let mut buf = vec![0u8; 1 << 16];
    let (mut lines, mut last) = (0u64, b'\n');
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    // A last line without a newline still counts.
    lines + u64::from(last != b'\n')
}

/// Generates `generated/<scale>/` unless it is already complete (blocking: run it off the async threads).
pub fn generate(data_dir: &Path, scale: &str) -> anyhow::Result<DatasetView> {
    let parsed: Scale = scale.parse()?;
    anyhow::ensure!(parsed != Scale::Full, "the full scale is too large for the console: use `coffee gen`");
    let id = format!("generated-{scale}");
    if let Some(view) = view(data_dir, &id) {
        return Ok(view);
    }
    let dir = data_dir.join("generated").join(scale);
    // A leftover of an interrupted run would mix with the new files: start clean.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let summary = coffee_tools::gen::generate(&GenOptions { scale: parsed, seed: GEN_SEED, out: dir.clone() })?;
    std::fs::write(dir.join(COMPLETE_MARKER), summary.to_string())?;
    view(data_dir, &id).ok_or_else(|| anyhow::anyhow!("generated {} but cannot read it back", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_leave_the_data_folder() {
        let data = Path::new("/srv/data");
        for id in ["../etc", "upload-../../etc", "upload-", "generated-../x", "/etc/passwd", "sample/.."] {
            assert_eq!(resolve(data, id), None, "{id}");
        }
    }
}
