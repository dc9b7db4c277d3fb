//! Redis-style glob patterns over byte keys, for `invalidate_pattern` (and later `KEYS`/`SCAN`).
//!
//! Syntax and meaning as in Redis 7's `stringmatchlen`: `*` any run of bytes, `?` one byte,
//! `[abc]` `[^abc]` `[a-z]` a class, `\x` the byte `x` literally. A pattern is never refused
//! for its syntax: a trailing `\` stands for itself, a class without its `]` runs to the end
//! of the pattern (`[a` matches `a`; `[` alone matches nothing), and a range may end in `]`
//! (`[a-]` is the range from `]` to `a`). One deviation: a pattern of stars only matches the
//! empty key (Redis's matches it only for a lone `*`, which `KEYS` and `SCAN` treat as "every
//! key" before matching). Unlike Redis's recursive matcher,
//! matching here is iterative with one backtrack point, so its cost is bounded by
//! O(pattern × key) for any input; patterns are capped at [`MAX_PATTERN_BYTES`].

use crate::error::CacheError;

/// Longest accepted pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// One step of a pattern: 4 bytes (a class is an index into [`Glob::classes`]). A token of
/// 32 bytes (a class held its own vector) made a compiled pattern 32 times its length, and a
/// subscriber's patterns held 13 times what the clients' budget charged them (review,
/// 2026-12-06).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Byte(u8),
    AnyByte,
    AnyRun,
    Class(u16),
}

/// A class: `ranges[start..end]` of its glob, negated or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Class {
    negated: bool,
    start: u16,
    end: u16,
}

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Box<[Token]>,
    classes: Box<[Class]>,
    ranges: Box<[(u8, u8)]>,
    source: Box<[u8]>,
}

/// The most heap bytes a compiled pattern holds per byte of the pattern ([`Glob::heap_bytes`]
/// is at most this times its length): its copy (1), a token (4), and at most a class (6)
/// and a range (2) — each takes at least one byte of the pattern.
pub const HEAP_BYTES_PER_PATTERN_BYTE: usize = 13;

impl Glob {
    /// Compiles `pattern`; fails only when it is longer than [`MAX_PATTERN_BYTES`].
    pub fn new(pattern: &[u8]) -> Result<Self, CacheError> {
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(CacheError::PatternTooLong {
                len: pattern.len(),
                max: MAX_PATTERN_BYTES,
            });
        }
        let mut tokens = Vec::with_capacity(pattern.len());
        let mut classes: Vec<Class> = Vec::new();
        let mut ranges: Vec<(u8, u8)> = Vec::new();
        let mut i = 0;
        while i < pattern.len() {
            let b = pattern[i];
            i += 1;
            match b {
                b'*' => {
                    // Consecutive stars match what one star matches.
                    if tokens.last() != Some(&Token::AnyRun) {
                        tokens.push(Token::AnyRun);
                    }
                }
                b'?' => tokens.push(Token::AnyByte),
                b'\\' if i < pattern.len() => {
                    tokens.push(Token::Byte(pattern[i]));
                    i += 1;
                }
                b'[' => {
                    let start = ranges.len();
                    let (negated, used) = parse_class(&pattern[i..], &mut ranges);
                    // At most 1024 pattern bytes: indexes and range positions fit in u16.
                    tokens.push(Token::Class(classes.len() as u16));
                    classes.push(Class {
                        negated,
                        start: start as u16,
                        end: ranges.len() as u16,
                    });
                    i += used;
                }
                other => tokens.push(Token::Byte(other)),
            }
        }
        Ok(Glob {
            tokens: tokens.into_boxed_slice(),
            classes: classes.into_boxed_slice(),
            ranges: ranges.into_boxed_slice(),
            source: pattern.into(),
        })
    }

    /// The heap bytes the compiled pattern holds (at most [`HEAP_BYTES_PER_PATTERN_BYTE`]
    /// times its length).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.tokens)
            + std::mem::size_of_val(&*self.classes)
            + std::mem::size_of_val(&*self.ranges)
            + self.source.len()
    }

    /// The pattern as given.
    pub fn as_bytes(&self) -> &[u8] {
        &self.source
    }

    /// Whether the pattern matches every key (`*`), which lets a layer flush instead of scan.
    pub fn matches_everything(&self) -> bool {
        *self.tokens == [Token::AnyRun]
    }

    /// The literal bytes every match starts with, for prefix scans on ordered stores.
    pub fn literal_prefix(&self) -> Vec<u8> {
        self.tokens
            .iter()
            .map_while(|t| match t {
                Token::Byte(b) => Some(*b),
                _ => None,
            })
            .collect()
    }

    /// Whether `key` matches the whole pattern.
    pub fn matches(&self, key: &[u8]) -> bool {
        let toks = &self.tokens;
        let (mut t, mut k) = (0usize, 0usize);
        // Where to resume after the last `*`: the token after it and the key position it has
        // absorbed up to. Only the last star needs remembering: a later star can always absorb
        // whatever an earlier one would have.
        let mut resume: Option<(usize, usize)> = None;
        while k < key.len() {
            let step = match toks.get(t) {
                Some(Token::AnyRun) => {
                    resume = Some((t + 1, k));
                    t += 1;
                    continue;
                }
                Some(tok) => self.single_matches(*tok, key[k]),
                None => false,
            };
            if step {
                t += 1;
                k += 1;
            } else if let Some((rt, rk)) = resume {
                t = rt;
                k = rk + 1;
                resume = Some((rt, rk + 1));
            } else {
                return false;
            }
        }
        toks[t..].iter().all(|tok| *tok == Token::AnyRun)
    }

    fn single_matches(&self, tok: Token, b: u8) -> bool {
        match tok {
            Token::Byte(x) => x == b,
            Token::AnyByte => true,
            Token::Class(c) => {
                let c = self.classes[c as usize];
                self.ranges[c.start as usize..c.end as usize]
                    .iter()
                    .any(|&(lo, hi)| lo <= b && b <= hi)
                    != c.negated
            }
            Token::AnyRun => true,
        }
    }
}

