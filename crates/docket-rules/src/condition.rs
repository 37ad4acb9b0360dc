//! Step conditions (`if`): JMESPath expressions, bounded before they reach the parser.
//!
//! The `jmespath` crate parses and evaluates by recursion without a depth limit, so a 3 KB
//! expression such as `!!!…!params` overflows the thread's stack and aborts the whole process (a
//! stack overflow is not a panic, nothing can catch it). Every expression is therefore measured
//! with a scan that does not recurse, and refused when it is too long, nested too deeply or has
//! too many operators, before `jmespath::compile` sees it. Each level of the parser's and the
//! interpreter's recursion consumes a bracket, a prefix operator or an infix operator, so these
//! bounds cap the recursion at `MAX_DEPTH + MAX_OPERATORS` levels: about 1 KiB of stack each in
//! a release build (measured: 128 levels fit in a 256 KiB thread), 8-12 KiB unoptimised.

/// The longest expression accepted, in characters.
pub const MAX_CHARS: usize = 1_024;
/// How deeply brackets (`(`, `[`, `{`) and prefix operators (`!`, `&`) may nest.
pub const MAX_DEPTH: usize = 32;
/// How many operators an expression may have: infix ones (`.`, `|`, `||`, `&&`, comparisons, `,`,
/// `:`) and opening brackets (indexes, projections, filters, lists, calls).
pub const MAX_OPERATORS: usize = 96;

/// Why a condition was refused; the message is written for the pipeline's author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConditionError(String);

/// Checks the bounds, then compiles the expression.
pub fn compile(source: &str) -> Result<jmespath::Expression<'static>, ConditionError> {
    check_bounds(source)?;
    jmespath::compile(source).map_err(|e| ConditionError(format!("not a JMESPath expression: {e}")))
}

