//! "Did you mean" hints for mistyped keys.

/// The candidate closest to `word`, if it is close enough to be a likely typo: case is ignored
/// (`circleciApiAddr` finds `circleciAPIAddr`), and up to one edit in three characters
/// (at most three) is allowed. Ties go to the earlier candidate.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(&word_lower, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &[
        "minReplicas",
        "maxReplicas",
        "idleTimeout",
        "circleciAPIAddr",
        "token",
    ];

    #[test]
    fn finds_typos_and_case_slips() {
        assert_eq!(did_you_mean("minReplica", KEYS), Some("minReplicas"));
        assert_eq!(did_you_mean("maxreplicas", KEYS), Some("maxReplicas"));
        assert_eq!(did_you_mean("idle_timeout", KEYS), Some("idleTimeout"));
        assert_eq!(
            did_you_mean("circleciApiAddr", KEYS),
            Some("circleciAPIAddr")
        );
        assert_eq!(did_you_mean("tokn", KEYS), Some("token"));
    }

    #[test]
    fn unrelated_words_get_no_hint() {
        assert_eq!(did_you_mean("image", KEYS), None);
        assert_eq!(did_you_mean("", KEYS), None);
        assert_eq!(did_you_mean("x", &[]), None);
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
