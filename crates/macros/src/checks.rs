//! The determinism checks of `#[orchestration]`: the calls that Durable Functions' code
//! analyzer flags in orchestrator code (wall clocks, sleeps, random numbers and new GUIDs,
//! environment variables, spawned tasks and threads, direct I/O) are compile errors on
//! their own span, each with the durable alternative.
//!
//! The check reads paths, not types: `SystemTime::now()` is caught under any import, a
//! method call on a value (`client.get(...)`) is not. A statement or expression marked
//! `#[nondeterministic]` is skipped (and the mark removed); `allow_nondeterministic` on the
//! attribute skips the whole function.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::punctuated::Punctuated;
use syn::visit_mut::{self, VisitMut};
use syn::{Attribute, Block, Expr, ExprPath, Macro, Stmt, Token};

/// One rule: a path suffix and what to say about it.
struct Rule {
    /// Matched against the path's last segments; `*` matches any one segment.
    suffix: &'static [&'static str],
    what: &'static str,
    instead: &'static str,
}

const CLOCK: &str = "use `ctx.current_utc_date_time()`, the orchestration's deterministic time";
const SLEEP: &str = "use a durable timer: `ctx.create_timer_after(duration).await`";
const RANDOM: &str = "use `ctx.new_guid()` or `ctx.random_u64()`, which replay the same values";
const ENV: &str = "read it in an activity, or pass it in the orchestration's input";
const SPAWN: &str =
    "schedule activities and sub-orchestrations, and combine them with `when_all` / `when_any`";
const IO: &str = "do I/O in an activity and call it with `ctx.call(activity, input)`";

const RULES: &[Rule] = &[
    rule(&["SystemTime", "now"], "reads the wall clock", CLOCK),
    rule(&["Instant", "now"], "reads the wall clock", CLOCK),
    rule(&["Utc", "now"], "reads the wall clock", CLOCK),
    rule(&["Local", "now"], "reads the wall clock", CLOCK),
    rule(
        &["OffsetDateTime", "now_utc"],
        "reads the wall clock",
        CLOCK,
    ),
    rule(
        &["OffsetDateTime", "now_local"],
        "reads the wall clock",
        CLOCK,
    ),
    rule(&["jiff", "Timestamp", "now"], "reads the wall clock", CLOCK),
    rule(&["Zoned", "now"], "reads the wall clock", CLOCK),
    rule(&["thread", "sleep"], "blocks the thread", SLEEP),
    rule(
        &["time", "sleep"],
        "sleeps outside the replay engine",
        SLEEP,
    ),
    rule(
        &["time", "sleep_until"],
        "sleeps outside the replay engine",
        SLEEP,
    ),
    rule(
        &["time", "interval"],
        "ticks outside the replay engine",
        SLEEP,
    ),
    rule(&["time", "timeout"], "times out on the wall clock", SLEEP),
    rule(
        &["task", "sleep"],
        "sleeps outside the replay engine",
        SLEEP,
    ),
    rule(&["rand", "random"], "draws a random number", RANDOM),
    rule(&["rand", "rng"], "draws random numbers", RANDOM),
    rule(&["thread_rng"], "draws random numbers", RANDOM),
    rule(&["OsRng"], "draws random numbers", RANDOM),
    rule(&["fastrand", "*"], "draws a random number", RANDOM),
    rule(&["getrandom", "*"], "draws random bytes", RANDOM),
    rule(&["Uuid", "new_v4"], "makes a random UUID", RANDOM),
    rule(&["Uuid", "now_v7"], "makes a time-based UUID", RANDOM),
    rule(&["Uuid", "now_v1"], "makes a time-based UUID", RANDOM),
    rule(&["env", "var"], "reads an environment variable", ENV),
    rule(&["env", "var_os"], "reads an environment variable", ENV),
    rule(&["env", "vars"], "reads the environment", ENV),
    rule(&["env", "vars_os"], "reads the environment", ENV),
    rule(&["env", "args"], "reads the process arguments", ENV),
    rule(&["env", "current_dir"], "reads the working directory", ENV),
    rule(
        &["tokio", "spawn"],
        "spawns a task outside the replay engine",
        SPAWN,
    ),
    rule(
        &["task", "spawn"],
        "spawns a task outside the replay engine",
        SPAWN,
    ),
    rule(&["task", "spawn_blocking"], "spawns a thread", SPAWN),
    rule(
        &["task", "spawn_local"],
        "spawns a task outside the replay engine",
        SPAWN,
    ),
    rule(&["thread", "spawn"], "spawns a thread", SPAWN),
    rule(&["fs", "*"], "does file I/O", IO),
    rule(&["File", "open"], "does file I/O", IO),
    rule(&["File", "create"], "does file I/O", IO),
    rule(&["OpenOptions", "new"], "does file I/O", IO),
    rule(&["TcpStream", "connect"], "does network I/O", IO),
    rule(&["TcpListener", "bind"], "does network I/O", IO),
    rule(&["UdpSocket", "bind"], "does network I/O", IO),
    rule(&["reqwest", "*"], "does network I/O", IO),
    rule(&["Command", "new"], "runs a process", IO),
    rule(&["io", "stdin"], "reads standard input", IO),
];

