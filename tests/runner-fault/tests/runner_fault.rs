//! Run in the guest only with FAULT=user: its failure must fail the run.

#[test]
fn deliberate_failure() {
    assert_eq!(1 + 1, 3, "deliberate failure (FAULT=user)");
}
