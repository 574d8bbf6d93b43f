//! Compile-time checks of the attribute macros (`trybuild`): each determinism rule of
//! `#[orchestration]` is an error on the offending call, the escape hatches compile, and
//! typed calls refuse the wrong input type. The expected messages are the `.stderr` files
//! beside each case (`TRYBUILD=overwrite` rewrites them after a deliberate change).

#[test]
fn rules_and_signatures() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
