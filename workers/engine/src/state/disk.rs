//! The file operations the state layer uses, with what each makes durable, behind a trait: [`RealDisk`] is the
//! file system; [`SimDisk`] keeps files in memory and, at a simulated crash, loses what a real disk may lose
//! (bytes written but not synced, directory entries created, renamed or removed but not synced), so tests can
//! stage a power cut at any point.
//!
//! The durability rules both follow (those of POSIX file systems such as ext4):
//! - [`AppendFile::sync`] makes the file's bytes durable, not its name in its folder;
//! - [`Disk::sync_dir`] makes the creations, renames and removals of names in a folder durable.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A file opened for appending (created if missing).
pub trait AppendFile: Send {
    /// Appends bytes (buffered: durable only after [`AppendFile::sync`]).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes every byte appended so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes and makes that durable.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// A folder of files, as the state layer uses it.
pub trait Disk: Send + Sync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files in `dir` (none if it does not exist).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole file, or `None` if it does not exist.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Opens `path` for appending after its current end, creating it if missing.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// Creates or replaces `path` with `bytes`, synced (its name is not: see [`Disk::sync_dir`]).
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes `path`; a file already gone is not an error.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes every creation, rename and removal in `dir` so far durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Replaces `path` with `bytes` atomically and durably: a synced temporary file renamed over it, then the
/// folder synced. A crash leaves the old content or the new, never a mix.
pub fn write_atomically(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    disk.write_synced(&tmp, bytes)?;
    disk.rename(&tmp, path)?;
    disk.sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// The machine's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

struct RealFile(io::BufWriter<std::fs::File>);

impl AppendFile for RealFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.0.get_ref().sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.flush()?;
        let file = self.0.get_mut();
        file.set_len(len)?;
        file.sync_data()?;
        io::Seek::seek(file, io::SeekFrom::Start(len)).map(drop)
    }
}

impl Disk for RealDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                let mut names = Vec::new();
                for entry in entries {
                    let entry = entry?;
                    if entry.file_type()?.is_file() {
                        names.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
                Ok(names)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(RealFile(io::BufWriter::with_capacity(1 << 16, file))))
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = std::fs::File::create(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

/// One file of a [`SimDisk`]: its bytes as the running process sees them, of which the first `durable` are
/// synced (files are only appended to, truncated, or written whole, so what is synced is always a prefix, and
/// a sync costs nothing however long the file).
#[derive(Debug, Default, Clone)]
struct SimFile {
    bytes: Vec<u8>,
    durable: usize,
}

#[derive(Debug, Default)]
struct SimState {
    /// Files by identity (an inode number), shared by the names that point at them.
    files: BTreeMap<u64, SimFile>,
    next_inode: u64,
    /// Names as the running process sees them, and as a crash would leave them.
    names: Names,
    durable_names: Names,
    dirs: Vec<PathBuf>,
    /// Operations that may still succeed before the process is taken to die ([`SimDisk::fail_after`]).
    ops_left: Option<u64>,
}

/// File names by folder, then by name (a folder's entries are what a folder sync makes durable, and
/// comparing whole paths at every lookup made the simulator slow).
#[derive(Debug, Default, Clone)]
struct Names(BTreeMap<PathBuf, BTreeMap<String, u64>>);

fn split(path: &Path) -> (&Path, String) {
    let dir = path.parent().unwrap_or(Path::new(""));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (dir, name)
}

impl Names {
    fn get(&self, path: &Path) -> Option<u64> {
        let (dir, name) = split(path);
        self.0.get(dir)?.get(&name).copied()
    }

    fn insert(&mut self, path: &Path, inode: u64) {
        let (dir, name) = split(path);
        self.0.entry(dir.to_owned()).or_default().insert(name, inode);
    }

    fn remove(&mut self, path: &Path) -> Option<u64> {
        let (dir, name) = split(path);
        self.0.get_mut(dir)?.remove(&name)
    }

    fn in_dir(&self, dir: &Path) -> Option<&BTreeMap<String, u64>> {
        self.0.get(dir)
    }

    /// Every (path, inode), in path order.
    fn iter(&self) -> impl Iterator<Item = (PathBuf, u64)> + '_ {
        self.0.iter().flat_map(|(dir, names)| names.iter().map(move |(name, &inode)| (dir.join(name), inode)))
    }
}

/// An in-memory disk that loses, at [`SimDisk::crash`], what a real one may lose at a power cut. Clones share
/// the same disk.
#[derive(Debug, Clone, Default)]
pub struct SimDisk(Arc<Mutex<SimState>>);

/// How much of the bytes written but not synced a file keeps at a crash.
#[derive(Debug, Clone, Copy)]
pub enum Tear {
    /// None of them.
    Nothing,
    /// All of them (the page cache happened to be written back).
    Everything,
    /// The first `n` of them (a torn write).
    Prefix(usize),
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.0.lock().expect("sim disk lock")
    }

    /// A power cut: every name reverts to its last synced folder state, and every file keeps its synced bytes
    /// plus what `tear` says of the rest (asked per file, in path order).
    pub fn crash(&self, mut tear: impl FnMut(&Path) -> Tear) {
        let mut state = self.state();
        let state = &mut *state;
        let paths: BTreeMap<u64, PathBuf> = state.names.iter().map(|(p, i)| (i, p)).collect();
        for (inode, file) in &mut state.files {
            let unsynced = file.bytes.len() - file.durable;
            let keep = match paths.get(inode).map_or(Tear::Nothing, |p| tear(p)) {
                Tear::Nothing => 0,
                Tear::Everything => unsynced,
                Tear::Prefix(n) => n.min(unsynced),
            };
            file.durable += keep;
            file.bytes.truncate(file.durable);
        }
        state.names = state.durable_names.clone();
        // Files no name points at any more are gone for good (their process died with the machine).
        let named: std::collections::BTreeSet<u64> = state.names.iter().map(|(_, inode)| inode).collect();
        state.files.retain(|inode, _| named.contains(inode));
    }

    /// Makes every operation after the next `ops` fail, as if the process died there (`None`: never). The
    /// caller then stages the crash ([`SimDisk::crash`]); a simulator uses it to stop a commit halfway.
    pub fn fail_after(&self, ops: Option<u64>) {
        self.state().ops_left = ops;
    }

    /// Every file name, as the running process sees them.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state().names.iter().map(|(path, _)| path).collect()
    }
}

