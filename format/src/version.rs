//! Release version order: the one order used by the device's downgrade check, the store's
//! release list and `prune`.
//!
//! A version is `MAIN[+BUILD]`. MAIN is cut into numbers (runs of digits), words (runs of
//! anything else but the separators) and the separators `.`, `-` and `~`, and two versions
//! compare token by token:
//!
//! - numbers as numbers, of any length (`1.10` > `1.9`, `rc10` > `rc9`, `01` = `1`);
//! - words byte by byte (`beta` > `alpha`);
//! - where the tokens differ in kind: `~` < `-` < the end < a word < `.` < a number. So `~`
//!   sorts before anything, the end included (Debian: `1.0~rc1` < `1.0`), a `-` pre-release
//!   sorts before its release (semver: `1.0-rc1` < `1.0`), `1.0~rc1` < `1.0-rc1`, and a
//!   suffix that is not a pre-release makes a later version (`1.0a` > `1.0`, `1.0.1` > `1.0a`).
//! - trailing `.0` pieces do not count: `1.0` = `1.0.0` = `1`, and `1.0-rc1` = `1.0.0-rc1`.
//!
//! BUILD (after the first `+`) is compared last, the same way, and only when MAIN is equal:
//! `1.0` < `1.0+build9` < `1.0+build10`.
//!
//! Equal in this order does not mean the same text (`1.0` and `1.0.0`): callers that need a
//! total order on strings break ties with the text itself.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Tilde,
    Hyphen,
    Word(&'a str),
    Dot,
    /// Digits without leading zeros ("" is zero).
    Number(&'a str),
}

impl Token<'_> {
    /// Where a token stands against a token of another kind; the end of a version stands at 2.
    fn rank(&self) -> u8 {
        match self {
            Token::Tilde => 0,
            Token::Hyphen => 1,
            Token::Word(_) => 3,
            Token::Dot => 4,
            Token::Number(_) => 5,
        }
    }
}

const END_RANK: u8 = 2;

fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        match bytes[i] {
            b'~' => {
                out.push(Token::Tilde);
                i += 1;
            }
            b'-' => {
                out.push(Token::Hyphen);
                i += 1;
            }
            b'.' => {
                out.push(Token::Dot);
                i += 1;
            }
            b'0'..=b'9' => {
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(Token::Number(text[start..i].trim_start_matches('0')));
            }
            _ => {
                while i < bytes.len() && !matches!(bytes[i], b'~' | b'-' | b'.' | b'0'..=b'9') {
                    i += 1;
                }
                // Cut only at ASCII bytes, so the slice stays on character boundaries.
                out.push(Token::Word(&text[start..i]));
            }
        }
    }
    without_trailing_zeros(out)
}

/// Drops `.0` pairs at the end of the version and before each `~` or `-`.
fn without_trailing_zeros(tokens: Vec<Token<'_>>) -> Vec<Token<'_>> {
    let mut out: Vec<Token<'_>> = Vec::with_capacity(tokens.len());
    let trim = |out: &mut Vec<Token<'_>>| {
        while out.len() >= 2
            && out[out.len() - 1] == Token::Number("")
            && out[out.len() - 2] == Token::Dot
        {
            out.truncate(out.len() - 2);
        }
    };
    for token in tokens {
        if matches!(token, Token::Tilde | Token::Hyphen) {
            trim(&mut out);
        }
        out.push(token);
    }
    trim(&mut out);
    out
}

fn compare_tokens(a: &Token<'_>, b: &Token<'_>) -> Ordering {
    match (a, b) {
        (Token::Number(x), Token::Number(y)) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        (Token::Word(x), Token::Word(y)) => x.cmp(y),
        _ => a.rank().cmp(&b.rank()),
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (left, right) = (tokens(a), tokens(b));
    for (x, y) in left.iter().zip(right.iter()) {
        let order = compare_tokens(x, y);
        if order != Ordering::Equal {
            return order;
        }
    }
    match (left.get(right.len()), right.get(left.len())) {
        (Some(extra), _) => extra.rank().cmp(&END_RANK),
        (_, Some(extra)) => END_RANK.cmp(&extra.rank()),
        (None, None) => Ordering::Equal,
    }
}

/// Compares two release versions in the order described in the module documentation.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a_main, a_build) = split_build(a);
    let (b_main, b_build) = split_build(b);
    compare_part(a_main, b_main).then_with(|| match (a_build, b_build) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => compare_part(x, y),
    })
}

fn split_build(version: &str) -> (&str, Option<&str>) {
    match version.split_once('+') {
        Some((main, build)) => (main, Some(build)),
        None => (version, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Ordering::{Equal, Greater, Less};

    #[test]
    fn orders_the_documented_cases() {
        let cases = [
            ("1.10", "1.9", Greater),
            ("1.2", "1.2.1", Less),
            ("2024.05.1", "2024.05.1", Equal),
            ("1.0-rc1", "1.0-rc2", Less),
            // Pre-releases before their release.
            ("1.0~rc1", "1.0", Less),
            ("1.0-rc1", "1.0", Less),
            ("1.0~rc1", "1.0-rc1", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0~rc1", "0.9", Greater),
            ("1.0-rc1", "0.9.9", Greater),
            // Natural order of text with numbers.
            ("1.0-rc10", "1.0-rc9", Greater),
            ("1.0~rc10", "1.0~rc9", Greater),
            ("1.0-beta", "1.0-alpha", Greater),
            ("1.0-rc1", "1.0-beta2", Greater),
            // Build metadata last.
            ("1.0+build10", "1.0+build9", Greater),
            ("1.0+build1", "1.0", Greater),
            ("1.1", "1.0+build99", Greater),
            ("1.0-rc1+b2", "1.0-rc1+b1", Greater),
            // Trailing zeros.
            ("1.0.0", "1.0", Equal),
            ("1", "1.0.0", Equal),
            ("1.0.0-rc1", "1.0-rc1", Equal),
            ("1.0.0.1", "1.0", Greater),
            // Suffixes that are not pre-releases.
            ("1.0a", "1.0", Greater),
            ("1.0.1", "1.0a", Greater),
            ("1.0a", "1.0-rc1", Greater),
            // Numbers of any length.
            (
                "1.99999999999999999999999",
                "1.99999999999999999999998",
                Greater,
            ),
            ("1.010", "1.10", Equal),
            ("2026.12.01-3", "2026.12.01-10", Less),
            ("0", "0.0", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    fn version() -> impl Strategy<Value = String> {
        "[0-9a-c._~+-]{0,10}"
    }

    proptest! {
        #[test]
        fn antisymmetric(a in version(), b in version()) {
            prop_assert_eq!(compare_versions(&a, &b), compare_versions(&b, &a).reverse());
        }

        #[test]
        fn transitive(a in version(), b in version(), c in version()) {
            let mut sorted = [a, b, c];
            sorted.sort_by(|x, y| compare_versions(x, y));
            prop_assert_ne!(compare_versions(&sorted[0], &sorted[1]), Greater);
            prop_assert_ne!(compare_versions(&sorted[1], &sorted[2]), Greater);
            prop_assert_ne!(compare_versions(&sorted[0], &sorted[2]), Greater);
        }

        #[test]
        fn reflexive(a in version()) {
            prop_assert_eq!(compare_versions(&a, &a), Equal);
        }
    }
}
