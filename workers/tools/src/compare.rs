//! Comparing two NDJSON result files as multisets of lines, per query.
//!
//! Two results are equal when, for each `query` (Q1, Q2_QTY, Q2_PROFIT, Q3, Q4), they hold the same lines the
//! same number of times, in any order. Lines are compared by value, not by text: object keys in any order, any
//! JSON spelling of the same string, and numbers compared as exact decimals (`75.5`, `75.50` and `7.55e1` are
//! equal; `3098440` equals `3098440.0`). No number goes through `f64`, so distinct amounts never collide.
//!
//! A line that is not a JSON object with a string `query` lands in the group `invalid`, which makes the whole
//! comparison unequal even when both sides have the same invalid lines.

use std::collections::HashMap;
use std::path::Path;

/// The result kinds every comparison reports, present or not, in this order.
pub fn known_kinds() -> Vec<&'static str> {
    ResultKind::ALL.map(ResultKind::name).to_vec()
}

/// The group of lines that are not JSON objects with a string `query` field.
pub const INVALID: &str = "invalid";

/// How many differing lines are kept per side and query (the totals are always exact).
pub const MAX_LISTED: usize = 50;

// The views live in the serde-only types crate, so the console's page reads the same definitions.
pub use coffee_types::{Comparison, QueryComparison, ResultKind};

/// Compares two sets of result lines; blank lines are ignored.
pub fn compare_lines(left: &[String], right: &[String]) -> Comparison {
    let left = group(left);
    let right = group(right);
    let known = known_kinds();
    let mut names: Vec<&str> = known.clone();
    let mut others: Vec<&str> = left.keys().chain(right.keys()).map(String::as_str).collect();
    others.retain(|n| !known.contains(n) && *n != INVALID);
    others.sort_unstable();
    others.dedup();
    names.extend(others);
    if left.contains_key(INVALID) || right.contains_key(INVALID) {
        names.push(INVALID);
    }
    let empty = Vec::new();
    let queries: Vec<QueryComparison> = names
        .into_iter()
        .map(|name| compare_group(name, left.get(name).unwrap_or(&empty), right.get(name).unwrap_or(&empty)))
        .collect();
    let equal = queries.iter().all(|q| q.equal);
    Comparison { queries, equal }
}

/// Compares two NDJSON files (see [`compare_lines`]).
pub fn compare_files(a: &Path, b: &Path) -> anyhow::Result<Comparison> {
    let read = |p: &Path| -> anyhow::Result<Vec<String>> {
        let text = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        Ok(text.lines().map(str::to_owned).collect())
    };
    Ok(compare_lines(&read(a)?, &read(b)?))
}

/// One parsed line: its canonical text (what equality is decided on) and its original text (what is shown).
struct Line<'a> {
    canonical: String,
    original: &'a str,
}

/// Splits lines by their `query` value, dropping blank lines.
fn group(lines: &[String]) -> HashMap<String, Vec<Line<'_>>> {
    let mut groups: HashMap<String, Vec<Line>> = HashMap::new();
    for original in lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
        let (name, canonical) = match classify(original) {
            Some(found) => found,
            None => (INVALID.to_owned(), original.to_owned()),
        };
        groups.entry(name).or_default().push(Line { canonical, original });
    }
    groups
}

/// The query name and canonical text of a valid result line, or `None`.
fn classify(line: &str) -> Option<(String, String)> {
    // serde_json validates the line; the canonical text is then built from the text itself, which keeps numbers
    // exact.
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let name = value.as_object()?.get("query")?.as_str()?.to_owned();
    let canonical = canonical::canonicalize(line)?;
    Some((name, canonical))
}

fn compare_group(name: &str, left: &[Line], right: &[Line]) -> QueryComparison {
    // Pair off equal lines: a count per canonical text, left adds and right removes.
    let mut balance: HashMap<&str, i64> = HashMap::new();
    for line in left {
        *balance.entry(&line.canonical).or_default() += 1;
    }
    for line in right {
        *balance.entry(&line.canonical).or_default() -= 1;
    }
    let missing = unmatched(left, &mut balance, 1);
    let extra = unmatched(right, &mut balance, -1);
    QueryComparison {
        name: name.to_owned(),
        left: left.len(),
        right: right.len(),
        equal: missing.1 == 0 && extra.1 == 0 && name != INVALID,
        missing_from_right: missing.0,
        missing_from_right_total: missing.1,
        extra_in_right: extra.0,
        extra_in_right_total: extra.1,
    }
}

/// The lines of one side left over after pairing (`sign` 1 for left, -1 for right): listed up to [`MAX_LISTED`],
/// and their total. Consumes the balance so each surplus occurrence is reported once.
fn unmatched(lines: &[Line], balance: &mut HashMap<&str, i64>, sign: i64) -> (Vec<String>, usize) {
    let mut listed = Vec::new();
    let mut total = 0;
    for line in lines {
        let surplus = balance.get_mut(line.canonical.as_str()).expect("every line was counted");
        if *surplus * sign > 0 {
            *surplus -= sign;
            total += 1;
            if listed.len() < MAX_LISTED {
                listed.push(line.original.to_owned());
            }
        }
    }
    (listed, total)
}

