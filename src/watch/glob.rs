//! `critical` patterns: `*` matches any run of characters (including none), `?` exactly
//! one; everything else matches itself. Patterns apply to visible file names, which never
//! contain `/`, so there is no path semantics to get wrong.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<char>);

impl Pattern {
    pub fn new(text: &str) -> Self {
        Pattern(text.chars().collect())
    }

    /// Whether `name` matches, in O(pattern × name) worst case without recursion.
    pub fn matches(&self, name: &str) -> bool {
        let p = &self.0;
        let n: Vec<char> = name.chars().collect();
        let (mut pi, mut ni) = (0, 0);
        // Where the last `*` was and which name position it is currently absorbing up to.
        let mut star: Option<(usize, usize)> = None;
        while ni < n.len() {
            match p.get(pi) {
                Some('*') => {
                    star = Some((pi, ni));
                    pi += 1;
                }
                Some(&c) if c == '?' || c == n[ni] => {
                    pi += 1;
                    ni += 1;
                }
                _ => match star {
                    Some((sp, sn)) => {
                        pi = sp + 1;
                        ni = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|c| *c == '*')
    }
}

/// Whether any of `patterns` matches `name`.
pub fn any_matches(patterns: &[Pattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_a_shell_glob() {
        let cases = [
            ("database-*", "database-password", true),
            ("database-*", "database-", true),
            ("database-*", "db-password", false),
            ("jwt-secret", "jwt-secret", true),
            ("jwt-secret", "jwt-secret2", false),
            ("*", "", true),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("?at", "cat", true),
            ("?at", "at", false),
            ("*-key", "api-key", true),
            ("*.pem", "tls.pem.bak", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(name),
                want,
                "{pattern} ~ {name}"
            );
        }
    }
}
