//! "What you should see": an output block as a pattern over the real output. Each non-blank
//! line must match a line of the output, in order (the lessons show output trimmed); within a
//! line a run of digits matches any run of digits (unless the block says `numbers=exact`), `...`
//! any text, a run of spaces any run of spaces, and the rest is literal.

use regex::Regex;

/// A compiled output block.
#[derive(Debug)]
pub struct Expected {
    lines: Vec<(String, Regex)>,
}

/// Why an output did not match: the first expected line that no later output line matched.
#[derive(Debug, PartialEq)]
pub struct Mismatch {
    pub expected_line: String,
    /// How many expected lines matched before it.
    pub matched: usize,
}

/// How an output block's digits match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Numbers {
    /// A run of digits matches any run of digits (ports, prices, counts, times).
    #[default]
    Any,
    /// Digits are literal: for a block that waits for a state (`members: 9 (up=9)`,
    /// `unreachable: 0`).
    Exact,
}

impl Expected {
    /// A block whose runs of digits match any digits.
    pub fn new(block: &str) -> Expected {
        Expected::with_numbers(block, Numbers::Any)
    }

    /// A block whose runs of digits match as `numbers` says.
    pub fn with_numbers(block: &str, numbers: Numbers) -> Expected {
        let lines = block
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| (l.to_string(), line_regex(l, numbers)))
            .collect();
        Expected { lines }
    }

    /// Matches the pattern against `output` (escape sequences removed first).
    pub fn check(&self, output: &str) -> Result<(), Mismatch> {
        let output = strip_ansi(output);
        let mut actual = output.lines();
        for (i, (text, re)) in self.lines.iter().enumerate() {
            if !actual.by_ref().any(|line| re.is_match(line)) {
                return Err(Mismatch {
                    expected_line: text.clone(),
                    matched: i,
                });
            }
        }
        Ok(())
    }
}

fn line_regex(line: &str, numbers: Numbers) -> Regex {
    let mut re = String::from(r"^\s*");
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("...") {
            re.push_str(".*?");
            rest = r;
        } else if c.is_ascii_digit() && numbers == Numbers::Any {
            re.push_str(r"\d+");
            rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        } else if c.is_whitespace() {
            re.push_str(r"\s+");
            rest = rest.trim_start();
        } else {
            re.push_str(&regex::escape(&c.to_string()));
            rest = &rest[c.len_utf8()..];
        }
    }
    re.push_str(r"\s*$");
    Regex::new(&re).expect("an escaped line is a valid regex")
}

/// Removes terminal colour and cursor sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_in_order_with_others_between() {
        let e = Expected::new("first\n\n  third  \n");
        assert_eq!(e.check("first\nsecond\nthird\n"), Ok(()));
        assert_eq!(
            e.check("third\nfirst\n"),
            Err(Mismatch {
                expected_line: "third".into(),
                matched: 1
            })
        );
    }

    #[test]
    fn a_line_matches_a_whole_output_line() {
        let e = Expected::new("Up");
        assert!(e.check("Upgrading").is_err());
        assert!(e.check("  Up  ").is_ok());
    }

    #[test]
    fn numbers_vary_but_not_their_place() {
        let e = Expected::new("akka.tcp://AkkaTrader@127.0.0.1:4053 | [lighthouse] | up | 0.1.0 |");
        assert!(
            e.check("akka.tcp://AkkaTrader@10.0.3.17:40531 | [lighthouse] | up | 0.2.0 |")
                .is_ok()
        );
        assert!(
            e.check("akka.tcp://AkkaTrader@127.0.0.1:4053 | [lighthouse] | down | 0.1.0 |")
                .is_err()
        );
        assert!(
            e.check("akka.tcp://AkkaTrader@127.0.0.1:port | [lighthouse] | up | 0.1.0 |")
                .is_err()
        );
    }

    #[test]
    fn exact_numbers_are_literal() {
        let e = Expected::with_numbers("members: 9 (up=9)\nunreachable: 0", Numbers::Exact);
        assert!(e.check("members: 9 (up=9)\nunreachable: 0").is_ok());
        assert!(e.check("members: 9 (up=8)\nunreachable: 0").is_err());
        assert!(e.check("members: 9 (up=9)\nunreachable: 1").is_err());
        assert!(e.check("members: 19 (up=9)\nunreachable: 0").is_err());
        let e = Expected::with_numbers("members: ... (up=9)", Numbers::Exact);
        assert!(e.check("members: 10 (up=9)").is_ok());
    }

    #[test]
    fn dots_match_any_text_and_spaces_any_spaces() {
        let e = Expected::new("trace ... orderBook.place   12 ms");
        assert!(
            e.check("trace 4bf92f3577b34da6a3ce929d0e0e4736 orderBook.place 7 ms")
                .is_ok()
        );
        assert!(e.check("trace orderBook.place 7 ms").is_err());
        let e = Expected::new("price: 101.25");
        assert!(e.check("price: 99.5").is_ok());
        assert!(e.check("price: 99").is_err());
    }

    #[test]
    fn regex_characters_are_literal() {
        let e = Expected::new("a+b (c) [d] $e ^f");
        assert!(e.check("a+b (c) [d] $e ^f").is_ok());
        assert!(e.check("aab (c) [d] $e ^f").is_err());
    }

    #[test]
    fn colours_and_carriage_returns_are_ignored() {
        let e = Expected::new("INFO started");
        assert!(e.check("\u{1b}[32mINFO\u{1b}[0m started\r\n").is_ok());
    }
}