const fn rule(suffix: &'static [&'static str], what: &'static str, instead: &'static str) -> Rule {
    Rule {
        suffix,
        what,
        instead,
    }
}

/// Checks an orchestrator's body and removes its `#[nondeterministic]` marks.
pub(crate) fn check_and_strip(block: &mut Block, allow_all: bool) -> syn::Result<()> {
    let mut v = Checker {
        errors: None,
        allow_all,
    };
    v.visit_block_mut(block);
    match v.errors {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Checker {
    errors: Option<syn::Error>,
    allow_all: bool,
}

/// Removes a `#[nondeterministic]` mark; true if there was one.
fn take_mark(attrs: &mut Vec<Attribute>) -> bool {
    let before = attrs.len();
    attrs.retain(|a| !a.path().is_ident("nondeterministic"));
    attrs.len() != before
}

fn stmt_attrs(stmt: &mut Stmt) -> Option<&mut Vec<Attribute>> {
    match stmt {
        Stmt::Local(l) => Some(&mut l.attrs),
        Stmt::Expr(e, _) => expr_attrs(e),
        Stmt::Macro(m) => Some(&mut m.attrs),
        Stmt::Item(_) => None,
    }
}

fn expr_attrs(expr: &mut Expr) -> Option<&mut Vec<Attribute>> {
    Some(match expr {
        Expr::Array(e) => &mut e.attrs,
        Expr::Assign(e) => &mut e.attrs,
        Expr::Async(e) => &mut e.attrs,
        Expr::Await(e) => &mut e.attrs,
        Expr::Binary(e) => &mut e.attrs,
        Expr::Block(e) => &mut e.attrs,
        Expr::Call(e) => &mut e.attrs,
        Expr::Closure(e) => &mut e.attrs,
        Expr::Field(e) => &mut e.attrs,
        Expr::ForLoop(e) => &mut e.attrs,
        Expr::If(e) => &mut e.attrs,
        Expr::Let(e) => &mut e.attrs,
        Expr::Loop(e) => &mut e.attrs,
        Expr::Match(e) => &mut e.attrs,
        Expr::MethodCall(e) => &mut e.attrs,
        Expr::Paren(e) => &mut e.attrs,
        Expr::Path(e) => &mut e.attrs,
        Expr::Reference(e) => &mut e.attrs,
        Expr::Try(e) => &mut e.attrs,
        Expr::Tuple(e) => &mut e.attrs,
        Expr::Unary(e) => &mut e.attrs,
        Expr::Unsafe(e) => &mut e.attrs,
        Expr::While(e) => &mut e.attrs,
        _ => return None,
    })
}

impl Checker {
    fn report(&mut self, e: syn::Error) {
        match &mut self.errors {
            Some(all) => all.combine(e),
            None => self.errors = Some(e),
        }
    }
}

impl VisitMut for Checker {
    fn visit_stmt_mut(&mut self, stmt: &mut Stmt) {
        if let Some(attrs) = stmt_attrs(stmt)
            && take_mark(attrs)
        {
            return;
        }
        // Nested items (a helper `fn` inside the body) are not orchestrator code by
        // themselves; only calls from the body are.
        if matches!(stmt, Stmt::Item(_)) {
            return;
        }
        visit_mut::visit_stmt_mut(self, stmt);
    }

    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        if let Some(attrs) = expr_attrs(expr)
            && take_mark(attrs)
        {
            return;
        }
        visit_mut::visit_expr_mut(self, expr);
    }

    fn visit_expr_path_mut(&mut self, path: &mut ExprPath) {
        let segments: Vec<String> = path
            .path
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect();
        if let Some(message) = self.check(&segments) {
            self.report(syn::Error::new_spanned(&*path, message));
        }
        visit_mut::visit_expr_path_mut(self, path);
    }

    /// A macro's arguments are tokens, not expressions (`format!`, `json!`, `when_any!`):
    /// the paths in them are checked as written.
    fn visit_macro_mut(&mut self, mac: &mut Macro) {
        // Arguments that parse as expressions (`format!`, `vec!`, `assert!`, ...) are checked
        // like the body; others (`when_any!`'s branches) by the paths in their tokens.
        if let Ok(mut args) = mac.parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated) {
            for arg in &mut args {
                self.visit_expr_mut(arg);
            }
            return;
        }
        let mut paths = Vec::new();
        paths_in(mac.tokens.clone(), &mut paths);
        for (segments, span) in paths {
            if let Some(message) = self.check(&segments) {
                self.report(syn::Error::new(span, message));
            }
        }
    }
}

