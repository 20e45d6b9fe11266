//! The hand-placed rows of the `tiny` scale (see the parent module's documentation: *Tiny scenarios*).

use super::*;

pub(super) fn write_scenarios(files: &mut MonthFiles, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
    boundaries(files, rng)?;
    q4_ties(files, rng)?;
    // Last, so that the sums the ties are placed against include every other row of the month.
    match (files.month.year, files.month.month) {
        (2024, 1) => q2_quantity_tie(files, rng, 3, 4),
        (2024, 7) => q2_profit_tie(files, rng, 5, 8),
        (2025, 1) => q2_quantity_tie(files, rng, 1, 2),
        _ => Ok(()),
    }
}

fn anonymous(rng: &mut ChaCha8Rng, store: u32, day: u32, second: u32) -> Tx {
    Tx { id: rng.gen(), store, payment: 1, day, second, ..Tx::default() }
}

/// Final amounts just below, at and above 75.00 at both edges of the 06:00-23:00 window, on the 15th.
fn boundaries(files: &mut MonthFiles, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
    let seconds = [5 * 3600 + 59 * 60 + 59, 6 * 3600, 23 * 3600, 23 * 3600 + 1];
    for (i, &second) in seconds.iter().enumerate() {
        for (j, discount) in [501, 0, 499].into_iter().enumerate() {
            let mut tx = anonymous(rng, (i * 3 + j) as u32 % 9 + 1, 15, second);
            if discount == 0 {
                // 30.00 + 27.00 + 18.00 = 75.00 with no discount.
                [(8, 3), (5, 3), (7, 2)].into_iter().for_each(|(item, qty)| tx.push_item(item, qty));
            } else {
                // 30.00 + 27.00 + 16.00 + 7.00 = 80.00, less 5.01 or 4.99 with a voucher.
                [(8, 3), (5, 3), (3, 2), (2, 1)].into_iter().for_each(|(item, qty)| tx.push_item(item, qty));
                tx.voucher = Some(7);
                tx.discount = discount;
            }
            files.write(&tx)?;
        }
    }
    Ok(())
}

/// Store [`TIE_STORE`]: users 21 and 20 buy twice a month in 2024-01 and 2025-01, users 12, 10 and 9 once
/// (4, 4, 2, 2, 2 in all); user 4 buys ten times in 2023-12. Written from the highest id down, so that taking
/// the first user seen is not the same as taking the lowest id.
fn q4_ties(files: &mut MonthFiles, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
    let purchases: &[(u32, u32)] = match (files.month.year, files.month.month) {
        (2024, 1) | (2025, 1) => &[(21, 2), (20, 2), (12, 1), (10, 1), (9, 1)],
        (2023, 12) => &[(4, 10)],
        _ => &[],
    };
    let mut second = 12 * 3600;
    for &(user, times) in purchases {
        for _ in 0..times {
            let mut tx = anonymous(rng, TIE_STORE, 20, second);
            tx.user = Some(user);
            tx.push_item(1, 1);
            files.write(&tx)?;
            second += 1;
        }
    }
    Ok(())
}

/// Adds units of items `a` and `b` (same price or not) until both sell exactly one unit more than any item
/// did; when they have the same price their profit ties too, and it is raised above every other item's.
fn q2_quantity_tie(files: &mut MonthFiles, rng: &mut ChaCha8Rng, a: u8, b: u8) -> anyhow::Result<()> {
    let mut target = files.qty.iter().max().copied().unwrap_or(0) + 1;
    if price(a) == price(b) {
        let top_profit = files.profit.iter().max().copied().unwrap_or(0);
        target = target.max(top_profit / price(a) + 1);
    }
    let add_a = target - files.qty[usize::from(a) - 1];
    let add_b = target - files.qty[usize::from(b) - 1];
    add_units(files, rng, (b, add_b), (a, add_a))
}

/// Adds units of items `a` and `b` (different prices) until both have the same profit, the smallest common
/// multiple of their prices above every item's profit.
fn q2_profit_tie(files: &mut MonthFiles, rng: &mut ChaCha8Rng, a: u8, b: u8) -> anyhow::Result<()> {
    let step = lcm(price(a), price(b));
    let top_profit = files.profit.iter().max().copied().unwrap_or(0);
    let target = (top_profit / step + 1) * step;
    let add_a = (target - files.profit[usize::from(a) - 1]) / price(a);
    let add_b = (target - files.profit[usize::from(b) - 1]) / price(b);
    add_units(files, rng, (b, add_b), (a, add_a))
}

/// Writes anonymous transactions on the last day of the month holding up to 3 units of each of two items
/// until `first.1` units of `first.0` and `second.1` units of `second.0` are added.
fn add_units(
    files: &mut MonthFiles,
    rng: &mut ChaCha8Rng,
    mut first: (u8, i64),
    mut second: (u8, i64),
) -> anyhow::Result<()> {
    let day = files.month.days();
    let mut clock = 12 * 3600;
    while first.1 > 0 || second.1 > 0 {
        let mut tx = anonymous(rng, clock % 9 + 1, day, clock);
        for (item, left) in [&mut first, &mut second] {
            if *left > 0 {
                let qty = (*left).min(3);
                tx.push_item(*item, qty as u8);
                *left -= qty;
            }
        }
        files.write(&tx)?;
        clock += 1;
    }
    Ok(())
}

fn lcm(a: Cents, b: Cents) -> Cents {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}
