// SPDX-License-Identifier: GPL-2.0

//! Implementation of the `#[kunit_tests]` attribute.
//!
//! Turns an inline module holding `#[test]` functions into a KUnit suite: one KUnit case per
//! `#[test]` function, registered through `kernel::kunit_unsafe_test_suite!`. See the
//! documentation of `kunit_tests` in `lib.rs` for the user-facing description.
//!
//! Backported to 6.12 after the design of upstream's `rust/macros/kunit.rs` (Linux 6.15+), but
//! written in the token-walking style of the other 6.12 macros (no `syn`).

use proc_macro::{Delimiter, Group, TokenStream, TokenTree};
use std::fmt::Write;

/// `struct kunit_suite::name` is a `char[256]`, and it must stay NUL-terminated.
const MAX_SUITE_NAME_LEN: usize = 255;

/// The error for items other than `mod name { ... }`: an out-of-line `mod name;` has no body
/// the suite could be added to.
const NOT_INLINE_MOD: &str = "`#[kunit_tests]` can only be applied to an inline module";

/// A `#[test]` function found in the module body.
struct TestFn {
    /// The function name as written (possibly a raw identifier such as `r#match`).
    ident: String,
    /// The `#[cfg(...)]` attributes of the function, re-emitted around its call so that the
    /// wrapper still compiles when the function itself is configured out.
    cfgs: String,
}

impl TestFn {
    /// The name KUnit reports, without the `r#` of a raw identifier.
    fn name(&self) -> &str {
        self.ident.strip_prefix("r#").unwrap_or(&self.ident)
    }
}

/// Parses the attribute's argument, which must be a single identifier naming the suite.
fn parse_suite_name(attr: TokenStream) -> String {
    let mut it = attr.into_iter();
    let name = match (it.next(), it.next()) {
        (Some(TokenTree::Ident(ident)), None) => ident.to_string(),
        _ => panic!("expected `#[kunit_tests(suite_name)]` with a single identifier"),
    };
    // KUnit prints the name in KTAP output and uses it for debugfs and filtering, so keep it to
    // plain ASCII (a raw identifier would also be stringified with its `r#`).
    if name.starts_with("r#") || !name.is_ascii() {
        panic!("the KUnit suite name `{name}` must be a plain ASCII identifier");
    }
    if name.len() > MAX_SUITE_NAME_LEN {
        panic!("the KUnit suite name `{name}` is longer than {MAX_SUITE_NAME_LEN} bytes");
    }
    name
}

/// Returns the name of an outer attribute `#[name ...]`, e.g. `test` or `cfg`.
fn attr_name(attr: &Group) -> Option<String> {
    match attr.stream().into_iter().next() {
        Some(TokenTree::Ident(ident)) => Some(ident.to_string()),
        _ => None,
    }
}

/// Returns whether `attr` is exactly `[test]`.
fn is_test_attr(attr: &Group) -> bool {
    let mut it = attr.stream().into_iter();
    matches!(
        (it.next(), it.next()),
        (Some(TokenTree::Ident(ident)), None) if ident.to_string() == "test"
    )
}

