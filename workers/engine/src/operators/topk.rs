//! Top-k with the contract's tie rule: a higher count first, and among equal counts the lowest id.

/// The `k` best of `items` by `(count desc, id asc)`, best first. Ids are distinct among `items` (one entry
/// per customer), so the order is total and the unstable selection gives one answer: the `k` best are picked in
/// linear time, then only they are sorted (a store has thousands of customers and keeps three).
pub fn top_k<T>(mut items: Vec<T>, k: usize, key: impl Fn(&T) -> (u64, u32)) -> Vec<T> {
    let better = |a: &T, b: &T| {
        let (ca, ia) = key(a);
        let (cb, ib) = key(b);
        cb.cmp(&ca).then(ia.cmp(&ib))
    };
    if k == 0 {
        return Vec::new();
    }
    if items.len() > k {
        items.select_nth_unstable_by(k - 1, better);
        items.truncate(k);
    }
    items.sort_unstable_by(better);
    items
}

/// The best of `items` by `(value desc, id asc)`, if any.
pub fn best<T: Copy>(items: impl IntoIterator<Item = T>, key: impl Fn(&T) -> (i64, u32)) -> Option<T> {
    items.into_iter().reduce(|a, b| {
        let (va, ia) = key(&a);
        let (vb, ib) = key(&b);
        if vb > va || (vb == va && ib < ia) {
            b
        } else {
            a
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_lowest_id() {
        let items = vec![(5u64, 9u32), (7, 3), (5, 2), (5, 4), (1, 1)];
        assert_eq!(top_k(items, 3, |&(c, id)| (c, id)), vec![(7, 3), (5, 2), (5, 4)]);
        let items = [(10i64, 8u32), (10, 3), (9, 1)];
        assert_eq!(best(items, |&(v, id)| (v, id)), Some((10, 3)));
        assert_eq!(best(Vec::<(i64, u32)>::new(), |&(v, id)| (v, id)), None);
    }

    proptest::proptest! {
        /// Selecting the best then sorting them gives what sorting everything gives, for any counts and k.
        #[test]
        fn selection_agrees_with_a_full_sort(
            counts in proptest::collection::vec(0u64..5, 0..60), k in 0usize..8,
        ) {
            // Distinct ids, as the callers' (one entry per customer).
            let items: Vec<(u64, u32)> = counts.into_iter().zip((0u32..).map(|i| i.wrapping_mul(2654435761))).collect();
            let mut sorted = items.clone();
            sorted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            sorted.truncate(k);
            proptest::prop_assert_eq!(top_k(items, k, |&(c, id)| (c, id)), sorted);
        }
    }
}