/// Measures `source` without parsing it: characters, bracket and prefix-operator nesting, and
/// infix operators, skipping quoted identifiers, raw strings and JSON literals (whose own nesting
/// `serde_json` bounds).
pub fn check_bounds(source: &str) -> Result<(), ConditionError> {
    let chars = source.chars().count();
    if chars > MAX_CHARS {
        return Err(ConditionError(format!(
            "is {chars} characters long; at most {MAX_CHARS} are allowed"
        )));
    }
    // Open brackets, each with the prefix operators that were pending when it opened, so that a
    // closing bracket restores the depth of its opening.
    let mut open: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut operators = 0usize;
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                // Quoted text ends at the next unescaped copy of its quote.
                while let Some(inner) = chars.next() {
                    if inner == '\\' {
                        chars.next();
                    } else if inner == c {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                // Also an operator: each index, projection, filter, list or call adds a level.
                open.push(depth);
                depth += 1;
                operators += 1;
            }
            ')' | ']' | '}' => {
                depth = open.pop().unwrap_or(0);
            }
            '!' if chars.peek() == Some(&'=') => {
                chars.next();
                operators += 1;
            }
            '!' => depth += 1,
            '&' if chars.peek() == Some(&'&') => {
                chars.next();
                operators += 1;
            }
            '&' => depth += 1,
            '|' => {
                if chars.peek() == Some(&'|') {
                    chars.next();
                }
                operators += 1;
            }
            '<' | '>' | '=' => {
                if chars.peek() == Some(&'=') {
                    chars.next();
                }
                operators += 1;
            }
            '.' | ',' | ':' | '?' => operators += 1,
            _ => {}
        }
        deepest = deepest.max(depth);
    }
    if deepest > MAX_DEPTH {
        return Err(ConditionError(format!(
            "nests brackets and prefix operators (! and &) {deepest} levels deep; at most {MAX_DEPTH} are allowed"
        )));
    }
    if operators > MAX_OPERATORS {
        return Err(ConditionError(format!(
            "has {operators} operators; at most {MAX_OPERATORS} are allowed"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A quarter of a Tokio worker's 2 MiB in release builds. Unoptimised frames are about ten
    /// times larger, so debug builds (`cargo test`) get the whole 2 MiB.
    const STACK: usize = if cfg!(debug_assertions) { 2048 } else { 512 } * 1024;

    /// Compiles and evaluates on a thread with a small stack: if the bounds let through an
    /// expression that recursed too deeply, this thread would overflow and abort the test binary.
    fn compile_and_search_on_small_stack(source: String) -> Result<bool, String> {
        std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                let expression = compile(&source).map_err(|e| e.to_string())?;
                let data = json!({"params": {"a": {"a": true}}, "steps": {}, "run": {}});
                expression
                    .search(data)
                    .map(|v| v.is_truthy())
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| e.to_string())?
            .join()
            .map_err(|_| "panicked".to_owned())?
    }

    #[test]
    fn the_reported_bomb_is_refused_before_parsing() {
        let bomb = format!("{}params", "!".repeat(3000));
        let error = compile(&bomb).unwrap_err().to_string();
        assert!(error.contains("at most 1024"), "{error}");
        let short_bomb = format!("{}params", "!".repeat(MAX_DEPTH + 1));
        let error = compile(&short_bomb).unwrap_err().to_string();
        assert!(error.contains("33 levels deep"), "{error}");
        let brackets = format!("{}params{}", "(".repeat(40), ")".repeat(40));
        assert!(
            compile(&brackets)
                .unwrap_err()
                .to_string()
                .contains("40 levels")
        );
    }

    #[test]
    fn ordinary_conditions_compile() {
        for source in [
            "params.enabled",
            "steps.fetch.status == `200` && !params.dry_run",
            "length(steps.fetch.body.items[?state == 'open']) > `0`",
            "contains(['a', 'b'], params.kind) || params.force",
            "{a: params.a, b: [params.b, `{\"x\": [1, 2]}`]}.a",
            "params.\"odd (name]\" != 'it\\'s ( [ {'",
        ] {
            assert!(compile(source).is_ok(), "{source}");
        }
    }

    #[test]
    fn quoted_text_does_not_count() {
        let quoted = format!("params.a == '{}'", "(!".repeat(200));
        assert!(check_bounds(&quoted).is_ok());
        let literal = format!("params.a == `\"{}\"`", "[".repeat(200));
        assert!(check_bounds(&literal).is_ok());
    }

    #[test]
    fn closing_brackets_restore_the_depth_of_their_opening() {
        let prefixes_inside = format!("({}params.a)", "!".repeat(MAX_DEPTH - 1));
        let repeated = std::iter::repeat_n(prefixes_inside.as_str(), 20)
            .collect::<Vec<_>>()
            .join(" || ");
        assert!(check_bounds(&prefixes_inside).is_ok());
        assert!(check_bounds(&repeated).is_ok(), "{repeated}");
    }

    #[test]
    fn the_worst_expressions_within_the_bounds_run_on_a_small_stack() {
        let deepest_prefixes = format!("{}params.a", "!".repeat(MAX_DEPTH));
        let deepest_brackets =
            format!("{}params.a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        let mixed = format!(
            "{}params.a{}",
            "!(".repeat(MAX_DEPTH / 2),
            ")".repeat(MAX_DEPTH / 2)
        );
        let longest_chain = vec!["a"; MAX_OPERATORS + 1].join(".");
        let deepest_and_longest = format!(
            "{}{}",
            "!".repeat(MAX_DEPTH),
            vec!["a"; MAX_OPERATORS + 1].join(".")
        );
        let brackets_around_the_longest = format!(
            "{}{}{}",
            "(".repeat(MAX_DEPTH),
            vec!["a"; MAX_OPERATORS - MAX_DEPTH + 1].join("||"),
            ")".repeat(MAX_DEPTH)
        );
        let longest_or = vec!["a"; MAX_OPERATORS + 1].join("||");
        let projections = format!("params{}", "[*]".repeat(MAX_OPERATORS));
        let lists = format!("{}@{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let too_many_projections = format!("params{}", "[*]".repeat(MAX_OPERATORS + 1));
        assert!(check_bounds(&too_many_projections).is_err());
        for source in [
            deepest_prefixes,
            deepest_brackets,
            mixed,
            longest_chain,
            deepest_and_longest,
            brackets_around_the_longest,
            longest_or,
            projections,
            lists,
        ] {
            assert!(check_bounds(&source).is_ok(), "{source}");
            compile_and_search_on_small_stack(source.clone())
                .unwrap_or_else(|e| panic!("{source}: {e}"));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Pieces of JMESPath glued at random: mostly invalid, sometimes deep.
        fn piece() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "!", "&", "(", ")", "[", "]", "{", "}", "[?", "[*]", "[]", ".", "|", "||", "&&",
                "==", "!=", "<", ">=", ",", ":", "@", "params", "a", "steps", "`1`", "'x'",
                "\"q\"", "length(", "`[[[`", " ",
            ])
        }

        proptest! {
            #[test]
            fn no_expression_crashes_compilation_or_search(
                pieces in prop::collection::vec(piece(), 0..400)
            ) {
                let source = pieces.concat();
                if check_bounds(&source).is_ok() {
                    let outcome = compile_and_search_on_small_stack(source.clone());
                    prop_assert_ne!(outcome, Err("panicked".to_owned()), "{}", source);
                }
            }
        }
    }
}
