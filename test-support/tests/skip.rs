//! The skip rule itself: a skip is recorded where scripts/test counts it, fails under strict, and
//! a root-only test asked to run without root fails rather than passes.

use palisade_test_support::skip;

#[test]
fn a_skip_is_counted_and_fails_under_strict_and_root_is_required_not_assumed() {
    // One test, since it changes this process's environment.
    let tmp = std::env::temp_dir().join(format!("palisade-skip-{}", std::process::id()));
    std::env::set_var("PALISADE_SKIP_LOG", &tmp);
    std::env::remove_var("PALISADE_TEST_STRICT");
    assert!(skip::skipping("a tool is missing"));
    assert!(!skip::have("surely-no-such-tool-here"));
    let log = std::fs::read_to_string(&tmp).unwrap();
    let _ = std::fs::remove_file(&tmp);
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(log.contains("a tool is missing") && log.contains("surely-no-such-tool-here"));

    std::env::set_var("PALISADE_TEST_STRICT", "1");
    let strict = std::panic::catch_unwind(|| skip::skipping("a tool is missing"));
    std::env::remove_var("PALISADE_TEST_STRICT");
    assert!(strict.is_err(), "under PALISADE_TEST_STRICT=1 a skip fails");

    let root = std::panic::catch_unwind(|| skip::require_root("network namespaces"));
    assert_eq!(root.is_ok(), skip::is_root());
}