/// Canonical text of a JSON value: keys sorted, strings re-escaped one way, numbers as exact minimal decimals.
mod canonical {
    /// The canonical text of `text`, which must be valid JSON (checked by the caller).
    pub(super) fn canonicalize(text: &str) -> Option<String> {
        let mut parser = Parser { text, pos: 0 };
        let mut out = String::with_capacity(text.len());
        parser.value(&mut out)?;
        Some(out)
    }

    struct Parser<'a> {
        text: &'a str,
        pos: usize,
    }

    impl Parser<'_> {
        fn peek(&mut self) -> Option<u8> {
            while let Some(&b) = self.text.as_bytes().get(self.pos) {
                if !b.is_ascii_whitespace() {
                    return Some(b);
                }
                self.pos += 1;
            }
            None
        }

        fn value(&mut self, out: &mut String) -> Option<()> {
            match self.peek()? {
                b'{' => self.object(out),
                b'[' => self.array(out),
                b'"' => {
                    let s = self.string()?;
                    out.push_str(&serde_json::to_string(&s).ok()?);
                    Some(())
                }
                b't' | b'f' | b'n' => {
                    let word = self.run(|b| b.is_ascii_alphabetic());
                    out.push_str(word);
                    Some(())
                }
                _ => {
                    let number = self.run(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
                    out.push_str(&super::number::canonical(number)?);
                    Some(())
                }
            }
        }

        /// The maximal run of bytes from the current position matching `accept`.
        fn run(&mut self, accept: impl Fn(u8) -> bool) -> &str {
            let start = self.pos;
            while self.text.as_bytes().get(self.pos).is_some_and(|&b| accept(b)) {
                self.pos += 1;
            }
            &self.text[start..self.pos]
        }

        /// A string literal, decoded (escapes resolved).
        fn string(&mut self) -> Option<String> {
            let start = self.pos;
            self.pos += 1;
            loop {
                match *self.text.as_bytes().get(self.pos)? {
                    b'\\' => self.pos += 2,
                    b'"' => break,
                    _ => self.pos += 1,
                }
            }
            self.pos += 1;
            serde_json::from_str(&self.text[start..self.pos]).ok()
        }

        fn expect(&mut self, byte: u8) -> Option<()> {
            (self.peek()? == byte).then(|| self.pos += 1)
        }

        fn object(&mut self, out: &mut String) -> Option<()> {
            self.expect(b'{')?;
            let mut members: Vec<(String, String)> = Vec::new();
            if self.peek()? != b'}' {
                loop {
                    self.peek()?;
                    let key = self.string()?;
                    self.expect(b':')?;
                    let mut value = String::new();
                    self.value(&mut value)?;
                    members.push((key, value));
                    if self.peek()? == b'}' {
                        break;
                    }
                    self.expect(b',')?;
                }
            }
            self.pos += 1;
            members.sort();
            out.push('{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).ok()?);
                out.push(':');
                out.push_str(value);
            }
            out.push('}');
            Some(())
        }

        fn array(&mut self, out: &mut String) -> Option<()> {
            self.expect(b'[')?;
            out.push('[');
            if self.peek()? != b']' {
                loop {
                    self.value(out)?;
                    if self.peek()? == b']' {
                        break;
                    }
                    self.expect(b',')?;
                    out.push(',');
                }
            }
            self.pos += 1;
            out.push(']');
            Some(())
        }
    }
}

/// Exact canonical text of JSON numbers.
mod number {
    /// Numbers further than this many zeros from the decimal point keep an exponent, so that a hostile `1e999999`
    /// cannot make a huge string. The form still depends only on the value, so equality stays exact.
    const MAX_ZEROS: i64 = 40;

