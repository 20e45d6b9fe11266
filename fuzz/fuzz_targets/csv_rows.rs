//! The CSV row parsers: the input is read as CSV (no header) and every record goes through each file kind's
//! parser, which must answer a row or an error.
#![no_main]

use coffee_model::model::{MenuItem, Record, Store, Transaction, TransactionItem, User};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = simd_csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(data);
    let mut record = Record::new();
    while let Ok(true) = reader.read_byte_record(&mut record) {
        let _ = Transaction::parse(&record);
        let _ = TransactionItem::parse(&record);
        let _ = User::parse(&record);
        let _ = Store::parse(&record);
        let _ = MenuItem::parse(&record);
    }
});
