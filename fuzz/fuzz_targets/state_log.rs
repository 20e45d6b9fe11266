//! State-log recovery: any file opens, the records recovered re-frame to exactly the prefix kept, and the file
//! is cut to that prefix.
#![no_main]

use coffee_engine::state::log::{frame, RecordLog};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fuzz.log");
    std::fs::write(&path, data).expect("write");
    let (_log, recovery) = RecordLog::open(&path).expect("open");
    let kept: Vec<u8> = recovery.records.iter().flat_map(|r| frame(r)).collect();
    assert_eq!(&data[..kept.len()], kept.as_slice());
    assert_eq!(kept.len() as u64 + recovery.dropped_bytes, data.len() as u64);
    assert_eq!(std::fs::read(&path).expect("read"), kept);
});
