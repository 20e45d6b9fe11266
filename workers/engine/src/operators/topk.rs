//! Top-k with the contract's tie rule: a higher count first, and among equal counts the lowest id.

/// The `k` best of `items` by `(count desc, id asc)`, best first.
pub fn top_k<T>(mut items: Vec<T>, k: usize, key: impl Fn(&T) -> (u64, u32)) -> Vec<T> {
    items.sort_by(|a, b| {
        let (ca, ia) = key(a);
        let (cb, ib) = key(b);
        cb.cmp(&ca).then(ia.cmp(&ib))
    });
    items.truncate(k);
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
}
