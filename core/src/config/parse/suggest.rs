//! "Did you mean" hints for mistyped keys.

/// The candidate closest to `word`, if it is close enough to be a likely typo: case is ignored
/// (`circleciApiAddr` finds `circleciAPIAddr`), and up to one edit (a swap of neighbours counts
/// as one) in three characters
/// (at most three) is allowed. Ties go to the earlier candidate.
pub(super) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(&word_lower, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance over characters where swapping two neighbours counts as one edit (optimal
/// string alignment), since transposed letters are the commonest typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
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
        assert_eq!(edit_distance("resourceclasess", "resourceclasses"), 1);
    }
}