impl Checker {
    /// The error message for `segments` if a rule matches.
    fn check(&self, segments: &[String]) -> Option<String> {
        if self.allow_all {
            return None;
        }
        let rule = RULES.iter().find(|r| matches(segments, r.suffix))?;
        Some(format!(
            "orchestrator code must be deterministic: `{}` {}; {}. (Replay runs this code \
             again and must see the same values. If this use is safe, mark the statement \
             `#[nondeterministic]`.)",
            segments.join("::"),
            rule.what,
            rule.instead
        ))
    }
}

/// The paths (`a::b::c`) written in a token stream, with the span of their first segment.
fn paths_in(tokens: TokenStream, out: &mut Vec<(Vec<String>, Span)>) {
    let mut current: Option<(Vec<String>, Span)> = None;
    // Colons seen since the last segment: two make a `::`.
    let mut colons = 0;
    let mut after_dot = false;
    for tt in tokens {
        let is_dot = matches!(&tt, TokenTree::Punct(p) if p.as_char() == '.');
        match tt {
            TokenTree::Ident(_) if after_dot => {
                // A field or method (`x.thread_rng`), not a path.
                if let Some(done) = current.take() {
                    out.push(done);
                }
                colons = 0;
            }
            TokenTree::Ident(ident) => {
                match (&mut current, colons) {
                    (Some((segments, _)), 2) => segments.push(ident.to_string()),
                    _ => {
                        if let Some(done) = current.take() {
                            out.push(done);
                        }
                        current = Some((vec![ident.to_string()], ident.span()));
                    }
                }
                colons = 0;
            }
            TokenTree::Punct(p) if p.as_char() == ':' && colons < 2 => colons += 1,
            other => {
                if let Some(done) = current.take() {
                    out.push(done);
                }
                colons = 0;
                if let TokenTree::Group(g) = other {
                    paths_in(g.stream(), out);
                }
            }
        }
        after_dot = is_dot;
    }
    if let Some(done) = current.take() {
        out.push(done);
    }
}

/// Whether `segments` ends with `suffix` (`*` matches one segment). A suffix of one name
/// matches that name alone or at the end of a longer path.
fn matches(segments: &[String], suffix: &[&str]) -> bool {
    if segments.len() < suffix.len() {
        return false;
    }
    if let Some((&"*", head)) = suffix.split_last() {
        // `fs::*`: the named segments, then at least one more.
        return segments
            .windows(head.len() + 1)
            .any(|w| w.iter().zip(head).all(|(s, h)| s == h));
    }
    let tail = &segments[segments.len() - suffix.len()..];
    tail.iter().zip(suffix).all(|(s, p)| s == p)
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn segs(p: &str) -> Vec<String> {
        p.split("::").map(str::to_string).collect()
    }

    #[test]
    fn suffixes_match_whole_segments() {
        assert!(matches(
            &segs("std::time::SystemTime::now"),
            &["SystemTime", "now"]
        ));
        assert!(matches(&segs("SystemTime::now"), &["SystemTime", "now"]));
        assert!(!matches(&segs("now"), &["SystemTime", "now"]));
        assert!(!matches(&segs("MySystemTime::now"), &["SystemTime", "now"]));
        assert!(matches(&segs("tokio::time::sleep"), &["time", "sleep"]));
        assert!(matches(&segs("std::fs::read_to_string"), &["fs", "*"]));
        assert!(matches(&segs("tokio::fs::File::open"), &["fs", "*"]));
        assert!(!matches(&segs("fs"), &["fs", "*"]));
        assert!(!matches(&segs("my_fs_helper"), &["fs", "*"]));
        assert!(matches(&segs("thread_rng"), &["thread_rng"]));
        assert!(matches(&segs("rand::thread_rng"), &["thread_rng"]));
    }
}