struct SimAppend {
    disk: SimDisk,
    inode: u64,
    buffer: Vec<u8>,
}

impl SimAppend {
    fn tick(&self) -> io::Result<()> {
        self.disk.state().tick()
    }

    fn flush(&mut self) {
        let mut state = self.disk.state();
        if let Some(file) = state.files.get_mut(&self.inode) {
            file.bytes.append(&mut self.buffer);
        }
    }
}

impl AppendFile for SimAppend {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tick()?;
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.tick()?;
        self.flush();
        let mut state = self.disk.state();
        if let Some(file) = state.files.get_mut(&self.inode) {
            file.durable = file.bytes.len();
        }
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.tick()?;
        self.flush();
        let mut state = self.disk.state();
        if let Some(file) = state.files.get_mut(&self.inode) {
            file.bytes.truncate(len as usize);
            file.durable = file.bytes.len();
        }
        Ok(())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

impl SimState {
    /// One more operation: an error once the process is taken to be dead.
    fn tick(&mut self) -> io::Result<()> {
        match &mut self.ops_left {
            Some(0) => Err(io::Error::other("simulated crash: the process died here")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn create(&mut self, path: &Path) -> u64 {
        let inode = self.next_inode;
        self.next_inode += 1;
        self.files.insert(inode, SimFile::default());
        self.names.insert(path, inode);
        inode
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state();
        if !state.dirs.iter().any(|d| d == dir) {
            state.dirs.push(dir.to_owned());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(self.state().names.in_dir(dir).map(|names| names.keys().cloned().collect()).unwrap_or_default())
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let state = self.state();
        Ok(state.names.get(path).map(|inode| state.files[&inode].bytes.clone()))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let mut state = self.state();
        state.tick()?;
        let inode = match state.names.get(path) {
            Some(inode) => inode,
            None => state.create(path),
        };
        Ok(Box::new(SimAppend { disk: self.clone(), inode, buffer: Vec::new() }))
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state();
        state.tick()?;
        let inode = state.create(path);
        let file = state.files.get_mut(&inode).expect("just created");
        file.bytes = bytes.to_vec();
        file.durable = bytes.len();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.tick()?;
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to, inode);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.tick()?;
        state.names.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.tick()?;
        let now = state.names.in_dir(dir).cloned().unwrap_or_default();
        state.durable_names.0.insert(dir.to_owned(), now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/sim/node")
    }

    #[test]
    fn a_crash_keeps_synced_bytes_and_synced_names_only() {
        let disk = SimDisk::new();
        let (a, b) = (dir().join("a"), dir().join("b"));
        let mut file = disk.open_append(&a).unwrap();
        file.append(b"kept").unwrap();
        file.sync().unwrap();
        file.append(b" lost").unwrap();
        disk.sync_dir(&dir()).unwrap();
        disk.write_synced(&b, b"unnamed").unwrap();
        disk.crash(|_| Tear::Nothing);
        assert_eq!(disk.read(&a).unwrap().as_deref(), Some(&b"kept"[..]));
        assert_eq!(disk.read(&b).unwrap(), None, "created but its folder never synced");
    }

    #[test]
    fn a_crash_can_tear_an_unsynced_tail_and_bring_back_an_unsynced_removal() {
        let disk = SimDisk::new();
        let a = dir().join("a");
        let mut file = disk.open_append(&a).unwrap();
        file.append(b"0123").unwrap();
        file.sync().unwrap();
        disk.sync_dir(&dir()).unwrap();
        file.append(b"456789").unwrap();
        file.sync().unwrap();
        file.append(b"abc").unwrap();
        disk.remove(&a).unwrap();
        disk.crash(|_| Tear::Prefix(2));
        assert_eq!(
            disk.read(&a).unwrap().as_deref(),
            Some(&b"0123456789"[..]),
            "removal lost, buffered tail never written"
        );
    }

    #[test]
    fn atomic_writes_are_whole_after_a_crash() {
        let disk = SimDisk::new();
        let snap = dir().join("s.snap");
        write_atomically(&disk, &snap, b"first").unwrap();
        disk.write_synced(&snap.with_extension("tmp"), b"second").unwrap();
        disk.crash(|_| Tear::Everything);
        assert_eq!(disk.read(&snap).unwrap().as_deref(), Some(&b"first"[..]));
        write_atomically(&disk, &snap, b"second").unwrap();
        disk.crash(|_| Tear::Nothing);
        assert_eq!(disk.read(&snap).unwrap().as_deref(), Some(&b"second"[..]));
    }
}
