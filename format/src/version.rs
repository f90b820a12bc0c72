//! Release version ordering, used to refuse downgrades. Versions compare piece by piece,
//! split on `.`, `-`, `+` and `~`: numeric pieces as numbers, others as text, and a
//! version that is a prefix of another is older (`1.2` < `1.2.1`).

use std::cmp::Ordering;

pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let split =
        |v: &str| -> Vec<String> { v.split(['.', '-', '+', '~']).map(str::to_owned).collect() };
    let (left, right) = (split(a), split(b));
    for (x, y) in left.iter().zip(right.iter()) {
        let order = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => Ordering::Greater,
            (Err(_), Ok(_)) => Ordering::Less,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    left.len().cmp(&right.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_people_expect() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("1.2", "1.2.1"), Ordering::Less);
        assert_eq!(compare_versions("2024.05.1", "2024.05.1"), Ordering::Equal);
        assert_eq!(compare_versions("1.0-rc1", "1.0-rc2"), Ordering::Less);
    }
}
