//! Writing CSV values as the real files spell them, without allocating per value.

use super::Month;
use coffee_model::model::Cents;

pub(super) fn push_uint(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// An id written as float text, like the real `user_id` and `voucher_id` columns: `17272.0`.
pub(super) fn push_float_id(buf: &mut Vec<u8>, id: u32) {
    push_uint(buf, u64::from(id));
    buf.extend_from_slice(b".0");
}

/// An amount written like the real files (Python float text): `63.5`, `75.0`, `12.25`, `0.05`.
pub(super) fn push_amount(buf: &mut Vec<u8>, cents: Cents) {
    if cents < 0 {
        buf.push(b'-');
    }
    let cents = cents.unsigned_abs();
    push_uint(buf, cents / 100);
    buf.push(b'.');
    let fraction = cents % 100;
    buf.push(b'0' + (fraction / 10) as u8);
    if !fraction.is_multiple_of(10) {
        buf.push(b'0' + (fraction % 10) as u8);
    }
}

pub(super) fn push_two(buf: &mut [u8], at: usize, v: u32) {
    buf[at] = b'0' + (v / 10 % 10) as u8;
    buf[at + 1] = b'0' + (v % 10) as u8;
}

pub(super) fn push_date(buf: &mut Vec<u8>, year: u16, month: u8, day: u8) {
    let mut text = *b"0000-00-00";
    push_two(&mut text, 0, u32::from(year) / 100);
    push_two(&mut text, 2, u32::from(year) % 100);
    push_two(&mut text, 5, u32::from(month));
    push_two(&mut text, 8, u32::from(day));
    buf.extend_from_slice(&text);
}

pub(super) fn format_timestamp(text: &mut [u8; 19], month: Month, day: u32, second: u32) {
    *text = *b"0000-00-00 00:00:00";
    push_two(text, 0, u32::from(month.year) / 100);
    push_two(text, 2, u32::from(month.year) % 100);
    push_two(text, 5, u32::from(month.month));
    push_two(text, 8, day);
    push_two(text, 11, second / 3600);
    push_two(text, 14, second / 60 % 60);
    push_two(text, 17, second % 60);
}

pub(super) fn push_timestamp(buf: &mut Vec<u8>, month: Month, day: u32, second: u32) {
    let mut text = [0u8; 19];
    format_timestamp(&mut text, month, day, second);
    buf.extend_from_slice(&text);
}