/// Parses a class body after `[` as Redis 7 reads one: a first `^` negates; then, in
/// order, `\x` is the byte `x`, `]` ends the class, `a-z` is a range (reversed ones too,
/// and its end may be `]`), any other byte is itself. Without its `]` the class takes the
/// rest of the pattern. Adds its ranges to `ranges`; returns whether it is negated and the
/// bytes used (with the `]`).
fn parse_class(p: &[u8], ranges: &mut Vec<(u8, u8)>) -> (bool, usize) {
    let mut i = 0;
    let negated = p.first() == Some(&b'^');
    if negated {
        i += 1;
    }
    while i < p.len() {
        let rest = p.len() - i;
        match p[i] {
            b'\\' if rest >= 2 => {
                ranges.push((p[i + 1], p[i + 1]));
                i += 2;
            }
            b']' => return (negated, i + 1),
            lo if rest >= 3 && p[i + 1] == b'-' => {
                let hi = p[i + 2];
                ranges.push((lo.min(hi), lo.max(hi)));
                i += 3;
            }
            other => {
                ranges.push((other, other));
                i += 1;
            }
        }
    }
    (negated, i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, k: &str) -> bool {
        Glob::new(p.as_bytes()).unwrap().matches(k.as_bytes())
    }

    #[test]
    fn redis_semantics() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("user:*", "user:42"));
        assert!(!m("user:*", "users:42"));
        assert!(m("h?llo", "hello") && m("h?llo", "hallo") && !m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo") && m("h*llo", "heeeello"));
        assert!(m("h[ae]llo", "hello") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo"));
        assert!(m("h[b-a]llo", "hallo"), "reversed range");
        assert!(m(r"a\*b", "a*b") && !m(r"a\*b", "axb"));
        assert!(
            !m("a[", "a[") && !m("[", "["),
            "an empty class matches nothing"
        );
        assert!(
            m("[a", "a") && m("x[ab", "xb") && !m("[ab", "ab"),
            "a class runs to the end"
        );
        assert!(
            m("[^", "z") && !m("[^", ""),
            "an empty negated class matches any byte"
        );
        assert!(
            !m("h[a-]llo", "hallo") && m("h[a-]llo", "h]"),
            "a range may end in ]"
        );
        assert!(
            m("h[a-]x]y", "h^y") && m("h[a-]x]y", "hxy"),
            "`]` ends a range, not the class"
        );
        assert!(m(r"[\]]", "]") && m(r"[a\-z]", "-") && !m(r"[a\-z]", "b"));
        assert!(m(r"a\", r"a\"), "trailing backslash is literal");
        assert!(m("*a*b*c*", "xxaxxbxxcxx") && !m("*a*b*c*", "xxaxxcxxbxx"));
        assert!(m("a*", "a") && !m("a?", "a"));
        assert!(m("[]]", "]") || !m("[]]", "]"), "no panic on odd classes");
    }

    #[test]
    fn prefix_and_everything() {
        let g = Glob::new(b"user:1*x").unwrap();
        assert_eq!(g.literal_prefix(), b"user:1");
        assert!(Glob::new(b"**").unwrap().matches_everything());
        assert!(!g.matches_everything());
        assert!(matches!(
            Glob::new(&[b'a'; MAX_PATTERN_BYTES + 1]),
            Err(CacheError::PatternTooLong { .. })
        ));
    }

    /// A slow, obviously correct matcher over literal-or-star patterns, as an oracle.
    fn oracle(p: &[u8], k: &[u8]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((b'*', rest)) => (0..=k.len()).any(|i| oracle(rest, &k[i..])),
            Some((b'?', rest)) => !k.is_empty() && oracle(rest, &k[1..]),
            Some((c, rest)) => k.first() == Some(c) && oracle(rest, &k[1..]),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_oracle(p in "[ab*?]{0,8}", k in "[ab]{0,10}") {
            prop_assert_eq!(m(&p, &k), oracle(p.as_bytes(), k.as_bytes()));
        }

        #[test]
        fn any_bytes_never_panic(p in proptest::collection::vec(any::<u8>(), 0..64),
                                 k in proptest::collection::vec(any::<u8>(), 0..64)) {
            let g = Glob::new(&p).unwrap();
            let _ = g.matches(&k);
            let _ = g.literal_prefix();
            prop_assert!(g.heap_bytes() <= HEAP_BYTES_PER_PATTERN_BYTE * p.len());
        }
    }
}
