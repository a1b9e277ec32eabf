//! Naming the valid choices in an error without printing all of them: a policy of 5,000 hosts or
//! 200,000 segments must not answer one unknown name with every name it has.

/// How many names a sentence lists before it says how many more there are.
pub(crate) const NAMED: usize = 20;

/// The first [`NAMED`] of `names` in sorted order, then "and N more" when there are more:
/// `a, b, c` or `a, b, … t, and 4,993 more`.
pub(crate) fn a_few<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_unstable();
    names.dedup();
    let more = names.len().saturating_sub(NAMED);
    names.truncate(NAMED);
    let listed = names.join(", ");
    if more > 0 {
        format!("{listed}, and {more} more")
    } else {
        listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_names_and_how_many_more() {
        assert_eq!(a_few(["b", "a"]), "a, b");
        let many: Vec<String> = (0..5013).map(|i| format!("h{i:05}")).collect();
        let text = a_few(many.iter().map(String::as_str));
        assert!(text.starts_with("h00000, h00001, "), "{text}");
        assert!(text.ends_with("h00019, and 4993 more"), "{text}");
    }
}