pub(crate) fn kunit_tests(attr: TokenStream, ts: TokenStream) -> TokenStream {
    let suite = parse_suite_name(attr);

    // The item is `<attributes> <visibility> mod <name> { <body> }`.
    let mut item: Vec<TokenTree> = ts.into_iter().collect();
    let body = match item.pop() {
        Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Brace => group,
        _ => panic!("{NOT_INLINE_MOD}"),
    };
    match item.as_slice() {
        [.., TokenTree::Ident(kw), TokenTree::Ident(_)] if kw.to_string() == "mod" => (),
        _ => panic!("{NOT_INLINE_MOD}"),
    }

    // Walk the top-level tokens of the body once: collect the `#[test]` functions and drop their
    // `#[test]` attribute (the built-in one would otherwise try to use libtest), forwarding every
    // other token untouched so that spans, and thus diagnostics, point at the user's code.
    let mut tests = Vec::new();
    let mut new_body: Vec<TokenTree> = Vec::new();
    // Where the leading inner attributes (`#![...]`, `//!`) end: the generated `macro_rules!`
    // must come after them since inner attributes are only allowed first.
    let mut inner_attrs_end = 0;
    let mut at_start = true;
    // What the outer attributes since the end of the previous item said.
    let mut pending_test = false;
    let mut pending_cfgs = String::new();

    let mut it = body.stream().into_iter().peekable();
    while let Some(token) = it.next() {
        match &token {
            TokenTree::Punct(p) if p.as_char() == '#' => {
                let inner = matches!(it.peek(), Some(TokenTree::Punct(p)) if p.as_char() == '!');
                if inner {
                    // `#![...]`: pass the `#`, `!` and `[...]` through unchanged.
                    new_body.push(token);
                    new_body.push(it.next().unwrap());
                    if let Some(group) = it.next() {
                        new_body.push(group);
                    }
                    if at_start {
                        inner_attrs_end = new_body.len();
                    }
                    continue;
                }
                at_start = false;
                match it.next() {
                    Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Bracket => {
                        if is_test_attr(&group) {
                            pending_test = true;
                            continue;
                        }
                        if attr_name(&group).as_deref() == Some("cfg") {
                            write!(pending_cfgs, "#{group} ").unwrap();
                        }
                        new_body.push(token);
                        new_body.push(TokenTree::Group(group));
                    }
                    Some(other) => {
                        new_body.push(token);
                        new_body.push(other);
                    }
                    None => new_body.push(token),
                }
                continue;
            }
            TokenTree::Ident(ident) if pending_test && ident.to_string() == "fn" => {
                new_body.push(token);
                match it.next() {
                    Some(TokenTree::Ident(name)) => {
                        tests.push(TestFn {
                            ident: name.to_string(),
                            cfgs: core::mem::take(&mut pending_cfgs),
                        });
                        new_body.push(TokenTree::Ident(name));
                    }
                    _ => panic!("`#[test]` must be followed by a function"),
                }
                pending_test = false;
                continue;
            }
            // A `;` or a braced group at the top level ends an item (`struct S;`, `impl X {}`,
            // `use a::b;`, ...): a `#[test]` before it was not on a function.
            TokenTree::Punct(p) if p.as_char() == ';' => {
                if pending_test {
                    panic!("`#[test]` can only be applied to functions");
                }
                pending_cfgs.clear();
            }
            TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => {
                if pending_test {
                    panic!("`#[test]` can only be applied to functions");
                }
                pending_cfgs.clear();
            }
            _ => (),
        }
        at_start = false;
        new_body.push(token);
    }

    // Inside the module, `assert!` and `assert_eq!` must report to KUnit instead of panicking
    // (a panic would take the whole kernel down). A `macro_rules!` definition shadows the prelude
    // macros for the rest of the module, including nested modules and helper functions, which is
    // the same trick the 6.12 doctest generator uses (`scripts/rustdoc_test_gen.rs`).
    //
    // The failure location is the user's `assert!` call: `file!()` and `line!()` (the latter in
    // `kunit_assert!`) resolve to the outermost macro call site. The name is only printed when an
    // assertion fails outside of a KUnit task, where the suite name is the best we have.
    let prologue = format!(
        r#"
        #[allow(unused_macros)]
        macro_rules! assert {{
            ($cond:expr $(,)?) => {{{{
                ::kernel::kunit_assert!("{suite}", ::core::file!(), 0, $cond);
            }}}};
        }}

        #[allow(unused_macros)]
        macro_rules! assert_eq {{
            ($left:expr, $right:expr $(,)?) => {{{{
                ::kernel::kunit_assert_eq!("{suite}", ::core::file!(), 0, $left, $right);
            }}}};
        }}
        "#
    );

    // One `extern "C"` wrapper per test, the NULL-terminated case array and the suite itself. They
    // live in an anonymous `const` block so that none of their names can clash with the user's
    // items, while the test functions (items of the enclosing module) stay in scope. For
    //
    //     #[kunit_tests(my_suite)]
    //     mod tests { #[test] fn foo() { ... } }
    //
    // this is roughly:
    //
    //     const _: () = {
    //         unsafe extern "C" fn kunit_rust_wrapper_foo(_test: *mut kunit) {
    //             assert!(is_test_result_ok(foo()));
    //         }
    //         static mut KUNIT_TEST_CASES: [kunit_case; 2] = [
    //             kunit_case(c"foo", kunit_rust_wrapper_foo),
    //             kunit_case_null(),
    //         ];
    //         kunit_unsafe_test_suite!(my_suite, KUNIT_TEST_CASES);
    //     };
    let mut wrappers = String::new();
    let mut cases = String::new();
    for test in &tests {
        let ident = &test.ident;
        let name = test.name();
        let wrapper = format!("kunit_rust_wrapper_{name}");
        // The test's result goes through `is_test_result_ok()` so that both `()` and `Result`
        // returning tests are accepted, and an `Err` fails the case via our `assert!` above.
        let call = format!("assert!(::kernel::kunit::is_test_result_ok({ident}()));");
        let run = if test.cfgs.is_empty() {
            call
        } else {
            // If the `cfg` attributes remove the test function, the case would otherwise report
            // success without having run: report it as skipped instead.
            //
            // SAFETY (for both blocks in the generated code): KUnit calls `run_case` with a
            // pointer to the `struct kunit` of the running case, which is valid for the whole
            // call and is not accessed by anyone else until the case returns, so we may write
            // its `status` (this is what C's `kunit_mark_skipped()` does too).
            let cfgs = &test.cfgs;
            format!(
                r#"
                // SAFETY: `_test` is the valid, exclusively used `struct kunit` of this case.
                unsafe {{ (*_test).status = ::kernel::bindings::kunit_status_KUNIT_SKIPPED }};
                {cfgs}
                {{
                    // SAFETY: As above.
                    unsafe {{ (*_test).status = ::kernel::bindings::kunit_status_KUNIT_SUCCESS }};
                    {call}
                }}
                "#
            )
        };
        write!(
            wrappers,
            r#"
            /// # Safety
            ///
            /// `_test` must point to the `struct kunit` of the running case (KUnit guarantees it).
            unsafe extern "C" fn {wrapper}(_test: *mut ::kernel::bindings::kunit) {{
                {run}
            }}
            "#
        )
        .unwrap();
        writeln!(
            cases,
            "::kernel::kunit::kunit_case(c\"{name}\", {wrapper}),"
        )
        .unwrap();
    }
    let num_cases = tests.len() + 1;
    let epilogue = format!(
        r#"
        const _: () = {{
            {wrappers}

            // `static mut`: KUnit writes each case's `status` and `log` while running the suite.
            static mut KUNIT_TEST_CASES: [::kernel::bindings::kunit_case; {num_cases}] = [
                {cases}
                ::kernel::kunit::kunit_case_null(),
            ];

            // The array above is `static` and NULL-terminated by `kunit_case_null()`, as
            // `kunit_unsafe_test_suite!` requires.
            ::kernel::kunit_unsafe_test_suite!({suite}, KUNIT_TEST_CASES);
        }};
        "#
    );

    let mut final_body = TokenStream::new();
    final_body.extend(new_body.drain(..inner_attrs_end));
    final_body.extend(prologue.parse::<TokenStream>().unwrap());
    final_body.extend(new_body);
    final_body.extend(epilogue.parse::<TokenStream>().unwrap());

    // The suite calls into KUnit, so only build it when KUnit is built in. Rust's `cfg` sees a
    // tristate `CONFIG_FOO=y` as both `CONFIG_FOO` and `CONFIG_FOO="y"` (`=m` gives
    // `CONFIG_FOO_MODULE` instead); the explicit form says what is meant. Code calling KUnit's
    // exported functions from vmlinux cannot link against `CONFIG_KUNIT=m` anyway.
    //
    // `not(test)`: the host `--test` build of `make rusttest` sees the same `CONFIG_*` cfgs but
    // has no KUnit C code to link against. Kernel builds never set `test`.
    let mut out: TokenStream = "#[cfg(all(CONFIG_KUNIT = \"y\", not(test)))]"
        .parse()
        .unwrap();
    out.extend(item);
    out.extend([TokenTree::Group(Group::new(Delimiter::Brace, final_body))]);
    out
}