    /// The shortest plain decimal text of a JSON number's value: no leading zeros, no trailing fractional zeros,
    /// no dot for whole numbers, `0` for any zero: `75.50` -> `75.5`, `3098440.0` -> `3098440`, `7.55e1` -> `75.5`.
    pub(super) fn canonical(text: &str) -> Option<String> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if whole.is_empty() || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        // value = digits * 10^exponent, with digits free of leading and trailing zeros.
        let all: String = [whole, fraction].concat();
        let mut exponent = exponent.checked_sub(fraction.len() as i64)?;
        let digits = all.trim_start_matches('0');
        let trimmed = digits.trim_end_matches('0');
        exponent += (digits.len() - trimmed.len()) as i64;
        if trimmed.is_empty() {
            return Some("0".to_owned());
        }
        let sign = if negative { "-" } else { "" };
        Some(format!("{sign}{}", place_point(trimmed, exponent)))
    }

    /// `digits * 10^exponent` as plain decimal text, or with an exponent when far from the point.
    fn place_point(digits: &str, exponent: i64) -> String {
        let len = digits.len() as i64;
        let point = len + exponent; // digits before the decimal point
        if (0..=MAX_ZEROS).contains(&exponent) {
            format!("{digits}{}", "0".repeat(exponent as usize))
        } else if exponent < 0 && point > 0 {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        } else if exponent < 0 && -point <= MAX_ZEROS {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else {
            format!("{digits}e{exponent}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn numbers_compare_as_exact_decimals() {
        let c = |s| number::canonical(s).unwrap();
        assert_eq!(c("75.50"), "75.5");
        assert_eq!(c("75.5"), "75.5");
        assert_eq!(c("75.500"), "75.5");
        assert_eq!(c("7.55e1"), "75.5");
        assert_eq!(c("3098440.00"), "3098440");
        assert_eq!(c("3098440"), "3098440");
        assert_eq!(c("0.05"), "0.05");
        assert_eq!(c("-0.0"), "0");
        assert_eq!(c("-12.30"), "-12.3");
        assert_eq!(c("1E+2"), "100");
        assert_eq!(c("12055387.76"), "12055387.76");
        // Values that round to the same f64 stay distinct.
        assert_ne!(c("9007199254740993"), c("9007199254740992"));
        assert_eq!(c("1e-100"), "1e-100");
        assert_eq!(c("10e-101"), "1e-100");
    }

    #[test]
    fn equal_as_multisets_in_any_order_and_spelling() {
        let left = lines(&[
            r#"{"query":"Q1","transaction_id":"a","final_amount":75.50}"#,
            r#"{"query":"Q1","transaction_id":"a","final_amount":75.50}"#,
            r#"{"query":"Q3","year_half_created_at":"2024-H1","store_name":"G \"X\"","tpv":10.00}"#,
            "",
        ]);
        let right = lines(&[
            r#"{"query":"Q3", "tpv":1e1, "store_name":"G \u0022X\u0022", "year_half_created_at":"2024-H1"}"#,
            r#"{"final_amount":75.5,"transaction_id":"a","query":"Q1"}"#,
            r#"{"query":"Q1","transaction_id":"a","final_amount":75.5}"#,
        ]);
        let c = compare_lines(&left, &right);
        assert!(c.all_equal(), "{c}");
        let names: Vec<&str> = c.queries.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, known_kinds());
        assert_eq!((c.query("Q1").unwrap().left, c.query("Q1").unwrap().right), (2, 2));
    }

    #[test]
    fn multiplicity_matters() {
        let one = r#"{"query":"Q1","transaction_id":"a","final_amount":80}"#;
        let c = compare_lines(&lines(&[one, one]), &lines(&[one]));
        assert!(!c.all_equal());
        let q1 = c.query("Q1").unwrap();
        assert_eq!((q1.missing_from_right_total, q1.extra_in_right_total), (1, 0));
        assert_eq!(q1.missing_from_right, [one]);
        assert!(c.query("Q4").unwrap().equal);
    }

    #[test]
    fn differences_are_listed_per_side_and_capped() {
        let left: Vec<String> = (0..60).map(|i| format!(r#"{{"query":"Q4","user_id":{i}}}"#)).collect();
        let right = lines(&[r#"{"query":"Q4","user_id":0.0}"#, r#"{"query":"Q4","user_id":1000}"#]);
        let c = compare_lines(&left, &right);
        let q4 = c.query("Q4").unwrap();
        assert_eq!((q4.left, q4.right), (60, 2));
        assert_eq!((q4.missing_from_right_total, q4.missing_from_right.len()), (59, MAX_LISTED));
        assert_eq!(q4.extra_in_right, [r#"{"query":"Q4","user_id":1000}"#]);
        let text = c.to_string();
        assert!(text.contains("DIFFERENT: 59 missing from right, 1 extra in right"), "{text}");
        assert!(text.contains(r#"+ {"query":"Q4","user_id":1000}"#), "{text}");
        assert!(text.contains("... and 9 more Q4 lines"), "{text}");
    }

    #[test]
    fn invalid_lines_make_it_unequal() {
        let same = lines(&["not json", r#"{"no_query":1}"#, r#"["Q1"]"#]);
        let c = compare_lines(&same, &same);
        assert!(!c.all_equal());
        let invalid = c.query(INVALID).unwrap();
        assert_eq!((invalid.left, invalid.right), (3, 3));
        assert!(known_kinds().iter().all(|q| c.query(q).unwrap().equal));
    }

    #[test]
    fn unknown_queries_are_compared_too() {
        let c = compare_lines(&lines(&[r#"{"query":"Q9","x":1}"#]), &[]);
        assert!(!c.all_equal());
        assert_eq!(c.queries.last().unwrap().name, "Q9");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["equal"], false);
        let unknown = known_kinds().len();
        assert_eq!(json["queries"][unknown]["missing_from_right"][0], r#"{"query":"Q9","x":1}"#);
    }

    #[test]
    fn files_are_compared_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.ndjson");
        let b = dir.path().join("b.ndjson");
        std::fs::write(&a, "{\"query\":\"Q1\",\"final_amount\":1.10}\r\n\n").unwrap();
        std::fs::write(&b, "{\"query\":\"Q1\",\"final_amount\":1.1}").unwrap();
        assert!(compare_files(&a, &b).unwrap().all_equal());
        assert!(compare_files(&a, &dir.path().join("missing")).is_err());
    }
}
